"""A tune run of a study: its MLflow run (reopened when the study resumes), the trials asked of Optuna and told their
outcomes as they land, the study's report and the summary the tune flow returns. The tune flow and the Prefect tasks
of `tuneline.tasks` call these; the flow hands `run_trials` its task runner, so trials run as Prefect task runs.

Imports `tuneline.tuning.search`, `tuneline.registry` (the study's run), `tuneline.runs` and `tuneline.summary`;
never Prefect.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneline.errors import ConfigError, TuningError
from tuneline.published import Markdown, Published, Table
from tuneline.registry import store as registry
from tuneline.runs import note_mlflow_run
from tuneline.settings import state_dir
from tuneline.summary import RetrainSummary
from tuneline.tuning import search as tuning

log = logging.getLogger("tuneline.tune")


@dataclass(frozen=True)
class TuneSummary:
    study_name: str
    storage: str
    run_id: str  # the study's MLflow run; trials are nested under it
    metric: str
    direction: str
    best_trial: int
    best_value: float
    best_params: dict[str, object]
    preset_path: str
    trials_finished: int  # complete + pruned, across every run of the study
    this_run: dict[str, int]  # complete / pruned / failed trials run now
    interrupted: list[int]  # trials a killed earlier run left behind, run again now
    seconds: float
    retrain: RetrainSummary | None = None
    outcomes: list[tuning.TrialOutcome] = field(default_factory=list)

    def headline(self) -> str:
        """The line the tune flow prints at the end."""
        return (f"study {self.study_name}: best trial {self.best_trial}, validation {self.metric} "
                f"{self.best_value:.4f} with {self.best_params}; this run {self.this_run}; preset {self.preset_path}")


@dataclass(frozen=True)
class StudyPlan:
    """The study, opened for this run, and what this run of it does."""

    study: Any  # optuna.Study
    interrupted: list[int]  # trials a killed earlier run left RUNNING: failed now, their parameters queued again
    remaining: int  # trials to run now
    parallelism: int  # trials at once
    gpus: int


def study_run(config: tuning.TuneConfig) -> str:
    """The study's MLflow run: the one an earlier run of this study opened, else a new one."""
    import optuna

    try:
        study = optuna.load_study(study_name=config.name, storage=config.storage_url())
        recorded = study.user_attrs.get("mlflow_run_id")
    except KeyError:  # a new study
        recorded = None
    if recorded:
        try:
            registry.client().update_run(recorded, status="RUNNING")
            return recorded
        except Exception:  # noqa: BLE001  the run was deleted, or the study moved to another tracking server
            log.warning("the study's MLflow run %s is gone; opening a new one", recorded)
    retrain = config.retrain
    return registry.start_run(
        retrain.registry.experiment, run_name=f"tune-{config.name}", params={"study": config.name},
        config_yaml=config.to_yaml(),
        tags={"optuna.study": config.name, "tuneline.flow": "tune", "base_model": retrain.train.base_model,
              "code_version": registry.code_version(), "orchestrator": "prefect"},
        on_created=note_mlflow_run)


def plan_study(config: tuning.TuneConfig, data_hash: str, run_id: str) -> StudyPlan:
    """Open (or resume) the study for data `data_hash`, recover the trials a killed run left, and size this run."""
    study = tuning.open_study(config, data_hash)
    study.set_user_attr("mlflow_run_id", run_id)
    interrupted = tuning.recover_interrupted(study)
    if interrupted:
        log.warning("trials %s were running when an earlier run of study %s stopped; their parameters run again",
                    interrupted, config.name)
    parallelism, gpus = tuning.trial_slots(config)
    budget, finished = config.budget(), len(tuning.finished_trials(study))
    remaining = max(0, budget - finished)
    log.info("study %s (%s, %s pruner, %s %s): %d of %d trials finished, %d to run, %d at once%s",
             config.name, config.algorithm, config.pruner, config.direction, config.metric, finished, budget,
             remaining, parallelism, f" on {gpus} GPUs" if gpus else "")
    return StudyPlan(study, interrupted, remaining, parallelism, gpus)


