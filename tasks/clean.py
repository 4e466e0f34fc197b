"""Stage: clean the text (and mask PII when data.checks.pii=mask); count and keep every dropped row."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from tuneline.tasks.common import data_stage_cache
from tuneline.registry import store as registry
from tuneline.config import TextChecksConfig
from tuneline.data.cleaning import CleanResult, clean_dataset
from tuneline.data.loading import IngestResult, content_hash


def _clean_key(parameters: dict) -> str:
    checks: TextChecksConfig = parameters.get("checks") or TextChecksConfig()
    # The rows as read, not the file's hash: one file read with another column mapping or label spelling is other data.
    return f"{content_hash(parameters['ingested'].frame)}|{parameters.get('task', 'classification')}|{checks.model_dump_json()}"


@task(name="clean", **data_stage_cache(_clean_key))
def clean_data(ingested: IngestResult, run_id: str, task: str = "classification",
               checks: TextChecksConfig | None = None) -> CleanResult:
    """Strip markup and noise from the input text, drop empty and duplicate rows (per task), mask PII if asked.

    Cached on the rows' hash and data.checks; `record_clean` logs the counts and the dropped rows to each run.
    """
    checks = checks or TextChecksConfig()
    return clean_dataset(ingested.frame, task, pii=checks.pii, pii_kinds=tuple(checks.pii_kinds))


def record_clean(result: CleanResult, run_id: str) -> None:
    """Counts in the MLflow run; every dropped row, with its reason, as `data/dropped_rows.csv`."""
    repeats = int(result.dropped["reason"].str.startswith("duplicate of row").sum()) if result.rows_dropped else 0
    registry.log_metrics(run_id, {"rows_clean": result.rows_out, "rows_dropped": result.rows_dropped,
                                  "rows_dropped_as_duplicates": repeats,
                                  "rows_changed_by_cleaning": result.changed, "rows_pii_masked": result.masked})
    if result.rows_dropped:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "dropped_rows.csv"
            result.dropped.to_csv(path, index=False)
            registry.log_artifact(run_id, path, "data")
    get_run_logger().info(
        "cleaning rewrote %d texts, masked PII in %d and dropped %d of %d rows, %d of them repeats of an earlier row "
        "(kept in MLflow: data/dropped_rows.csv)", result.changed, result.masked, result.rows_dropped, result.rows_in, repeats,
    )
