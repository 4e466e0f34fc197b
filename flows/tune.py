"""The tune flow: an Optuna study over the retrain config, each trial a Prefect task run and a nested MLflow run.

Run it with `tuneline tune [--config tune.yaml] [key=value ...]` or from a
Prefect deployment. Running a study name again resumes it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field

import tuneline.flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from tuneline.flows.retrain import prepare_data, retrain
from tuneline.tasks.tracking import load_secrets
from tuneline.tasks.tune import report_study, train_trial
from tuneline.registry import store as registry
from tuneline.tuning import search as tuning
from tuneline.errors import ConfigError, TuningError
from tuneline.settings import state_dir
from tuneline.summary import RetrainSummary
from tuneline.runs import note_mlflow_run

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


def _task_runner(config: tuning.TuneConfig, parallelism: int):
    if config.runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError("runner dask needs prefect-dask: pip install 'tuneline[dask]'") from None
        if config.cluster_address:
            return DaskTaskRunner(address=config.cluster_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": parallelism, "threads_per_worker": 1})
    if config.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ConfigError("runner ray needs prefect-ray: pip install 'tuneline[ray]'") from None
        return RayTaskRunner(address=config.cluster_address) if config.cluster_address else RayTaskRunner()
    return ThreadPoolTaskRunner(max_workers=parallelism)


def _study_run(config: tuning.TuneConfig) -> str:
    """The study's MLflow run: the one an earlier run of this study opened, else a new one."""
    import optuna

    try:
        recorded = optuna.load_study(study_name=config.name, storage=config.storage_url()).user_attrs.get("mlflow_run_id")
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


@flow(name="tune", log_prints=True)
def tune(config: tuning.TuneConfig = tuning.TuneConfig()) -> TuneSummary:
    """Search the retrain config with Optuna (grid, random or TPE; ASHA / median pruning), write the best as a preset."""
    from optuna.trial import TrialState

    started = time.perf_counter()
    load_secrets()  # MLflow / S3 / Hub credentials from Prefect Secret blocks where the environment has none
    retrain_config = config.retrain
    run_id = _study_run(config)
    try:
        # The data stages once; every trial trains on the same train / validation split (the test split stays unseen).
        ingested, _, _, splits = prepare_data(retrain_config, run_id)

        study = tuning.open_study(config, ingested.content_hash)
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
        outcomes = _run_trials(study, config, splits, run_id, remaining, parallelism, gpus)
        preset = report_study(study, config, run_id)
    except BaseException as error:
        registry.finish_run(run_id, failed=True, error=f"{type(error).__name__}: {error}")
        raise
    registry.finish_run(run_id)

    best = study.best_trial
    counts = {state: sum(o.state == state for o in outcomes) for state in ("complete", "pruned", "failed")}
    summary = TuneSummary(
        study_name=config.name, storage=config.storage_url(), run_id=run_id, metric=config.metric,
        direction=config.direction, best_trial=best.number, best_value=float(best.value), best_params=best.params,
        preset_path=str(preset),
        trials_finished=len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))),
        this_run=counts, interrupted=interrupted, seconds=time.perf_counter() - started, outcomes=outcomes,
    )
    print(f"study {config.name}: best trial {best.number}, validation {config.metric} {best.value:.4f} with "
          f"{best.params}; this run {counts}; preset {preset}")
    if config.retrain_best:
        summary = TuneSummary(**{**summary.__dict__, "retrain": retrain(config=tuning.best_config(study))})
    return summary


def _run_trials(study, config: tuning.TuneConfig, splits, run_id: str, count: int, parallelism: int,
                gpus: int) -> list[tuning.TrialOutcome]:
    """Ask Optuna for `count` trials, `parallelism` at a time, and tell it each outcome as it lands."""
    from optuna.trial import TrialState

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

    with _task_runner(config, parallelism) as runner:
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
                in_flight[runner.submit(train_trial, {"spec": spec})] = (trial, gpu)
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
            best = _best_so_far(study)
            log.info("trial %d %s: %s %s after %d steps, %.0f s%s", trial.number, outcome.state, config.metric,
                     "-" if outcome.value is None else f"{outcome.value:.4f}", outcome.steps, outcome.seconds,
                     f"; best so far trial {best.number}: {best.value:.4f}" if best else "")
    shutil.rmtree(work_root, ignore_errors=True)
    if fatal is not None:
        raise fatal
    if outcomes and all(o.state == "failed" for o in outcomes) and not tuning.finished_trials(study):
        raise TuningError(f"every trial of study {config.name} failed; the first: {outcomes[0].error}")
    return outcomes


def _best_so_far(study):
    try:
        return study.best_trial
    except ValueError:
        return None
