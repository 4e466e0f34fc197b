"""The export stages as the retrain and export flows run them: ONNX and INT8 for the task's model family, every
variant measured on the test split with the INT8 check, the Triton repository, and what each records in the run's
MLflow run. The Prefect tasks of `tuneline.tasks` call these and publish the tables they return.

Beyond the rest of `tuneline.export`, imports `tuneline.data` (the test targets) and `tuneline.registry` (to record);
never Prefect.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tuneline.config import ExportConfig, GenerationConfig
from tuneline.data.loading import regression_targets
from tuneline.export.common import ExportResult
from tuneline.export.encoder import export_and_quantize
from tuneline.export.generative import export_generative_and_quantize
from tuneline.export.triton import write_triton_repository
from tuneline.export.variants import VariantResult, check_quantized, compare_generative_variants, compare_variants
from tuneline.kinds import kind
from tuneline.published import Table
from tuneline.registry import store as registry


def export_model(model_dir: Path, parity_texts: list[str], calibration_texts: list[str], config: ExportConfig,
                 task_type: str, max_length: int, work_dir: Path, run_id: str) -> ExportResult:
    """ONNX FP32 (parity-checked on `parity_texts`, optimised if configured), then the configured INT8 file; their
    sizes and parity in the MLflow run. Generative models become a `generator/` folder and `generator.int8/`."""
    if kind(task_type).generative:
        result = export_generative_and_quantize(model_dir, work_dir / "onnx", config, max_length,
                                                parity_texts[: config.parity_rows], task_type)
    else:
        result = export_and_quantize(model_dir, work_dir / "onnx", config, max_length,
                                     parity_texts=parity_texts[: config.parity_rows],
                                     calibration_texts=calibration_texts[: config.calibration_rows], task=task_type)
    metrics = {"onnx_bytes": result.onnx_bytes, "parity_max_abs_diff": result.parity.max_abs_diff,
               "parity_max_rel_diff": result.parity.max_rel_diff}
    if result.int8_bytes:
        metrics["int8_bytes"] = result.int8_bytes
    registry.log_metrics(run_id, metrics)
    return result


def compare_exported(model_dir: Path, test: pd.DataFrame, labels: tuple[str, ...], exported: ExportResult,
                     task_type: str, max_length: int, batch_size: int, run_id: str,
                     generation: GenerationConfig | None = None) -> tuple[tuple[VariantResult, ...], Table]:
    """Size, latency, throughput and test metrics of PyTorch FP32, ONNX FP32 and INT8, recorded in the MLflow run;
    returns them and their table. `check_int8` then judges the INT8 variant."""
    if kind(task_type).generative:
        variants = compare_generative_variants(task_type, model_dir, exported.onnx_path, exported.int8_path,
                                               list(test["text"]), list(test["label"]),
                                               generation or GenerationConfig(), max_length, batch_size)
    else:
        targets = list(test["label"]) if kind(task_type).has_classes else list(regression_targets(test))
        variants = compare_variants(task_type, model_dir, exported.onnx_path, exported.int8_path,
                                    exported.quantization, list(test["text"]), targets, labels, max_length, batch_size)
    table = [v.row(task_type, variants[0]) for v in variants]
    registry.log_json(run_id, table, "evaluation/variants.json")
    for variant in variants[1:]:
        key = "int8" if "INT8" in variant.name else "onnx"
        registry.log_metrics(run_id, {f"{key}_test_{name}": value for name, value in variant.metrics.items()}
                             | {f"{key}_latency_ms": variant.latency_ms, f"{key}_rows_per_s": variant.rows_per_second})
    return tuple(variants), Table(
        "export-variants", table, f"Each exported variant on {len(test)} test rows, measured on this machine "
                                  f"(latency: one row; rows/s: batches of {batch_size}, tokenization included)")


def check_int8(variants: tuple[VariantResult, ...], exported: ExportResult, config: ExportConfig, task_type: str,
               run_id: str) -> None:
    """Refuse an INT8 variant that lost too much (raises before registration); the paired test's line (test, rows,
    discordant counts, p-value) goes on record."""
    line = check_quantized(task_type, list(variants), config.max_accuracy_drop, exported.quantization,
                           config.significance)
    registry.set_tags(run_id, {"int8.check": line})


def triton_repository(exported: ExportResult, model_name: str, work_dir: Path) -> Path:
    """The served ONNX file (INT8 when there is one) as a Triton model named like the registered model.

    A generative model's graphs become one Triton model each (`NAME.encoder_model`, `NAME.decoder_model`, ...);
    the client runs the decoding loop, as `tuneline.runtime.generator` does.
    """
    served = exported.int8_onnx_path or exported.onnx_path
    if served.is_dir():
        graphs = {f"{model_name}.{graph.stem}": graph for graph in sorted(served.glob("*.onnx"))}
    else:
        graphs = {model_name: served}
    return write_triton_repository(graphs, work_dir / "triton")
