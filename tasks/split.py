"""Stage: seeded train/validation/test split, stratified as the task allows."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import DataConfig, SplitConfig
from tuneline.data import SplitResult, label_names, split_dataset


CALIBRATION_ROWS = 1000  # training rows kept with the run for re-export; export.calibration_rows picks from them


@task(name="split", **TRANSIENT_RETRIES)
def split_data(
    cleaned, data: DataConfig, config: SplitConfig, source: str, run_id: str, task: str = "classification"
) -> SplitResult:
    """Split the cleaned frame; log sizes and each split's hash (to prove which test set was used)."""
    labels = label_names(cleaned.frame, data.labels) if task == "classification" else ()
    result = split_dataset(
        cleaned.frame, labels, config.train_fraction, config.validation_fraction, config.test_fraction,
        config.seed, config.stratify, task,
    )
    registry.log_metrics(run_id, {f"rows_{name}": size for name, size in result.sizes().items()})
    tags = {f"data.hash.{n}": h for n, h in result.hashes.items()}
    if task == "classification":
        tags["labels"] = ",".join(labels)
    registry.set_tags(run_id, tags)
    registry.log_datasets(run_id, result.parts(), source)
    with tempfile.TemporaryDirectory() as folder:
        # The gate re-scores a champion on exactly these rows, long after this run; a later re-export
        # (the export flow) calibrates static INT8 on the training rows.
        result.test[["row", "text", "label"]].to_csv(Path(folder) / "test.csv", index=False)
        result.train[["text"]].head(CALIBRATION_ROWS).to_csv(Path(folder) / "calibration.csv", index=False)
        for name in ("test.csv", "calibration.csv"):
            registry.log_artifact(run_id, Path(folder) / name, "data")
    return result
