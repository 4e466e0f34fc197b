"""Stages of the tune flow: one trial, and the study's report."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.registry import store as registry
from tuneline.tuning import search as tuning


@task(name="trial", task_run_name="trial-{spec.number}", cache_policy=NO_CACHE)
def train_trial(spec: tuning.TrialSpec):
    """Fine-tune one sampled config, reporting validation evaluations to Optuna; pruned trials stop early.

    No retries: a failed trial is recorded in the study and the next one is sampled.
    """
    outcome = tuning.run_trial(spec)
    if outcome.state == "pruned":  # shown as "Pruned" in the Prefect UI, still a finished run
        return Completed(name="Pruned", data=outcome, message=f"pruned at step {outcome.steps}")
    return outcome


@task(name="report-study", **TRANSIENT_RETRIES)
def report_study(study, config: tuning.TuneConfig, run_id: str) -> Path:
    """Plots, the top-trials table and the best config as a preset: MLflow artifacts of the study run and
    Prefect artifacts of the flow run. Returns the preset's path."""
    best = tuning.best_config(study)
    preset = Path(config.preset_path) if config.preset_path else (
        tuning.state_dir() / "tuning" / config.name / "best.yaml")
    tuning.write_preset(best, preset, study, config.metric)
    registry.log_artifact(run_id, preset, "tuning")
    rows = tuning.top_trials(study)
    create_table_artifact(rows, key="tune-trials",
                          description=f"Top trials of study {config.name} by validation {config.metric}")
    registry.log_json(run_id, rows, "tuning/top_trials.json")
    with tempfile.TemporaryDirectory() as folder:
        for path in tuning.plot_study(study, Path(folder)):
            registry.log_artifact(run_id, path, "tuning")
    best_trial = study.best_trial
    registry.log_metrics(run_id, {f"best_{config.metric}": best_trial.value, "best_trial": best_trial.number})
    registry.set_tags(run_id, {f"best.{k}": v for k, v in best_trial.params.items()})
    create_markdown_artifact(
        f"**Best trial {best_trial.number}**: validation {config.metric} {best_trial.value:.4f}\n\n"
        + "\n".join(f"- `{k}` = {v}" for k, v in best_trial.params.items())
        + f"\n\nPreset: `{preset}`, run it with `tuneline retrain --config {preset}`",
        key="tune-best", description="The best config of the study")
    return preset
