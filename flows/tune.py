"""The tune flow: an Optuna study over the retrain config, each trial a Prefect task run and a nested MLflow run.

Run it with `tuneline tune [--config tune.yaml] [key=value ...]` or from a
Prefect deployment. Running a study name again resumes it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import tuneline.flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from tuneline.flows.retrain import prepare_data, retrain
from tuneline.tasks.tracking import load_secrets
from tuneline.tasks.tune import report_study, train_trial
from tuneline.registry import store as registry
from tuneline.tuning import search as tuning
from tuneline.tuning.study import TuneSummary, plan_study, run_trials, study_run, summarize
from tuneline.errors import ConfigError


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


@flow(name="tune", log_prints=True)
def tune(config: tuning.TuneConfig = tuning.TuneConfig()) -> TuneSummary:
    """Search the retrain config with Optuna (grid, random or TPE; ASHA / median pruning), write the best as a preset."""
    started = time.perf_counter()
    load_secrets()  # MLflow / S3 / Hub credentials from Prefect Secret blocks where the environment has none
    retrain_config = config.retrain
    run_id = study_run(config)
    try:
        # The data stages once; every trial trains on the same train / validation split (the test split stays unseen).
        ingested, _, _, splits = prepare_data(retrain_config, run_id)
        plan = plan_study(config, ingested.content_hash, run_id)
        outcomes = run_trials(plan, config, splits, run_id, _task_runner(config, plan.parallelism),
                              lambda runner, spec: runner.submit(train_trial, {"spec": spec}), as_completed)
        preset = report_study(plan.study, config, run_id)
    except BaseException as error:
        registry.finish_run(run_id, failed=True, error=f"{type(error).__name__}: {error}")
        raise
    registry.finish_run(run_id)
    summary = summarize(plan, config, run_id, preset, outcomes, time.perf_counter() - started)
    print(summary.headline())
    if config.retrain_best:
        summary = replace(summary, retrain=retrain(config=tuning.best_config(plan.study)))
    return summary
