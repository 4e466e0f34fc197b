"""Stage: fine-tune the base model (and, when configured, cross-validate first)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import TrainConfig
from tuneline.data import SplitResult
from tuneline.distributed import fine_tune_parallel, process_count
from tuneline.training import TrainResult, cross_validate, fine_tune, mlflow_logger, plot_curves


@task(name="fine-tune", **TRANSIENT_RETRIES)
def fine_tune_model(splits: SplitResult, config: TrainConfig, task_type: str, work_dir: Path, run_id: str) -> TrainResult:
    """Fine-tune on the train split, streaming loss, learning rate and validation metrics to the MLflow run.

    A retry resumes from the run's latest checkpoint (see train.save_steps).
    """
    processes = process_count(config)
    if processes > 1:
        result = fine_tune_parallel(splits, config, work_dir, processes, on_log=mlflow_logger(run_id), task=task_type)
    else:
        result = fine_tune(splits, config, work_dir, on_log=mlflow_logger(run_id), task=task_type)
    registry.log_metrics(run_id, {
        "train_seconds": result.seconds, "train_steps": result.steps, "mean_train_loss": result.train_loss,
        "params_trainable": result.trainable_params, "params_total": result.total_params,
        "params_trainable_share": result.trainable_params / max(1, result.total_params),
        **{f"final_validation_{k}": v for k, v in result.validation_metrics.items()},
    })
    registry.set_tags(run_id, {"device": result.device, "precision": result.precision, "method": result.method,
                               "processes": processes,
                               "base_model_source": result.base_model_source,
                               "resumed_from_step": result.resumed_from_step or "", "stopped_early": result.stopped_early})
    registry.log_artifact(run_id, plot_curves(result.history, work_dir / "training_curves.png"), "training")
    return result


@task(name="cross-validate", **TRANSIENT_RETRIES)
def cross_validate_model(splits: SplitResult, config: TrainConfig, task_type: str, work_dir: Path, run_id: str) -> dict:
    """k-fold cross-validation on train + validation: the spread says how much one split's number can be trusted."""
    outcome = cross_validate(splits, config, work_dir / "cv", task_type, config.cv_folds)
    metric = outcome.metric
    registry.log_metrics(run_id, {f"cv_{metric}_mean": outcome.mean, f"cv_{metric}_std": outcome.std})
    for fold, value in enumerate(outcome.folds):
        registry.log_metrics(run_id, {f"cv_{metric}": value}, step=fold)
    rows = [{"fold": i + 1, metric: round(v, 4)} for i, v in enumerate(outcome.folds)]
    rows.append({"fold": "mean ± std", metric: f"{outcome.mean:.4f} ± {outcome.std:.4f}"})
    create_table_artifact(rows, key="cross-validation", description=f"{len(outcome.folds)}-fold validation {metric}")
    return {"metric": metric, "mean": outcome.mean, "std": outcome.std, "folds": list(outcome.folds)}
