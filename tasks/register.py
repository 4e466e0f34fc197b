"""Stage: one registry version carrying the model, its exported files and the run's lineage."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.registry import registration
from tuneline.registry import store as registry
from tuneline.config import RetrainConfig
from tuneline.data.cleaning import CleanResult
from tuneline.data.loading import IngestResult
from tuneline.data.splitting import SplitResult
from tuneline.evaluation.metrics import ClassificationReport
from tuneline.export.common import ExportResult
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
    return registration.register_version(config, ingested, validation, cleaned, splits, trained, test_metrics,
                                         exported, variants, run_id, classification, triton)
