"""Stage: seeded, stratified train/validation/test split."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import DataConfig, SplitConfig
from tuneline.data import SplitResult, label_names, split_dataset


@task(name="split", **TRANSIENT_RETRIES)
def split_data(cleaned, data: DataConfig, config: SplitConfig, source: str, run_id: str) -> SplitResult:
    """Split the cleaned frame; log sizes and each split's hash (to prove which test set was used)."""
    labels = label_names(cleaned.frame, data.labels)
    result = split_dataset(
        cleaned.frame, labels, config.train_fraction, config.validation_fraction, config.test_fraction,
        config.seed, config.stratify,
    )
    registry.log_metrics(run_id, {f"rows_{name}": size for name, size in result.sizes().items()})
    registry.set_tags(run_id, {"labels": ",".join(labels)} | {f"data.hash.{n}": h for n, h in result.hashes.items()})
    registry.log_datasets(run_id, result.parts(), source)
    with tempfile.TemporaryDirectory() as folder:
        # The gate re-scores a champion on exactly these rows, long after this run.
        path = Path(folder) / "test.csv"
        result.test[["row", "text", "label"]].to_csv(path, index=False)
        registry.log_artifact(run_id, path, "data")
    return result
