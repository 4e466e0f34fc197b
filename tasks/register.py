"""Stage: one registry version carrying the model, both ONNX files and the run's lineage."""

from __future__ import annotations

from prefect import task

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import RetrainConfig
from tuneline.data import CleanResult, IngestResult, SplitResult
from tuneline.evaluation import ClassificationReport
from tuneline.export import ExportResult
from tuneline.model_card import render_model_card
from tuneline.training import TrainResult
from tuneline.validation import ValidationReport


@task(name="register", **TRANSIENT_RETRIES)
def register_version(
    config: RetrainConfig, ingested: IngestResult, validation: ValidationReport, cleaned: CleanResult,
    splits: SplitResult, trained: TrainResult, torch_report: ClassificationReport, exported: ExportResult,
    int8_report: ClassificationReport | None, run_id: str,
) -> registry.RegisteredVersion:
    """Register the verified model; its tags carry data hash, row counts, validation, code version and metrics."""
    sizes = splits.sizes()
    tags = {
        "data.source": ingested.source,
        "data.hash": ingested.content_hash,
        "rows.raw": ingested.rows,
        "rows.dropped": cleaned.rows_dropped,
        **{f"rows.{name}": size for name, size in sizes.items()},
        **{f"data.hash.{name}": digest for name, digest in splits.hashes.items()},
        "validation.suite": validation.suite,
        "validation.success": validation.success,
        "code_version": registry.code_version(),
        "base_model": trained.base_model,
        "base_model.hash": trained.base_model_hash,
        "train.method": trained.method,
        "params.trainable": trained.trainable_params,
        "params.total": trained.total_params,
        "labels": ",".join(splits.labels),
        "test.accuracy": f"{torch_report.accuracy:.6f}",
        "test.macro_f1": f"{torch_report.macro_f1:.6f}",
        "parity.max_abs_diff": f"{exported.parity.max_abs_diff:.3e}",
        "onnx.bytes": exported.onnx_bytes,
    }
    if int8_report is not None:
        tags |= {"int8.test.accuracy": f"{int8_report.accuracy:.6f}", "int8.test.macro_f1": f"{int8_report.macro_f1:.6f}",
                 "int8.bytes": exported.int8_bytes}
    card = render_model_card(
        model_name=config.registry.model_name, base_model=trained.base_model, base_model_hash=trained.base_model_hash,
        data_source=ingested.source, data_hash=ingested.content_hash,
        rows={"raw": ingested.rows, "dropped": cleaned.rows_dropped, **sizes},
        validation_suite=validation.suite, validation_success=validation.success, torch_report=torch_report,
        int8_report=int8_report, code_version=tags["code_version"], device=trained.device, steps=trained.steps,
        max_length=config.train.max_length, method=trained.method, trainable_params=trained.trainable_params,
        total_params=trained.total_params,
    )
    registry.client().log_text(run_id, card, "model_card.md")
    return registry.register_model(
        run_id, config.registry.model_name, trained.model_dir, exported.onnx_path, exported.int8_path,
        config.train.max_length, tags, description=card,
    )
