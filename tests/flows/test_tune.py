"""The real tune flow: Prefect (temporary server), Optuna (SQLite), MLflow (SQLite), a tiny random BERT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuneline.config import RetrainConfig, load_config
from tuneline.registry.store import CHAMPION, client
from tuneline.tuning import search as tuning
from tuneline.tuning.search import TuneConfig, load_tune_config

pytestmark = pytest.mark.e2e
MODEL = "tune-e2e"


def _tune_config(reviews_csv: Path, tiny_bert: Path, **settings) -> TuneConfig:
    retrain = load_config(overrides=[
        f"data.path={reviews_csv}", f"train.base_model={tiny_bert}", "train.max_steps=4", "train.batch_size=8",
        "train.max_length=32", "train.logging_steps=1", f"registry.model_name={MODEL}", "export.parity_rows=8",
        "export.max_accuracy_drop=1.0",
    ])
    settings = {"search_space": {"train.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
                "trials": 3, "evaluations_per_trial": 2, "startup_trials": 1, "study_name": "study"} | settings
    return TuneConfig.model_validate({"retrain": retrain.model_dump(mode="json"), **settings})


def _run(config: TuneConfig):
    """The flow, and the task runs of its flow run by name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tuneline.flows.tune import tune

    state = tune(config=config, return_state=True)
    summary = state.result()
    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return summary, {run.name: run for run in task_runs}


def _study(config: TuneConfig) -> optuna.Study:
    return optuna.load_study(study_name=config.name, storage=config.storage_url())


