"""Stage: fine-tune the base model (and, when configured, cross-validate first)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.config import TrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.training import stage
from tuneline.training.engine import TrainResult


@task(name="fine-tune", **TRANSIENT_RETRIES)
def fine_tune_model(splits: SplitResult, config: TrainConfig, task_type: str, work_dir: Path, run_id: str) -> TrainResult:
    """Fine-tune on the train split, streaming loss, learning rate and validation metrics to the MLflow run.

    Checkpoints (train.save_steps) go to a folder named after the training job, not the run (see
    tuneline.training.checkpoints): a retry of this task and a re-run of the flow after the process was killed both resume
    from the latest one, and a re-run after a later stage failed takes the finished model. A run found still
    RUNNING there (its process was killed) is marked KILLED. The flow deletes the folder once the run succeeded.
    """
    return stage.fine_tune_model(splits, config, task_type, work_dir, run_id)


@task(name="cross-validate", **TRANSIENT_RETRIES)
def cross_validate_model(splits: SplitResult, config: TrainConfig, task_type: str, work_dir: Path, run_id: str) -> dict:
    """k-fold cross-validation on train + validation: the spread says how much one split's number can be trusted."""
    outcome, table = stage.cross_validate_model(splits, config, task_type, work_dir, run_id)
    publish(table)
    return outcome
