"""Stage: seeded train/validation/test split (random, by group or by time) with no near-duplicate across splits."""

from __future__ import annotations

from prefect import task

from tuneline.tasks.common import data_stage_cache, publish
from tuneline.config import DataConfig, SplitConfig
from tuneline.data import stages
from tuneline.data.splitting import SplitResult
from tuneline.validation.suite import raise_for_failures


@task(name="split", **data_stage_cache(stages.split_key))
def split_data(
    cleaned, data: DataConfig, config: SplitConfig, source: str, run_id: str, task: str = "classification"
) -> SplitResult:
    """Split the cleaned frame and check labels per split; a failed check publishes its report and stops the flow.

    Cached on the cleaned data's hash and the split settings; `record_split` logs sizes, hashes, lineage
    and the test and calibration rows to each run.
    """
    result = stages.split(cleaned, data, config, source, task)
    if not result.checks.success:
        publish(stages.record_split_checks(result.checks, run_id))
        raise_for_failures(result.checks, source)
    return result
