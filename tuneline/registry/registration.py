"""Registering a version: a retrain's (the lineage tags and model card its verified model carries) and a re-export's
(the source version fetched, the export run opened, the new files registered with the source's lineage). The Prefect
tasks of `tuneline.tasks` and the export flow call these.

Beyond the rest of `tuneline.registry`, imports `tuneline.data` (a split's lineage) and, for types only, the results of
the stages before it; never Prefect.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from tuneline.config import ExportConfig, RetrainConfig
from tuneline.data.splitting import split_lineage
from tuneline.errors import ConfigError
from tuneline.registry import store as registry
from tuneline.registry.model_card import render_model_card
from tuneline.registry.reexport import SourceVersion, fetch_version, reexport_identity, reexport_tags, \
    require_calibration
from tuneline.runs import note_mlflow_run
from tuneline.settings import state_dir

if TYPE_CHECKING:
    from tuneline.data.cleaning import CleanResult
    from tuneline.data.loading import IngestResult
    from tuneline.data.splitting import SplitResult
    from tuneline.evaluation.metrics import ClassificationReport
    from tuneline.export.common import ExportResult
    from tuneline.export.variants import VariantResult
    from tuneline.training.engine import TrainResult
    from tuneline.validation.suite import ValidationReport


def register_version(
    config: RetrainConfig, ingested: IngestResult, validation: ValidationReport, cleaned: CleanResult,
    splits: SplitResult, trained: TrainResult, test_metrics: dict[str, float], exported: ExportResult,
    variants: tuple[VariantResult, ...], run_id: str, classification: ClassificationReport | None = None,
    triton: Path | None = None,
) -> registry.RegisteredVersion:
    """Register the verified model; its tags carry task, data hash, row counts, validation, code version and metrics,
    its description the model card (also the run's `model_card.md`).

    A second call for the same run returns the version the first registered.
    """
    sizes = splits.sizes()
    tags = {
        "task": config.task,
        "data.source": ingested.source,
        "data.hash": ingested.content_hash,
        "rows.raw": ingested.rows,
        "rows.dropped": cleaned.rows_dropped,
        **{f"rows.{name}": size for name, size in sizes.items()},
        **{f"data.hash.{name}": digest for name, digest in splits.hashes.items()},
        **split_lineage(splits, config.split),
        "validation.suite": validation.suite,
        "validation.success": validation.success,
        "validation.pii_policy": config.data.checks.pii,
        "rows.pii_masked": cleaned.masked,
        "code_version": registry.code_version(),
        "base_model": trained.base_model,
        "base_model.hash": trained.base_model_hash,
        "train.method": trained.method,
        "params.trainable": trained.trainable_params,
        "params.total": trained.total_params,
        "labels": ",".join(splits.labels),
        **{f"test.{name}": f"{value:.6f}" for name, value in test_metrics.items()},
        "parity.max_abs_diff": f"{exported.parity.max_abs_diff:.3e}",
        "onnx.bytes": exported.onnx_bytes,
        "onnx.optimized": exported.optimized,
        "quantization": exported.quantization,
    }
    if validation.truncated_share is not None:
        tags["validation.truncated_share"] = f"{validation.truncated_share:.4f}"
    quantized = next((v for v in variants if "INT8" in v.name), None)
    if quantized is not None:
        tags |= {f"int8.test.{name}": f"{value:.6f}" for name, value in quantized.metrics.items()}
        tags |= {"int8.bytes": exported.int8_bytes, "int8.latency_ms": f"{quantized.latency_ms:.3f}"}
    served = exported.int8_onnx_path or exported.onnx_path
    card = render_model_card(
        model_name=config.registry.model_name, task=config.task, labels=splits.labels, base_model=trained.base_model,
        base_model_hash=trained.base_model_hash, data_source=ingested.source, data_hash=ingested.content_hash,
        rows={"raw": ingested.rows, "dropped": cleaned.rows_dropped, **sizes}, validation_suite=validation.suite,
        validation_success=validation.success, test_metrics=test_metrics,
        variants=[v.row(config.task, variants[0]) for v in variants], served_file=served.name,
        code_version=tags["code_version"], device=trained.device, steps=trained.steps,
        max_length=config.train.max_length, method=trained.method, trainable_params=trained.trainable_params,
        total_params=trained.total_params, classification=classification,
    )
    with registry.reaching_server("uploading model_card.md", run_id):
        registry.client().log_text(run_id, card, "model_card.md")
    extras = {}
    if exported.int8_path is not None and exported.int8_onnx_path is None:
        extras["torch_int8"] = exported.int8_path  # model.int8.pt, for serving with PyTorch
    if triton is not None:
        extras["triton"] = triton
    return registry.register_model(
        run_id, config.registry.model_name, trained.model_dir, exported.onnx_path, exported.int8_onnx_path,
        config.train.max_length, tags, description=card, extras=extras, task=config.task,
        generation=config.generation.model_dump(mode="json"),
    )


def fetch_source(name: str, version: str, quantization: str) -> SourceVersion:
    """Download the version's fine-tuned model and the test rows it was scored on (under `<state>/exports`); a static
    re-export of a version without calibration rows is refused, and its download removed."""
    source = fetch_version(name, version, state_dir() / "exports")
    try:
        require_calibration(source, quantization)
    except ConfigError:
        shutil.rmtree(source.folder, ignore_errors=True)
        raise
    return source


def start_reexport_run(source: SourceVersion, settings: ExportConfig, experiment: str, run_name: str) -> str:
    """The MLflow run that records a re-export: the export settings and the source version."""
    return registry.start_run(
        experiment, run_name=run_name,
        params={f"export.{k}": v for k, v in settings.model_dump(mode="json").items()}
        | {"source.version": source.version},
        config_yaml=settings.model_dump_json(indent=2),
        tags={"code_version": registry.code_version(), "exported_from": f"{source.name}/{source.version}",
              "orchestrator": "prefect"},
        on_created=note_mlflow_run,
    )


def register_reexport(source: SourceVersion, exported: ExportResult, variants: tuple[VariantResult, ...],
                      settings: ExportConfig, run_id: str, triton: Path | None) -> registry.RegisteredVersion:
    """A new version of the same model: the source's lineage and test metrics, the new files and their measurements."""
    identity = reexport_identity(source.version, settings)
    tags = reexport_tags(source, exported, variants) | identity
    table = "\n".join(["| " + " | ".join(map(str, row.values())) + " |" for row in
                       [v.row(source.task, variants[0]) for v in variants]])
    description = (source.description.rstrip() + f"\n\n## Re-exported from version {source.version}\n"
                   f"Export settings: `{settings.model_dump_json()}`\n\n{table}\n")
    extras = {"triton": triton} if triton is not None else {}
    if exported.int8_path is not None and exported.int8_onnx_path is None:
        extras["torch_int8"] = exported.int8_path
    return registry.register_model(run_id, source.name, source.model_dir, exported.onnx_path, exported.int8_onnx_path,
                                   source.max_length, tags, description=description, extras=extras, task=source.task,
                                   generation=source.generation.model_dump(mode="json"), same_as=identity)
