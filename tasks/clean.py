"""Stage: clean the text (and mask PII when data.checks.pii=mask); count and keep every dropped row."""

from __future__ import annotations

from prefect import task

from tuneline.tasks.common import data_stage_cache
from tuneline.config import TextChecksConfig
from tuneline.data import stages
from tuneline.data.cleaning import CleanResult
from tuneline.data.loading import IngestResult


@task(name="clean", **data_stage_cache(stages.clean_key))
def clean_data(ingested: IngestResult, run_id: str, task: str = "classification",
               checks: TextChecksConfig | None = None) -> CleanResult:
    """Strip markup and noise from the input text, drop empty and duplicate rows (per task), mask PII if asked.

    Cached on the rows' hash and data.checks; `record_clean` logs the counts and the dropped rows to each run.
    """
    return stages.clean(ingested, task, checks)
