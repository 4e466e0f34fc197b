"""Stage: read the data and hash it."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import DataConfig
from tuneline.data import IngestResult, load_dataset


@task(name="ingest", **TRANSIENT_RETRIES)
def ingest_data(config: DataConfig, run_id: str, task: str = "classification") -> IngestResult:
    """Load the configured file into the canonical frame (labels as the task reads them); record its hash and size."""
    result = load_dataset(config.path, config.text_column, config.label_column, config.format, task)
    registry.set_tags(run_id, {"data.source": result.source, "data.hash": result.content_hash})
    registry.log_metrics(run_id, {"rows_raw": result.rows})
    get_run_logger().info("read %d rows from %s (sha256 %s)", result.rows, result.source, result.content_hash[:12])
    return result
