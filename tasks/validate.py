"""Stage: check the data against its Great Expectations suite."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import DataConfig
from tuneline.data import IngestResult, label_names
from tuneline.validation import ValidationReport, raise_for_failures, validate_frame


@task(name="validate", **TRANSIENT_RETRIES)
def validate_data(ingested: IngestResult, config: DataConfig, run_id: str, task: str = "classification") -> ValidationReport:
    """Run the task's suite; on failure publish the report and raise `DataValidationError`."""
    # Only a classifier has a closed set of labels; regression and generation suites take no parameter.
    allowed = list(label_names(ingested.frame, config.labels)) if task == "classification" else None
    report = validate_frame(ingested.frame, config.expectation_suite, allowed, task)
    registry.log_json(run_id, report.to_dict(), "validation/report.json")
    registry.set_tags(run_id, {"validation.success": report.success, "validation.suite": report.suite})
    create_markdown_artifact(report.to_markdown(), key="validation-report", description="Great Expectations result")
    raise_for_failures(report, ingested.source)
    return report