def run_trials(plan: StudyPlan, config: tuning.TuneConfig, splits, run_id: str, runner: AbstractContextManager,
               submit: Callable[[Any, tuning.TrialSpec], Any],
               as_completed: Callable[[list], Iterator[Any]]) -> list[tuning.TrialOutcome]:
    """Ask Optuna for the plan's trials, `plan.parallelism` at a time, and tell it each outcome as it lands.

    `runner` is entered once; `submit(runner, spec)` starts a trial on it and returns a future (`.result()`), and
    `as_completed(futures)` yields them as they finish: the tune flow passes a Prefect task runner, its `train_trial`
    task and Prefect's `as_completed`.
    """
    from optuna.trial import TrialState

    study, count, parallelism, gpus = plan.study, plan.remaining, plan.parallelism, plan.gpus
    deadline = time.monotonic() + config.timeout_minutes * 60 if config.timeout_minutes else None
    distributions = tuning.distributions(config)
    isolate = parallelism > 1 or gpus > 0
    threads = max(1, (os.cpu_count() or 1) // parallelism) if isolate and not gpus else None
    free_gpus = list(range(gpus))
    outcomes: list[tuning.TrialOutcome] = []
    in_flight: dict = {}
    fatal: BaseException | None = None
    work_root = state_dir() / "tuning" / config.name / "trials"

    def out_of_time() -> bool:
        if deadline is not None and time.monotonic() > deadline:
            log.info("time budget of %.1f minutes reached: no new trials", config.timeout_minutes)
            return True
        return False

    with runner as started:
        while in_flight or (count > 0 and fatal is None and not out_of_time()):
            while count > 0 and fatal is None and len(in_flight) < parallelism and not out_of_time():
                trial = study.ask(distributions)
                count -= 1
                try:
                    trial_config = tuning.trial_config(config, trial.params, len(splits.train))
                except ConfigError as error:  # a sampled combination the config refuses: a failed trial, not a crash
                    trial.set_user_attr("error", str(error)[:2000])
                    study.tell(trial, state=TrialState.FAIL)
                    outcomes.append(tuning.TrialOutcome(trial.number, "failed", None, 0, 0.0, "", str(error)))
                    log.warning("trial %d not run: %s", trial.number, error)
                    continue
                trial.set_user_attr("config", trial_config.model_dump(mode="json"))
                gpu = free_gpus.pop(0) if free_gpus else (trial.number % gpus if gpus else None)
                spec = tuning.TrialSpec(
                    number=trial.number, params=trial.params, config=trial_config, splits=splits, tune=config,
                    storage=config.storage_url(), parent_run_id=run_id, work_dir=work_root / f"trial-{trial.number}",
                    gpu=gpu, threads=threads, isolate=isolate)
                log.info("trial %d starts: %s", trial.number, trial.params)
                in_flight[submit(started, spec)] = (trial, gpu)
            if not in_flight:
                break
            done = next(as_completed(list(in_flight)))
            trial, gpu = in_flight.pop(done)
            if gpu is not None and gpus and gpu not in free_gpus:
                free_gpus.append(gpu)
            try:
                outcome = done.result()
            except BaseException as error:  # noqa: BLE001  not the parameters' fault: stop sampling, keep the rest
                study.tell(trial, state=TrialState.FAIL)
                fatal = fatal or error
                continue
            outcomes.append(outcome)
            if outcome.state == "complete":
                study.tell(trial, outcome.value)
            elif outcome.state == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
            else:
                trial.set_user_attr("error", (outcome.error or "")[:2000])
                study.tell(trial, state=TrialState.FAIL)
            best = best_so_far(study)
            log.info("trial %d %s: %s %s after %d steps, %.0f s%s", trial.number, outcome.state, config.metric,
                     "-" if outcome.value is None else f"{outcome.value:.4f}", outcome.steps, outcome.seconds,
                     f"; best so far trial {best.number}: {best.value:.4f}" if best else "")
    shutil.rmtree(work_root, ignore_errors=True)
    if fatal is not None:
        raise fatal
    if outcomes and all(o.state == "failed" for o in outcomes) and not tuning.finished_trials(study):
        raise TuningError(f"every trial of study {config.name} failed; the first: {outcomes[0].error}")
    return outcomes


def best_so_far(study):
    """The study's best trial, or None before one completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def report_study(study, config: tuning.TuneConfig, run_id: str) -> tuple[Path, list[Published]]:
    """The best config written as a preset; plots, the top-trials table and the best trial in the study's MLflow run.
    Returns the preset's path and the flow run's artifacts (`tune-trials`, `tune-best`)."""
    best = tuning.best_config(study)
    preset = Path(config.preset_path) if config.preset_path else (
        tuning.state_dir() / "tuning" / config.name / "best.yaml")
    tuning.write_preset(best, preset, study, config.metric)
    registry.log_artifact(run_id, preset, "tuning")
    rows = tuning.top_trials(study)
    registry.log_json(run_id, rows, "tuning/top_trials.json")
    with tempfile.TemporaryDirectory() as folder:
        for path in tuning.plot_study(study, Path(folder)):
            registry.log_artifact(run_id, path, "tuning")
    best_trial = study.best_trial
    registry.log_metrics(run_id, {f"best_{config.metric}": best_trial.value, "best_trial": best_trial.number})
    registry.set_tags(run_id, {f"best.{k}": v for k, v in best_trial.params.items()})
    markdown = (f"**Best trial {best_trial.number}**: validation {config.metric} {best_trial.value:.4f}\n\n"
                + "\n".join(f"- `{k}` = {v}" for k, v in best_trial.params.items())
                + f"\n\nPreset: `{preset}`, run it with `tuneline retrain --config {preset}`")
    return preset, [Table("tune-trials", rows, f"Top trials of study {config.name} by validation {config.metric}"),
                    Markdown("tune-best", markdown, "The best config of the study")]


def summarize(plan: StudyPlan, config: tuning.TuneConfig, run_id: str, preset: Path,
              outcomes: list[tuning.TrialOutcome], seconds: float) -> TuneSummary:
    """What the tune flow returns: the best trial, the trials this run ran, the preset."""
    from optuna.trial import TrialState

    best = plan.study.best_trial
    counts = {state: sum(o.state == state for o in outcomes) for state in ("complete", "pruned", "failed")}
    return TuneSummary(
        study_name=config.name, storage=config.storage_url(), run_id=run_id, metric=config.metric,
        direction=config.direction, best_trial=best.number, best_value=float(best.value), best_params=best.params,
        preset_path=str(preset),
        trials_finished=len(plan.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))),
        this_run=counts, interrupted=plan.interrupted, seconds=seconds, outcomes=outcomes,
    )
