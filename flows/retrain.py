"""The retrain flow: validated data in, a registered, exported, aliased model out.

Run it with `tuneline retrain [--config file.yaml] [key=value ...]`,
`python -m flows.retrain [...]`, or from a Prefect deployment.
"""

from __future__ import annotations

import shutil
import sys

import flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow
from prefect.runtime import flow_run

from tasks.clean import clean_data
from tasks.evaluate import evaluate_model, evaluate_onnx
from tasks.export import export_model
from tasks.ingest import ingest_data
from tasks.promote import gate_and_promote
from tasks.register import register_version
from tasks.report import publish_summary
from tasks.split import split_data
from tasks.tracking import finish_tracking, start_tracking
from tasks.train import cross_validate_model, fine_tune_model
from tasks.validate import validate_data
from tuneline.config import RetrainConfig
from tuneline.errors import ConfigError
from tuneline.settings import state_dir, tracking_uri
from tuneline.summary import RetrainSummary


@flow(name="retrain", log_prints=True)
def retrain(config: RetrainConfig = RetrainConfig()) -> RetrainSummary:
    """Ingest, validate, clean, split, fine-tune, evaluate, export, register, then gate against the champion."""
    if config.task != "classification":
        # The engine trains every task (tuneline.training.fine_tune, tuneline.generation); the evaluate, export
        # and gate stages of this flow score classifiers only until export for the other tasks lands (issue 4).
        raise ConfigError(f"task {config.task}: the retrain flow runs task classification so far; "
                          "train other tasks with tuneline.training.fine_tune")
    run_id = start_tracking(config, run_name=flow_run.get_name() or "retrain")
    work_dir = state_dir() / "runs" / run_id
    try:
        ingested = ingest_data(config.data, run_id)
        validation = validate_data(ingested, config.data, run_id)
        cleaned = clean_data(ingested, run_id)
        splits = split_data(cleaned, config.data, config.split, ingested.source, run_id)
        if config.train.cv_folds:
            cross_validate_model(splits, config.train, config.task, work_dir, run_id)
        trained = fine_tune_model(splits, config.train, config.task, work_dir, run_id)
        torch_report = evaluate_model(
            trained, splits, config.evaluation, config.train.max_length, config.train.eval_batch_size, work_dir, run_id
        )
        exported = export_model(trained, splits, config.export, config.train.max_length, work_dir, run_id)
        int8_report = (
            evaluate_onnx(exported.int8_path, trained, splits, torch_report, config.train.max_length, config.train.eval_batch_size, run_id)
            if exported.int8_path
            else None
        )
        version = register_version(
            config, ingested, validation, cleaned, splits, trained, torch_report, exported, int8_report, run_id
        )
        gate = gate_and_promote(version, splits, torch_report, int8_report, config)
    except BaseException as error:
        finish_tracking(run_id, error)
        raise
    finish_tracking(run_id)
    # Everything worth keeping now lives in MLflow; the scratch copies are ~200 MB a run.
    shutil.rmtree(work_dir, ignore_errors=True)
    summary = RetrainSummary(
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
        torch_metrics={"accuracy": torch_report.accuracy, "macro_f1": torch_report.macro_f1},
        int8_metrics={"accuracy": int8_report.accuracy, "macro_f1": int8_report.macro_f1} if int8_report else None,
        onnx_bytes=exported.onnx_bytes,
        int8_bytes=exported.int8_bytes,
        parity_max_abs_diff=exported.parity.max_abs_diff,
        parity_atol=config.export.parity_atol,
        train_seconds=trained.seconds,
        device=trained.device,
    )
    publish_summary(summary)
    return summary


if __name__ == "__main__":
    from tuneline.cli import app

    sys.exit(app(["retrain", *sys.argv[1:]]))
