"""Stage: log what the (possibly cached) data stages produced to this run's MLflow run and Prefect artifacts."""

from __future__ import annotations

from prefect import task

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.tasks.ingest import record_ingest
from tuneline.config import RetrainConfig
from tuneline.data import stages
from tuneline.data.cleaning import CleanResult
from tuneline.data.loading import IngestResult
from tuneline.data.splitting import SplitResult
from tuneline.validation import stage as validation_stage
from tuneline.validation.suite import ValidationReport


@task(name="record-data", **TRANSIENT_RETRIES)
def record_data(ingested: IngestResult, validation: ValidationReport, cleaned: CleanResult, splits: SplitResult,
                config: RetrainConfig, run_id: str) -> None:
    """Every run's lineage, whether its data stages ran or came from the cache: hashes, row counts, the
    validation report, dropped rows, the test and calibration rows the gate and a re-export read later."""
    record_ingest(ingested, run_id)
    publish(*validation_stage.record_validation(validation, config.data, run_id))
    stages.record_clean(cleaned, run_id)
    publish(stages.record_split(splits, config.split, ingested.source, run_id, config.task))
