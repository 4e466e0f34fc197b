"""Stage: fine-tune the base model."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import TrainConfig
from tuneline.data import SplitResult
from tuneline.training import TrainResult, fine_tune

# Trainer log keys -> the metric names the MLflow run shows.
_METRIC_NAMES = {"loss": "train_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm",
                 "eval_loss": "validation_loss", "eval_accuracy": "validation_accuracy"}


@task(name="fine-tune", **TRANSIENT_RETRIES)
def fine_tune_model(splits: SplitResult, config: TrainConfig, work_dir: Path, run_id: str) -> TrainResult:
    """Fine-tune on the train split, streaming the loss curve to the MLflow run."""

    def forward(logs: dict[str, float], step: int) -> None:
        metrics = {_METRIC_NAMES[k]: v for k, v in logs.items() if k in _METRIC_NAMES}
        if metrics:
            registry.log_metrics(run_id, metrics, step=step)

    result = fine_tune(splits, config, work_dir, on_log=forward)
    registry.log_metrics(run_id, {"train_seconds": result.seconds, "train_steps": result.steps,
                                  "mean_train_loss": result.train_loss,
                                  "final_validation_accuracy": result.validation_accuracy})
    registry.set_tags(run_id, {"device": result.device, "base_model_source": result.base_model_source})
    return result
