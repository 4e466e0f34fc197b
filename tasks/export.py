"""Stages: export to ONNX and verify parity, quantize; then measure every variant and check the quantized one.
The export flow's too: find an earlier re-export, fetch the source version, register the new one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.config import ExportConfig, GenerationConfig
from tuneline.export import stage
from tuneline.export.common import ExportResult
from tuneline.export.variants import VariantResult
from tuneline.registry import registration
from tuneline.registry.reexport import SourceVersion, find_reexport


@task(name="export-onnx", **TRANSIENT_RETRIES)
def export_model(model_dir: Path, parity_texts: list[str], calibration_texts: list[str], config: ExportConfig,
                 task_type: str, max_length: int, work_dir: Path, run_id: str) -> ExportResult:
    """ONNX FP32 (parity-checked on validation rows, optimised if configured), then the configured INT8 file.

    Generative models become a `generator/` folder (graphs with past key values) and `generator.int8/`.
    """
    return stage.export_model(model_dir, parity_texts, calibration_texts, config, task_type, max_length, work_dir,
                              run_id)


@task(name="compare-variants", **TRANSIENT_RETRIES)
def compare_exported(model_dir: Path, test: pd.DataFrame, labels: tuple[str, ...], exported: ExportResult,
                     config: ExportConfig, task_type: str, max_length: int, batch_size: int,
                     run_id: str, generation: GenerationConfig | None = None) -> tuple[VariantResult, ...]:
    """Size, latency, throughput and test metrics of PyTorch FP32, ONNX FP32 and INT8; refuse an INT8 that lost too much."""
    variants, table = stage.compare_exported(model_dir, test, labels, exported, task_type, max_length, batch_size,
                                             run_id, generation)
    publish(table)
    stage.check_int8(variants, exported, config, task_type, run_id)  # raises before registration
    return variants


@task(name="find-reexport", **TRANSIENT_RETRIES)
def earlier_reexport(name: str, version: str, settings: ExportConfig) -> tuple[str, str | None]:
    """The source version's number, and the version already re-exported from it with these settings, if any."""
    return find_reexport(name, version, settings)


@task(name="fetch-version", **TRANSIENT_RETRIES)
def fetch_source(name: str, version: str, quantization: str) -> SourceVersion:
    """Download the version's fine-tuned model and the test rows it was scored on."""
    return registration.fetch_source(name, version, quantization)


@task(name="register-reexport", **TRANSIENT_RETRIES)
def register_reexport(source: SourceVersion, exported, variants, settings: ExportConfig, run_id: str, triton):
    """A new version of the same model: the source's lineage and test metrics, the new files and their measurements."""
    return registration.register_reexport(source, exported, variants, settings, run_id, triton)
