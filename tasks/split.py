"""Stage: seeded train/validation/test split (random, by group or by time) with no near-duplicate across splits."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from tuneline.kinds import kind
from tuneline.tasks.common import data_stage_cache
from tuneline.registry import store as registry
from tuneline.config import DataConfig, SplitConfig
from tuneline.data.splitting import SplitResult, label_names, split_dataset, split_lineage
from tuneline.data.loading import content_hash
from tuneline.errors import SplitError
from tuneline.promotion.gate import TRAINED_ON_ARTIFACT, trained_on_keys
from tuneline.validation.suite import check_splits, raise_for_failures


CALIBRATION_ROWS = 1000  # training rows kept with the run for re-export; export.calibration_rows picks from them


def _split_key(parameters: dict) -> str:
    data: DataConfig = parameters["data"]
    return "|".join([content_hash(parameters["cleaned"].frame), parameters.get("task", "classification"),
                     parameters["source"], data.model_dump_json(include={"labels", "checks"}),
                     parameters["config"].model_dump_json()])


@task(name="split", **data_stage_cache(_split_key))
def split_data(
    cleaned, data: DataConfig, config: SplitConfig, source: str, run_id: str, task: str = "classification"
) -> SplitResult:
    """Split the cleaned frame and check labels per split; a failed check publishes its report and stops the flow.

    Cached on the cleaned data's hash and the split settings; `record_split` logs sizes, hashes, lineage
    and the test and calibration rows to each run.
    """
    labels = label_names(cleaned.frame, data.labels) if kind(task).has_classes else ()
    result = split_dataset(
        cleaned.frame, labels, config.train_fraction, config.validation_fraction, config.test_fraction,
        config.seed, config.stratify, task, strategy=config.strategy, group_column=config.group_column,
        time_column=config.time_column, near_duplicates=config.near_duplicates,
        near_duplicate_threshold=config.near_duplicate_threshold, near_duplicate_ngram=config.near_duplicate_ngram,
        source=source,
    )
    report = check_splits(result, data.checks, task, config.near_duplicates, config)
    if not report.success:
        _publish_checks(report, run_id)
        raise_for_failures(report, source)
    if config.expected_test_hash and result.hashes["test"] != config.expected_test_hash:
        raise SplitError(f"the test split of {source} has sha256 {result.hashes['test']}, not split.expected_test_hash "
                         f"{config.expected_test_hash}: the data, the cleaning or the split settings differ from the run "
                         "that made that test set")
    return replace(result, checks=report)  # cached with the split: record_split logs it without checking again


def _publish_checks(report, run_id: str) -> None:
    registry.log_json(run_id, report.to_dict(), "validation/split_checks.json")
    create_markdown_artifact(report.to_markdown(), key="split-checks", description="Labels per split, near-duplicates")


def record_split(result: SplitResult, config: SplitConfig, source: str, run_id: str,
                 task: str = "classification") -> None:
    """Sizes, each split's hash and how it was split (lineage), the test and calibration rows, the split checks."""
    registry.log_metrics(run_id, {**{f"rows_{name}": size for name, size in result.sizes().items()},
                                  "rows_dropped_by_split": result.rows_dropped,
                                  "near_duplicate_groups": result.near_duplicate_groups})
    tags = {f"data.hash.{n}": h for n, h in result.hashes.items()} | split_lineage(result, config)
    if kind(task).has_classes:
        tags["labels"] = ",".join(result.labels)
    registry.set_tags(run_id, tags)
    registry.log_datasets(run_id, result.parts(), source)
    with tempfile.TemporaryDirectory() as folder:
        # The gate re-scores a champion on exactly these rows, long after this run, and leaves out of a later
        # candidate's test rows the ones this model trained on; a later re-export (the export flow) calibrates
        # static INT8 on the training rows.
        result.test[["row", "text", "label"]].to_csv(Path(folder) / "test.csv", index=False)
        trained_on = trained_on_keys([*result.train["text"], *result.validation["text"]])
        (Path(folder) / Path(TRAINED_ON_ARTIFACT).name).write_text("".join(f"{key}\n" for key in trained_on))
        result.train[["text"]].head(CALIBRATION_ROWS).to_csv(Path(folder) / "calibration.csv", index=False)
        names = ["test.csv", Path(TRAINED_ON_ARTIFACT).name, "calibration.csv"]
        if result.dropped is not None:
            result.dropped.to_csv(Path(folder) / "split_dropped_rows.csv", index=False)
            names.append("split_dropped_rows.csv")
        for name in names:
            registry.log_artifact(run_id, Path(folder) / name, "data")
    _publish_checks(result.checks, run_id)
    get_run_logger().info("split %s by %s: %s; %d near-duplicate groups kept together, %d rows removed",
                          source, config.strategy, result.sizes(), result.near_duplicate_groups, result.rows_dropped)
