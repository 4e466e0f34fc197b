"""Stage: one registry version carrying the model, its exported files and the run's lineage."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.registry import store as registry
from tuneline.config import RetrainConfig
from tuneline.data.cleaning import CleanResult
from tuneline.data.loading import IngestResult
from tuneline.data.splitting import SplitResult, split_lineage
from tuneline.evaluation.metrics import ClassificationReport
from tuneline.export.common import ExportResult
from tuneline.registry.model_card import render_model_card
from tuneline.training.engine import TrainResult
from tuneline.validation.suite import ValidationReport
from tuneline.export.variants import VariantResult


@task(name="register", **TRANSIENT_RETRIES)
def register_version(
    config: RetrainConfig, ingested: IngestResult, validation: ValidationReport, cleaned: CleanResult,
    splits: SplitResult, trained: TrainResult, test_metrics: dict[str, float], exported: ExportResult,
    variants: tuple[VariantResult, ...], run_id: str, classification: ClassificationReport | None = None,
    triton: Path | None = None,
) -> registry.RegisteredVersion:
    """Register the verified model; its tags carry task, data hash, row counts, validation, code version and metrics.

    A retry (or a second call for the same run) returns the version the first attempt registered.
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
        code_version=tags["code_version"], device=trained.device, steps=trained.steps, max_length=config.train.max_length,
        method=trained.method, trainable_params=trained.trainable_params, total_params=trained.total_params,
        classification=classification,
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
