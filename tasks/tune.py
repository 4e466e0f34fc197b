"""Stages of the tune flow: one trial, and the study's report."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.tuning import search as tuning
from tuneline.tuning import study as studies


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
    preset, published = studies.report_study(study, config, run_id)
    publish(*published)
    return preset
