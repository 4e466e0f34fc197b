"""Stage: check the data against its Great Expectations suite and the text checks (data.checks)."""

from __future__ import annotations

from prefect import task

from tuneline.tasks.common import data_stage_cache, publish
from tuneline.config import DataConfig, SplitConfig, TrainConfig
from tuneline.data.loading import IngestResult
from tuneline.validation import stage
from tuneline.validation.suite import ValidationReport, raise_for_failures


@task(name="validate", **data_stage_cache(stage.validate_key))
def validate_data(ingested: IngestResult, config: DataConfig, run_id: str, task: str = "classification",
                  train: TrainConfig | None = None, split: SplitConfig | None = None) -> ValidationReport:
    """Run the task's suite and the text checks; on failure publish the report and raise `DataValidationError`.

    With `train`, token lengths are measured with the real tokenizer of train.base_model against
    train.max_length (a histogram in MLflow and Prefect); with `split`, the group / time column
    and the near-duplicate groups are checked too. Cached on the data's hash, the suite and the
    settings; a passing report is logged to each run by `record_validation`.
    """
    report = stage.validate(ingested, config, task, train, split)
    if not report.success:  # a failure is never cached: publish it here, where the flow stops
        publish(*stage.record_validation(report, config, run_id))
        raise_for_failures(report, ingested.source)
    return report
