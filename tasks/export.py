"""Stage: export to ONNX, verify parity with PyTorch, quantize to INT8."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import ExportConfig
from tuneline.data import SplitResult
from tuneline.export import ExportResult, export_and_quantize
from tuneline.training import TrainResult


@task(name="export-onnx", **TRANSIENT_RETRIES)
def export_model(trained: TrainResult, splits: SplitResult, config: ExportConfig, max_length: int, work_dir: Path, run_id: str) -> ExportResult:
    """ONNX FP32 (parity-checked on validation rows) and, when configured, INT8."""
    texts = list(splits.validation["text"][: config.parity_rows])
    result = export_and_quantize(
        trained.model_dir, work_dir / "onnx", texts, max_length, config.opset, config.parity_atol, config.quantization,
        config.per_channel,
    )
    metrics = {"onnx_bytes": result.onnx_bytes, "parity_max_abs_diff": result.parity.max_abs_diff,
               "parity_max_rel_diff": result.parity.max_rel_diff}
    if result.int8_bytes:
        metrics["int8_bytes"] = result.int8_bytes
    registry.log_metrics(run_id, metrics)
    return result
