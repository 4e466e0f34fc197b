"""Stage: profile the batch and compare it with the data the champion was trained on (data.drift)."""

from __future__ import annotations

from prefect import task

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.config import DataConfig
from tuneline.data.loading import IngestResult
from tuneline.validation import stage
from tuneline.validation.drift import DriftReport, raise_for_drift


@task(name="check-drift", **TRANSIENT_RETRIES)
def check_drift(ingested: IngestResult, config: DataConfig, model_name: str, run_id: str,
                task: str = "classification") -> DriftReport:
    """Log the batch's profile, compare it with the reference, publish the report; `DataDriftError` beyond the bounds.

    Never cached (the champion moves between runs); the verdict is deterministic, so only a
    transient fault reading MLflow is retried.
    """
    report, published = stage.check_drift(ingested, config, model_name, run_id, task)
    publish(published)
    raise_for_drift(report, ingested.source)
    return report
