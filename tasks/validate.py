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
def validate_data(ingested: IngestResult, config: DataConfig, run_id: str) -> ValidationReport:
    """Run the suite; on failure publish the report and raise `DataValidationError`."""
    allowed = list(label_names(ingested.frame, config.labels))
    report = validate_frame(ingested.frame, config.expectation_suite, allowed)
    registry.log_json(run_id, report.to_dict(), "validation/report.json")
    registry.set_tags(run_id, {"validation.success": report.success, "validation.suite": report.suite})
    create_markdown_artifact(report.to_markdown(), key="validation-report", description="Great Expectations result")
    raise_for_failures(report, ingested.source)
    return report
