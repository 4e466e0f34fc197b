"""The training stages as the retrain runs them: fine-tune with the job's checkpoint folder (taking over the
checkpoints of a run that died), cross-validate, and what each records in the run's MLflow run. The Prefect tasks of
`tuneline.tasks` call these and publish what they return.

Beyond the rest of `tuneline.training`, imports `tuneline.data` (the splits) and `tuneline.registry` (to record);
never Prefect.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuneline.config import TrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.published import Table
from tuneline.registry import store as registry
from tuneline.settings import state_dir
from tuneline.training.checkpoints import CheckpointOwner, checkpoint_key, claim
from tuneline.training.distributed import fine_tune_parallel, process_count
from tuneline.training.engine import TrainResult, cross_validate, fine_tune, mlflow_logger, plot_curves
from tuneline.training.modeling import resolve_model_source

log = logging.getLogger(__name__)


def job_checkpoint_dir(splits: SplitResult, config: TrainConfig, task_type: str) -> Path:
    """`<state>/checkpoints/<key of this training job>`: the same for a retry and for a re-run of the same job."""
    key = checkpoint_key(splits, config, task_type, resolve_model_source(config.base_model))
    return state_dir() / "checkpoints" / key


def close_superseded_run(old_run_id: str, run_id: str) -> None:
    """Mark the run whose checkpoints `run_id` took over KILLED when it still shows RUNNING (its process died
    without closing it), with a tag naming its successor. A run that ended (FAILED after training) stays as it is."""
    from mlflow.exceptions import MlflowException

    try:
        old = registry.client().get_run(old_run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return  # deleted, or tracked on another server: nothing to close
    if old.info.status == "RUNNING":  # with a Prefect server: no run on the state folder closed it (tuneline.runs)
        registry.set_tags(old_run_id, {"superseded_by": run_id,
                                       "error": f"its process stopped while training; run {run_id} resumed from its "
                                                "checkpoints"})
        registry.client().set_terminated(old_run_id, status="KILLED")
    elif old.info.status == "KILLED":  # closed by this run's start, which named the stage it died in
        registry.set_tags(old_run_id, {"superseded_by": run_id})


def fine_tune_model(splits: SplitResult, config: TrainConfig, task_type: str, work_dir: Path,
                    run_id: str) -> TrainResult:
    """Fine-tune on the train split, streaming loss, learning rate and validation metrics to the MLflow run, then
    record the run's numbers, tags and training curves.

    Checkpoints go to the job's folder (`job_checkpoint_dir`), whose last owner, when another run, is closed
    (`close_superseded_run`) and named as the run this one resumed from.
    """
    checkpoint_dir = job_checkpoint_dir(splits, config, task_type)
    previous: CheckpointOwner | None = claim(checkpoint_dir, run_id)
    took_over = previous is not None and previous.run_id != run_id
    if took_over:
        close_superseded_run(previous.run_id, run_id)
    processes = process_count(config)
    if processes > 1:
        result = fine_tune_parallel(splits, config, work_dir, processes, on_log=mlflow_logger(run_id), task=task_type,
                                    checkpoint_dir=checkpoint_dir)
    else:
        result = fine_tune(splits, config, work_dir, on_log=mlflow_logger(run_id), task=task_type,
                           checkpoint_dir=checkpoint_dir)
    if result.resumed_from_step:
        log.info("resumed from step %d of %s%s", result.resumed_from_step, checkpoint_dir,
                 f" (checkpoints of MLflow run {previous.run_id})" if took_over else "")
    if result.oom_fallbacks:
        log.warning("CUDA ran out of memory %d time(s): trained with micro-batch %d x %d accumulation steps",
                    result.oom_fallbacks, result.micro_batch, result.gradient_accumulation_steps)
    registry.log_metrics(run_id, {
        "train_seconds": result.seconds, "train_steps": result.steps, "mean_train_loss": result.train_loss,
        "params_trainable": result.trainable_params, "params_total": result.total_params,
        "params_trainable_share": result.trainable_params / max(1, result.total_params),
        "oom_fallbacks": result.oom_fallbacks,
        **{f"final_validation_{k}": v for k, v in result.validation_metrics.items()},
    })
    registry.set_tags(run_id, {"device": result.device, "precision": result.precision, "method": result.method,
                               "processes": processes,
                               "base_model_source": result.base_model_source,
                               "train.micro_batch": result.micro_batch,
                               "train.gradient_accumulation": result.gradient_accumulation_steps,
                               "resumed_from_step": result.resumed_from_step or "",
                               # whose checkpoints a re-run continued (the folder's last owner)
                               "resumed_from_run": previous.run_id if took_over and result.resumed_from_step else "",
                               "stopped_early": result.stopped_early})
    registry.log_artifact(run_id, plot_curves(result.history, work_dir / "training_curves.png"), "training")
    return result


def cross_validate_model(splits: SplitResult, config: TrainConfig, task_type: str, work_dir: Path,
                         run_id: str) -> tuple[dict, Table]:
    """k-fold cross-validation on train + validation, recorded per fold; returns the outcome and its table."""
    outcome = cross_validate(splits, config, work_dir / "cv", task_type, config.cv_folds)
    metric = outcome.metric
    registry.log_metrics(run_id, {f"cv_{metric}_mean": outcome.mean, f"cv_{metric}_std": outcome.std})
    for fold, value in enumerate(outcome.folds):
        registry.log_metrics(run_id, {f"cv_{metric}": value}, step=fold)
    rows = [{"fold": i + 1, metric: round(v, 4)} for i, v in enumerate(outcome.folds)]
    rows.append({"fold": "mean ± std", metric: f"{outcome.mean:.4f} ± {outcome.std:.4f}"})
    table = Table("cross-validation", rows, f"{len(outcome.folds)}-fold validation {metric}")
    return {"metric": metric, "mean": outcome.mean, "std": outcome.std, "folds": list(outcome.folds)}, table