@pytest.mark.parametrize("algorithm", ["grid", "random", "tpe"])
def test_each_algorithm_runs_a_study_end_to_end(prefect_harness, state, reviews_csv, tiny_bert, algorithm):
    settings = {"algorithm": algorithm, "pruner": "none"}
    if algorithm == "grid":
        settings |= {"trials": None, "search_space": {
            "train.learning_rate": {"type": "categorical", "choices": [1e-3, 1e-4]},
            "train.warmup_ratio": {"type": "uniform", "low": 0.0, "high": 0.1, "step": 0.1}}}
    config = _tune_config(reviews_csv, tiny_bert, **settings, retrain_best=algorithm == "tpe")

    summary, task_runs = _run(config)

    study = _study(config)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    expected = 4 if algorithm == "grid" else 3
    assert len(trials) == len(study.trials) == expected == summary.this_run["complete"]
    if algorithm == "grid":  # every combination exactly once
        assert sorted((t.params["train.learning_rate"], t.params["train.warmup_ratio"]) for t in trials) == [
            (1e-4, 0.0), (1e-4, 0.1), (1e-3, 0.0), (1e-3, 0.1)]
    # Each trial is a Prefect task run and an MLflow run nested under the study's run.
    assert {f"trial-{t.number}" for t in trials} <= set(task_runs)
    assert all(task_runs[f"trial-{t.number}"].state.is_completed() for t in trials)
    nested = client().search_runs([client().get_experiment_by_name("tuneline").experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{summary.run_id}'")
    assert len(nested) == expected
    for run in nested:
        number = int(run.data.tags["optuna.trial"])
        assert float(run.data.params["train.learning_rate"]) == pytest.approx(study.trials[number].params["train.learning_rate"])
        assert run.data.metrics["objective_accuracy"] == pytest.approx(study.trials[number].value)
        assert (run.data.tags["optuna.state"], run.data.tags["device"]) == ("complete", "cpu")
        history = client().get_metric_history(run.info.run_id, "validation_accuracy")
        assert len(history) >= 2  # the curve: evaluations during training
    # The best config is a preset the retrain config loads, equal to what the best trial ran.
    best = max(trials, key=lambda t: t.value)
    assert summary.best_value == pytest.approx(best.value)
    preset = load_config(summary.preset_path)
    assert preset.train.learning_rate == pytest.approx(best.params["train.learning_rate"])
    assert preset == RetrainConfig.model_validate(best.user_attrs["config"])
    artifacts = {f.path for f in client().list_artifacts(summary.run_id, "tuning")}
    assert {"tuning/best.yaml", "tuning/optimization_history.png", "tuning/parallel_coordinate.png"} <= artifacts
    if algorithm == "random":  # a study resumes only as the study it was
        from tuneline.flows.tune import tune
        from tuneline.errors import TuningError

        changed = config.model_copy(update={"search_space": {"train.learning_rate": tuning.Param(
            type="log_uniform", low=1e-5, high=1e-3)}})
        with pytest.raises(TuningError, match="different search_space"):
            tune(config=changed)
        assert len(_study(config).trials) == expected
    if algorithm == "tpe":  # the best config went through retrain and its gate
        # 4 tiny-BERT steps may not clear the gate's floor (the majority class, bag-of-words): either way the gate
        # decided, and said why when it held the version
        assert summary.retrain.version == "1" and summary.retrain.alias in (CHAMPION, "challenger")
        if summary.retrain.alias != CHAMPION:
            assert any("baseline" in reason for reason in summary.retrain.gate_reasons), summary.retrain.gate_reasons
        registered = client().get_model_version(MODEL, "1")
        run_params = client().get_run(registered.run_id).data.params
        assert float(run_params["train.learning_rate"]) == pytest.approx(best.params["train.learning_rate"])


def test_pruning_stops_a_planted_bad_trial_early(prefect_harness, state, reviews_csv, tiny_bert):
    # Two sound trials first, then one whose learning rate makes the loss explode: the median pruner must stop
    # it at its first evaluation, long before its last step.
    config = _tune_config(
        reviews_csv, tiny_bert, algorithm="random", pruner="median", startup_trials=2, trials=3,
        evaluations_per_trial=4, objective={"metric": "loss"},
        search_space={"train.learning_rate": {"type": "log_uniform", "low": 1e-5, "high": 5.0}},
        enqueue=[{"train.learning_rate": 1e-3}, {"train.learning_rate": 2e-3}, {"train.learning_rate": 5.0}],
    )
    config = config.model_copy(update={"retrain": config.retrain.model_copy(update={
        "train": config.retrain.train.model_copy(update={"max_steps": 8})})})

    summary, task_runs = _run(config)

    study = _study(config)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    planted = study.trials[2]
    assert planted.params["train.learning_rate"] == 5.0
    assert max(planted.intermediate_values) < 8  # stopped before its last step
    assert planted.intermediate_values[min(planted.intermediate_values)] > max(
        t.intermediate_values[min(t.intermediate_values)] for t in study.trials[:2])
    assert task_runs["trial-2"].state.name == "Pruned"
    assert summary.this_run == {"complete": 2, "pruned": 1, "failed": 0}
    assert summary.best_trial in (0, 1)


def test_killed_study_resumes_without_repeating_finished_trials(prefect_harness, state, reviews_csv, tiny_bert, tmp_path):
    from prefect.settings import PREFECT_API_URL

    config = _tune_config(reviews_csv, tiny_bert, algorithm="random", pruner="none", trials=4)
    config_file = tmp_path / "tune.yaml"
    config_file.write_text(config.to_yaml())
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    command = [str(Path(sys.executable).with_name("tuneline")), "tune", "--config", str(config_file)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if len(_study(config).get_trials(states=(TrialState.COMPLETE,))) >= 2:
                    break
            except KeyError:  # the study does not exist yet
                pass
            time.sleep(0.2)
        assert process.poll() is None, "the study finished before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = {t.number: (t.params, t.value, t.datetime_complete) for t in _study(config).get_trials(states=(TrialState.COMPLETE,))}
    assert 2 <= len(before) < 4

    summary, _ = _run(config)

    study = _study(config)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4  # the budget counts the trials finished before the kill
    for number, (params, value, finished_at) in before.items():  # finished trials untouched, not run again
        assert (study.trials[number].params, study.trials[number].value, study.trials[number].datetime_complete) == (
            params, value, finished_at)
    assert summary.this_run["complete"] == 4 - len(before)
    rerun = [t for t in complete if t.number not in before]
    assert not any(t.params in [p for p, _, _ in before.values()] for t in rerun)
    # A trial the kill interrupted is marked failed and its parameters are run again.
    for number in summary.interrupted:
        assert study.trials[number].state == TrialState.FAIL
        assert any(t.user_attrs.get("retry_of") == number for t in complete)


def test_parallel_trials_run_in_child_processes(prefect_harness, state, reviews_csv, tiny_bert):
    config = _tune_config(reviews_csv, tiny_bert, algorithm="random", pruner="median", trials=2, parallelism=2)

    summary, task_runs = _run(config)

    study = _study(config)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    first, second = sorted(study.trials, key=lambda t: t.datetime_start)
    assert second.datetime_start < first.datetime_complete  # both ran at once
    assert summary.this_run["complete"] == 2


def test_tune_config_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "tune.yaml"
    path.write_text("trials: 5\nsearch_space:\n  train.lora.r: {type: int, low: 4, high: 16, step: 4}\n"
                    "retrain:\n  train:\n    method: lora\n")
    config = load_tune_config(path, ["algorithm=grid", "retrain.train.epochs=2"])
    assert (config.trials, config.algorithm, config.retrain.train.method, config.retrain.train.epochs) == (5, "grid", "lora", 2)
    assert config.search_space["train.lora.r"].grid() == [4, 8, 12, 16]
    assert config.budget() == 4  # grid: never more than the grid


@pytest.mark.slow
def test_trials_run_on_a_dask_cluster(prefect_harness, state, reviews_csv, tiny_bert):
    config = _tune_config(reviews_csv, tiny_bert, algorithm="random", pruner="none", trials=2, parallelism=2,
                          runner="dask")

    summary, task_runs = _run(config)

    assert [t.state for t in _study(config).trials] == [TrialState.COMPLETE] * 2
    assert {"trial-0", "trial-1"} <= set(task_runs) and summary.this_run["complete"] == 2


@pytest.mark.gpu
def test_each_trial_owns_a_gpu(prefect_harness, state, reviews_csv, tiny_bert):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpus = torch.cuda.device_count()
    config = _tune_config(reviews_csv, tiny_bert, algorithm="random", pruner="none", trials=2 * gpus)
    config = config.model_copy(update={"retrain": config.retrain.model_copy(update={
        "train": config.retrain.train.model_copy(update={"device": "cuda"})})})

    summary, _ = _run(config)

    assert summary.this_run["complete"] == 2 * gpus
    runs = client().search_runs([client().get_experiment_by_name("tuneline").experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{summary.run_id}'")
    assert sorted({run.data.tags["gpu"] for run in runs}) == [str(i) for i in range(gpus)]
    assert {run.data.tags["device"] for run in runs} == {"cuda"}
