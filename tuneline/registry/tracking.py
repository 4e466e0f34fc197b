"""The MLflow run of one retrain: opened with the resolved config, summarised at the end, closed FINISHED or FAILED.
The Prefect tasks of `tuneline.tasks` call these and publish what they return.

Beyond the rest of `tuneline.registry`, imports `tuneline.runs` (the run's record on the state folder) and
`tuneline.summary`, and for types only the results of the stages before it; never Prefect.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tuneline.config import RetrainConfig
from tuneline.published import Link
from tuneline.registry import store as registry
from tuneline.runs import note_mlflow_run
from tuneline.settings import public_tracking_uri, tracking_uri
from tuneline.summary import RetrainSummary

if TYPE_CHECKING:
    from tuneline.data.cleaning import CleanResult
    from tuneline.data.loading import IngestResult
    from tuneline.data.splitting import SplitResult
    from tuneline.export.common import ExportResult
    from tuneline.export.variants import VariantResult
    from tuneline.promotion.gate import GateResult
    from tuneline.training.engine import TrainResult

log = logging.getLogger(__name__)


def start_tracking(config: RetrainConfig, run_name: str) -> tuple[str, Link | None]:
    """Create the MLflow run with the resolved config; return its id and, on a tracking server, a link to it."""
    run_id = registry.start_run(
        config.registry.experiment,
        run_name=run_name,
        params=config.flat(),
        config_yaml=config.to_yaml(),
        tags={"code_version": registry.code_version(), "base_model": config.train.base_model,
              "orchestrator": "prefect"},
        on_created=note_mlflow_run,
    )
    uri = public_tracking_uri()  # a link anyone with the Prefect UI can read: no credentials in it
    if not uri.startswith("http"):
        return run_id, None
    experiment = registry.ensure_experiment(config.registry.experiment)
    return run_id, Link(f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}", "MLflow run")


def finish_tracking(run_id: str, error: BaseException | None = None) -> None:
    """Mark the MLflow run FINISHED, or FAILED with the error that stopped the flow.

    With an error, a failure here (a server that does not answer) is logged, not raised: the flow's own error is the
    one to report.
    """
    if error is None:
        registry.finish_run(run_id)
        return
    try:
        registry.finish_run(run_id, failed=True, error=f"{type(error).__name__}: {error}")
    except Exception as exc:  # whatever went wrong here, the flow's own error is the one to report
        log.warning("could not mark MLflow run %s FAILED (%s: %s); the flow's error follows", run_id,
                    type(exc).__name__, exc)


def retrain_summary(config: RetrainConfig, run_id: str, version: registry.RegisteredVersion, gate: GateResult,
                    ingested: IngestResult, cleaned: CleanResult, splits: SplitResult, trained: TrainResult,
                    test_metrics: dict[str, float], exported: ExportResult,
                    variants: tuple[VariantResult, ...]) -> RetrainSummary:
    """What a retrain ends with: version and alias, data, metrics of each variant, sizes, parity and training time."""
    return RetrainSummary(
        model_name=version.name,
        version=version.version,
        alias=gate.alias,
        gate_reasons=gate.decision.reasons,
        run_id=run_id,
        model_uri=version.model_uri,
        tracking_uri=tracking_uri(),
        data_source=ingested.source,
        data_hash=ingested.content_hash,
        rows={"raw": ingested.rows, "clean": cleaned.rows_out, "dropped": cleaned.rows_dropped, **splits.sizes()},
        task=config.task,
        torch_metrics=test_metrics,
        int8_metrics=next((v.metrics for v in variants if "INT8" in v.name), None),
        variants=[v.row(config.task, variants[0]) for v in variants],
        onnx_bytes=exported.onnx_bytes,
        int8_bytes=exported.int8_bytes,
        parity_max_abs_diff=exported.parity.max_abs_diff,
        parity_atol=config.export.parity_atol,
        train_seconds=trained.seconds,
        device=trained.device,
    )


def log_summary(summary: RetrainSummary) -> None:
    """The summary as the run's `summary.md`."""
    registry.client().log_text(summary.run_id, summary.to_markdown(), "summary.md")
