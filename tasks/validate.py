"""Stage: check the data against its Great Expectations suite and the text checks (data.checks)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import DataConfig, SplitConfig, TrainConfig
from tuneline.data import IngestResult, label_names
from tuneline.text_checks import length_histogram, load_tokenizer, plot_length_histogram
from tuneline.validation import ValidationReport, raise_for_failures, validate_frame


@task(name="validate", **TRANSIENT_RETRIES)
def validate_data(ingested: IngestResult, config: DataConfig, run_id: str, task: str = "classification",
                  train: TrainConfig | None = None, split: SplitConfig | None = None) -> ValidationReport:
    """Run the task's suite and the text checks; on failure publish the report and raise `DataValidationError`.

    With `train`, token lengths are measured with the real tokenizer of train.base_model against
    train.max_length (a histogram in MLflow and Prefect); with `split`, the group / time column
    and the near-duplicate groups are checked too.
    """
    # Only a classifier has a closed set of labels; regression and generation suites take no parameter.
    allowed = list(label_names(ingested.frame, config.labels)) if task == "classification" else None
    tokenizer = load_tokenizer(train.base_model) if train is not None else None
    report = validate_frame(ingested.frame, config.expectation_suite, allowed, task, config.checks,
                            train.max_length if train is not None else None, tokenizer, split)
    registry.log_json(run_id, report.to_dict(), "validation/report.json")
    tags = {"validation.success": report.success, "validation.suite": report.suite, "validation.pii_policy": config.checks.pii}
    pii = next((o for o in report.outcomes if o.column == "pii_found"), None)
    if pii is not None:
        tags["validation.pii_rows"] = pii.unexpected_count or 0
    if report.truncated_share is not None:
        tags["validation.truncated_share"] = f"{report.truncated_share:.4f}"
        registry.log_metrics(run_id, {"rows_truncated_share": report.truncated_share,
                                      "tokens_p95": float(np.percentile(report.token_lengths, 95))})
        histogram = length_histogram(report.token_lengths, report.max_length)
        create_table_artifact(histogram, key="token-lengths",
                              description=f"Rows per token length; train.max_length = {report.max_length}, "
                                          f"{report.truncated_share:.1%} of rows truncated")
        with tempfile.TemporaryDirectory() as folder:
            plot = plot_length_histogram(report.token_lengths, report.max_length, Path(folder) / "token_lengths.png")
            registry.log_artifact(run_id, plot, "validation")
    registry.set_tags(run_id, tags)
    create_markdown_artifact(report.to_markdown(), key="validation-report", description="Great Expectations result")
    raise_for_failures(report, ingested.source)
    return report
