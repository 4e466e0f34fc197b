"""Stage: check the data against its Great Expectations suite and the text checks (data.checks)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tuneline.kinds import kind
from tuneline.tasks.common import data_stage_cache
from tuneline.registry import store as registry
from tuneline.config import DataConfig, SplitConfig, TrainConfig
from tuneline.data.loading import IngestResult
from tuneline.data.splitting import label_names
from tuneline.validation.lengths import length_histogram, load_tokenizer, plot_length_histogram
from tuneline.errors import ConfigError
from tuneline.validation.suite import ValidationReport, raise_for_failures, resolve_suite_path, validate_frame


# What the checks read of split: a new seed or new fractions leave a validation valid.
_SPLIT_SETTINGS_CHECKED = {"strategy", "group_column", "time_column", "near_duplicates", "near_duplicate_threshold",
                           "near_duplicate_ngram"}


def _validate_key(parameters: dict) -> str | None:
    """The data's hash, the suite file's bytes and every setting the checks read."""
    ingested: IngestResult = parameters["ingested"]
    config: DataConfig = parameters["config"]
    train: TrainConfig | None = parameters.get("train")
    split: SplitConfig | None = parameters.get("split")
    try:
        suite = hashlib.sha256(resolve_suite_path(config.expectation_suite).read_bytes()).hexdigest()
    except (OSError, ConfigError):
        return None  # the task itself says what is wrong with the suite
    return "|".join([
        ingested.content_hash, suite, parameters.get("task", "classification"),
        config.model_dump_json(exclude={"drift", "cache"}),
        "" if train is None else train.model_dump_json(include={"base_model", "max_length"}),
        "" if split is None else split.model_dump_json(include=_SPLIT_SETTINGS_CHECKED),
    ])


@task(name="validate", **data_stage_cache(_validate_key))
def validate_data(ingested: IngestResult, config: DataConfig, run_id: str, task: str = "classification",
                  train: TrainConfig | None = None, split: SplitConfig | None = None) -> ValidationReport:
    """Run the task's suite and the text checks; on failure publish the report and raise `DataValidationError`.

    With `train`, token lengths are measured with the real tokenizer of train.base_model against
    train.max_length (a histogram in MLflow and Prefect); with `split`, the group / time column
    and the near-duplicate groups are checked too. Cached on the data's hash, the suite and the
    settings; a passing report is logged to each run by `record_validation`.
    """
    # Only a classifier has a closed set of labels; regression and generation suites take no parameter.
    allowed = list(label_names(ingested.frame, config.labels)) if kind(task).has_classes else None
    tokenizer = load_tokenizer(train.base_model) if train is not None else None
    report = validate_frame(ingested.frame, config.expectation_suite, allowed, task, config.checks,
                            train.max_length if train is not None else None, tokenizer, split, data=config)
    if not report.success:  # a failure is never cached: publish it here, where the flow stops
        record_validation(report, config, run_id)
        raise_for_failures(report, ingested.source)
    return report


def record_validation(report: ValidationReport, config: DataConfig, run_id: str) -> None:
    """The report in the MLflow run (JSON, tags, token-length histogram) and as Prefect artifacts."""
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
