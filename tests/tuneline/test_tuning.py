"""The tune config, trial configs and the study's resume rules, without running a flow."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from tuneline.config import RetrainConfig
from tuneline.errors import ConfigError, TuningError
from tuneline.tuning.search import (
    Param,
    TuneConfig,
    apply_params,
    best_config,
    distributions,
    load_tune_config,
    open_study,
    planned_steps,
    recover_interrupted,
    trial_config,
)


def _space(**params):
    return {path.replace("__", "."): spec for path, spec in params.items()}


@pytest.mark.parametrize(("settings", "message"), [
    ({"search_space": {"train.learnig_rate": {"type": "uniform", "low": 0, "high": 1}}},
     "'train.learnig_rate' is not a setting of the retrain config"),
    ({"search_space": {"trian.epochs": {"type": "uniform", "low": 1, "high": 2}}}, "not a retrain config path"),
    ({"search_space": {"train.learning_rate": {"type": "log_uniform", "low": 0, "high": 1e-3}}}, "needs low > 0"),
    ({"search_space": {"train.batch_size": {"type": "categorical"}}}, "non-empty `choices`"),
    ({"search_space": {"train.lora.r": {"type": "int", "low": 8, "high": 4}}}, "low < high"),
    ({"search_space": {"train.batch_size": {"type": "int", "low": 0, "high": 4}}}, "batch_size: Input should be greater"),
    ({"search_space": {"train.eval_steps": {"type": "int", "low": 1, "high": 4}}}, "set by each trial"),
    ({"algorithm": "grid"}, "grid search needs discrete parameters"),
    ({"objective": {"metric": "r2"}}, "objective.metric 'r2' is not reported for task classification"),
    ({"enqueue": [{"train.epochs": 2}]}, "not in search_space"),
    ({"cluster_address": "tcp://10.0.0.1:8786"}, "cluster_address needs runner dask or ray"),
])
def test_bad_tune_configs_say_what_is_wrong(settings, message):
    with pytest.raises(ConfigError, match="invalid config") as error:
        load_tune_config(None, [f"{k}={v}" for k, v in settings.items()])
    assert message in str(error.value)


def test_defaults_follow_the_task():
    config = load_tune_config(None, ["retrain.task=regression"])
    assert (config.metric, config.direction) == ("mse", "minimize")
    assert (TuneConfig().metric, TuneConfig().direction) == ("accuracy", "maximize")
    assert load_tune_config(None, ["objective.metric=loss"]).direction == "minimize"


def test_params_apply_to_the_retrain_config_and_trials_own_their_evaluations():
    base = RetrainConfig()
    tuned = apply_params(base, {"train.learning_rate": 1e-4, "train.lora.r": 32, "train.lr_scheduler": "cosine"})
    assert (tuned.train.learning_rate, tuned.train.lora.r, tuned.train.lr_scheduler) == (1e-4, 32, "cosine")
    assert tuned.data == base.data
    with pytest.raises(ConfigError, match="lr_scheduler: Input should be"):
        apply_params(base, {"train.lr_scheduler": "wavy"})
    # 1,000 rows, batch 32, 2 epochs: 32 steps an epoch, 64 in all; 4 evaluations -> every 16 steps.
    config = TuneConfig(retrain=apply_params(base, {"train.epochs": 2}), evaluations_per_trial=4)
    assert planned_steps(config.retrain, 1000) == 64
    trial = trial_config(config, {"train.batch_size": 32}, 1000)
    assert (trial.train.eval_steps, trial.train.best_metric, trial.train.processes) == (16, "accuracy", 1)


def test_grid_values():
    assert Param(type="uniform", low=0.0, high=0.2, step=0.1).grid() == [0.0, 0.1, 0.2]
    assert Param(type="int", low=4, high=16, step=4).grid() == [4, 8, 12, 16]
    assert Param(type="log_uniform", low=1e-5, high=1e-3).grid() is None
    config = TuneConfig(algorithm="grid", trials=None, search_space=_space(
        train__batch_size={"type": "categorical", "choices": [16, 32]}, train__lora__r={"type": "int", "low": 4, "high": 8, "step": 4}))
    assert config.budget() == 4


def test_resuming_refuses_a_changed_search_and_recovers_interrupted_trials(tmp_path):
    config = TuneConfig(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s", algorithm="random")
    study = open_study(config, "hash-1")
    finished = study.ask()
    finished.set_user_attr("config", RetrainConfig().model_dump(mode="json"))
    study.tell(finished, 0.7)
    running = study.ask({"train.learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})

    with pytest.raises(TuningError, match="different data_hash"):
        open_study(config, "hash-2")
    with pytest.raises(TuningError, match="different search_space"):
        open_study(config.model_copy(update={"search_space": {"train.epochs": Param(type="uniform", low=1, high=2)}}), "hash-1")

    resumed = open_study(config, "hash-1")
    assert recover_interrupted(resumed) == [running.number]
    assert resumed.trials[running.number].state == TrialState.FAIL
    retry = resumed.ask(distributions(config))  # the interrupted parameters come first
    assert retry.params["train.learning_rate"] == running.params["train.learning_rate"] and retry.user_attrs["retry_of"] == running.number
    assert best_config(resumed) == RetrainConfig()


def test_a_study_without_a_complete_trial_has_no_best_config(tmp_path):
    study = open_study(TuneConfig(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="empty"), "h")
    with pytest.raises(TuningError, match="no complete trial"):
        best_config(study)
