"""Hyperparameter search over the retrain config: an Optuna study whose trials are fine-tune runs.

The `tune` flow (flows/tune.py) owns the loop; this module holds the parts
that do not need Prefect:

- `TuneConfig`: the search space (dotted paths into `RetrainConfig`, e.g.
  `train.learning_rate`), objective, algorithm, pruner, budget, parallelism.
- `open_study`: a persistent study (SQLite under the state folder by default,
  any SQLAlchemy URL such as Postgres at scale). Re-running the same study
  resumes it: finished trials stay, a trial that was running when the process
  died is marked failed and its parameters are run again.
- `run_trial`: one trial. It fine-tunes with the trial's config, reports each
  validation evaluation to Optuna (which may prune it) and logs an MLflow run
  nested under the study's run. Parallel trials run in child processes, each
  with its own GPU (`CUDA_VISIBLE_DEVICES`) or its share of the CPU cores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneline.config import LOWER_IS_BETTER, RetrainConfig, describe_errors, load_config
from tuneline.kinds import kind
from tuneline.errors import ConfigError, TunelineError, TuningError
from tuneline.settings import state_dir
from tuneline.runs import note_mlflow_run

log = logging.getLogger(__name__)

Scalar = str | int | float | bool | None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Section):
    """How one config value is searched."""

    type: Literal["log_uniform", "uniform", "int", "categorical"] = Field(
        description="`log_uniform` (learning rates), `uniform`, `int` (e.g. LoRA rank) or `categorical` (a list)."
    )
    low: float | None = Field(None, description="Smallest value (log_uniform, uniform, int).")
    high: float | None = Field(None, description="Largest value, included (log_uniform, uniform, int).")
    step: float | None = Field(None, gt=0, description="Spacing of the values (uniform, int); empty: continuous / 1.")
    choices: list[Scalar] | None = Field(None, description="The values to choose from (categorical).")

    @model_validator(mode="after")
    def _complete(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes `choices`, not low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes low/high, not `choices`")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs low < high, got low={self.low} high={self.high}")
        if self.type == "log_uniform" and self.low <= 0:
            raise ValueError(f"a log_uniform parameter needs low > 0, got {self.low}")
        if self.type == "log_uniform" and self.step is not None:
            raise ValueError("a log_uniform parameter cannot have a step")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()
                                       and (self.step is None or float(self.step).is_integer())):
            raise ValueError("an int parameter needs whole-number low, high and step")
        return self

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution(self.choices)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), step=int(self.step or 1))
        return FloatDistribution(self.low, self.high, log=self.type == "log_uniform", step=self.step)

    def grid(self) -> list[Scalar] | None:
        """Every value, for grid search; None for a continuous range."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.type == "uniform" and self.step:
            count = int(round((self.high - self.low) / self.step)) + 1
            return [round(self.low + i * self.step, 12) for i in range(count)]
        return None

    def example(self) -> Scalar:
        return self.choices[0] if self.type == "categorical" else (int(self.low) if self.type == "int" else self.low)


class Objective(_Section):
    metric: str | None = Field(
        None,
        description="Validation metric to optimise: loss, accuracy or macro_f1 (classification), mse, mae or r2 "
        "(regression). Empty: accuracy, mse, or loss for generation tasks.",
    )
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="`auto`: minimise loss, mse and mae, maximise the rest."
    )


DEFAULT_SPACE = {
    "train.learning_rate": Param(type="log_uniform", low=1e-5, high=3e-4),
    "train.batch_size": Param(type="categorical", choices=[16, 32]),
    "train.warmup_ratio": Param(type="uniform", low=0.0, high=0.2),
    "train.weight_decay": Param(type="uniform", low=0.0, high=0.1),
}
# Settings a trial owns: they would break the search if a sampled or preset value changed them.
_TRIAL_OWNED = ("train.best_metric", "train.eval_steps", "train.save_steps", "train.processes", "train.resume",
                "train.cv_folds")


class TuneConfig(_Section):
    """One study: what to search, for what, how, and with how much time."""

    retrain: RetrainConfig = Field(
        RetrainConfig(), description="The retrain config every trial starts from (data, model, method, ...)."
    )
    search_space: dict[str, Param] = Field(
        DEFAULT_SPACE,
        description="Config paths to search and how, e.g. `train.learning_rate: {type: log_uniform, low: 1e-5, "
        "high: 1e-3}`, `train.lora.r: {type: int, low: 4, high: 64, step: 4}`, "
        "`train.lr_scheduler: {type: categorical, choices: [linear, cosine]}`.",
    )
    objective: Objective = Field(Objective(), description="The validation metric trials are ranked by.")
    algorithm: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="`tpe`: Bayesian (Optuna TPE); `random`; `grid`: every combination (discrete spaces only)."
    )
    pruner: Literal["asha", "median", "hyperband", "none"] = Field(
        "asha",
        description="Stop weak trials early from their validation evaluations: `asha` (asynchronous successive "
        "halving), `median` (worse than the median of earlier trials at the same step), `hyperband`, or `none`.",
    )
    pruning_warmup: float = Field(
        0.5, ge=0, lt=1,
        description="Share of each trial's steps it runs before it may be pruned: early validation numbers of a "
        "high learning rate often look no better than a useless one's (benchmarks/README.md, tuning_search.py).",
    )
    evaluations_per_trial: int = Field(
        4, ge=1, le=100, description="Validation evaluations spread over each trial: the points the pruner sees."
    )
    startup_trials: int = Field(
        3, ge=0, le=1000,
        description="Trials sampled at random before TPE models the space, and (median) run in full before pruning.",
    )
    trials: int | None = Field(
        12, ge=1, le=10_000,
        description="Trials the study runs in all (finished and pruned ones count, also across resumes). "
        "Empty with grid: the whole grid.",
    )
    timeout_minutes: float | None = Field(
        None, gt=0, description="No new trial starts after this many minutes of this run; running ones finish."
    )
    parallelism: int | None = Field(
        None, ge=1, le=256,
        description="Trials at once. Empty: one per GPU, or 1 on CPU. Above 1, each trial is a child process "
        "with its own GPU or its share of the cores.",
    )
    runner: Literal["threads", "dask", "ray"] = Field(
        "threads",
        description="Prefect task runner of the trials: `threads` on this machine, `dask` (prefect-dask) or `ray` "
        "(prefect-ray) on the cluster at cluster_address (the storage must then be reachable from the workers).",
    )
    cluster_address: str | None = Field(
        None, description="Dask scheduler or Ray address; empty: a local cluster of that kind."
    )
    study_name: str | None = Field(
        None, description="Name of the study; running a name again resumes it. Empty: `<registry.model_name>-tune`."
    )
    storage: str | None = Field(
        None,
        description="Optuna storage URL, e.g. postgresql://user@host/optuna. Empty: SQLite in the state folder "
        "(`tuning/optuna.db`).",
    )
    enqueue: list[dict[str, Scalar]] = Field(
        [], description="Parameter sets to try first, e.g. the production settings, as {path: value} maps."
    )
    seed: int = Field(0, description="Seed of the sampler.")
    preset_path: str | None = Field(
        None, description="Where to write the best config as YAML; empty: `tuning/<study>/best.yaml` in the state folder."
    )
    retrain_best: bool = Field(
        False, description="After the study, run `retrain` with the best config (through the normal gate)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        if not self.search_space:
            raise ValueError("search_space is empty: name at least one config path to search")
        for path in self.search_space:
            if path.split(".")[0] not in RetrainConfig.model_fields or path in ("task",):
                raise ValueError(f"search_space: {path!r} is not a retrain config path such as train.learning_rate")
            if path in _TRIAL_OWNED:
                raise ValueError(f"search_space: {path!r} is set by each trial and cannot be searched")
        for path, param in self.search_space.items():
            apply_params(self.retrain, {path: param.example()}, f"search_space.{path}")
        for number, params in enumerate(self.enqueue):
            unknown = sorted(set(params) - set(self.search_space))
            if unknown:
                raise ValueError(f"enqueue[{number}]: {unknown} not in search_space {sorted(self.search_space)}")
        task = self.retrain.task
        if self.metric not in kind(task).validation_metrics:
            raise ValueError(f"objective.metric {self.metric!r} is not reported for task {task}; "
                             f"choose one of {list(kind(task).validation_metrics)}")
        if self.algorithm == "grid":
            continuous = [path for path, param in self.search_space.items() if param.grid() is None]
            if continuous:
                raise ValueError(f"grid search needs discrete parameters; {continuous} are continuous: give them "
                                 "`choices` (categorical) or a `step` (uniform)")
        if self.runner == "threads" and self.cluster_address:
            raise ValueError("cluster_address needs runner dask or ray")
        return self

    @property
    def metric(self) -> str:
        return self.objective.metric or kind(self.retrain.task).tune_objective

    @property
    def direction(self) -> str:
        if self.objective.direction != "auto":
            return self.objective.direction
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    @property
    def name(self) -> str:
        return self.study_name or f"{self.retrain.registry.model_name}-tune"

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        folder = state_dir() / "tuning"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'optuna.db'}"

    def grid_size(self) -> int:
        return math.prod(len(param.grid()) for param in self.search_space.values())

    def budget(self) -> int:
        """Trials the study runs in all."""
        if self.algorithm == "grid":
            return min(self.trials or self.grid_size(), self.grid_size())
        return self.trials or 12

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_tune_config(path: Path | str | None = None, overrides: list[str] | None = None) -> TuneConfig:
    """A YAML tune config (optional) plus `key=value` overrides (`retrain.train.method=lora`, `trials=20`)."""
    return load_config(path, overrides, TuneConfig)


def apply_params(base: RetrainConfig, params: dict[str, Any], where: str = "trial") -> RetrainConfig:
    """`base` with each dotted path set to its value, validated again (a clear error names the path)."""
    raw = base.model_dump(mode="json")
    for path, value in params.items():
        node = raw
        parts = path.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{where}: {path!r} is not a path in the retrain config ({part!r} is not a section)")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"{where}: {path!r} is not a setting of the retrain config; "
                              f"{'.'.join(parts[:-1]) or 'the top level'} has {sorted(node)}")
        node[parts[-1]] = value
    try:
        return RetrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {params} gives an invalid retrain config: {describe_errors(exc)}") from None


def planned_steps(config: RetrainConfig, train_rows: int) -> int:
    """Optimizer steps `fine_tune` will take (as the Trainer counts them)."""
    train = config.train
    if train.max_steps:
        return train.max_steps
    per_epoch = max(1, math.ceil(train_rows / train.batch_size) // train.gradient_accumulation_steps)
    return max(1, math.ceil(per_epoch * train.epochs))


def trial_config(tune: TuneConfig, params: dict[str, Any], train_rows: int) -> RetrainConfig:
    """The retrain config of one trial: the sampled values, evaluations spread for the pruner, one process."""
    sampled = apply_params(tune.retrain, params)
    every = max(1, planned_steps(sampled, train_rows) // tune.evaluations_per_trial)
    train = sampled.train
    return apply_params(sampled, {"train.best_metric": tune.metric, "train.eval_steps": every,
                                  "train.save_steps": every if train.early_stopping_patience or train.save_steps else None,
                                  "train.processes": 1, "train.resume": False, "train.cv_folds": None})


# --- the study -----------------------------------------------------------------------------------------------

def make_sampler(tune: TuneConfig, trials_so_far: int = 0):
    """The algorithm's sampler. A resumed study seeds it past the trials it has, or it would repeat their draws."""
    import optuna

    seed = tune.seed + trials_so_far
    if tune.algorithm == "grid":
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study, trial, state, values):
                pass  # GridSampler stops an exhausted study, which only works inside optimize(); the flow caps trials

        return Grid({path: param.grid() for path, param in tune.search_space.items()}, seed=seed)
    if tune.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials, multivariate=True,
                                      constant_liar=True)  # constant liar: parallel trials do not all sample alike


def make_pruner(tune: TuneConfig):
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=0)
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto", reduction_factor=3)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _fingerprint(tune: TuneConfig, data_hash: str) -> dict[str, str]:
    """What a study must keep to stay one study: resuming with another space, metric or data is refused."""
    return {"search_space": json.dumps({k: v.model_dump() for k, v in sorted(tune.search_space.items())}),
            "objective": f"{tune.metric}:{tune.direction}", "task": tune.retrain.task, "data_hash": data_hash}


def open_study(tune: TuneConfig, data_hash: str):
    """Create the study, or load it to resume; refuse to resume one created for another search."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tuneline logs each trial itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE multivariate
    try:
        so_far = len(optuna.load_study(study_name=tune.name, storage=tune.storage_url()).trials)
    except KeyError:  # a new study
        so_far = 0
    study = optuna.create_study(study_name=tune.name, storage=tune.storage_url(), sampler=make_sampler(tune, so_far),
                                pruner=make_pruner(tune), direction=tune.direction, load_if_exists=True)
    expected = _fingerprint(tune, data_hash)
    recorded = study.user_attrs.get("tuneline")
    if recorded is None:
        study.set_user_attr("tuneline", expected)
    else:
        changed = [key for key in expected if recorded.get(key) != expected[key]]
        if changed:
            raise TuningError(f"study {tune.name!r} in {tune.storage_url()} was started with a different "
                              f"{' and '.join(changed)}; its trials would not be comparable. Resume it unchanged or "
                              "pick a new study_name.")
    for params in tune.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    return study


def recover_interrupted(study) -> list[int]:
    """Trials left RUNNING by a process that died: mark them failed and queue their parameters again."""
    from optuna.trial import TrialState

    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        numbers.append(trial.number)
    return numbers


def finished_trials(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def distributions(tune: TuneConfig) -> dict:
    return {path: param.distribution() for path, param in tune.search_space.items()}


def trial_slots(tune: TuneConfig) -> tuple[int, int]:
    """(trials at once, visible GPUs): `parallelism`, else one trial per GPU, else 1."""
    gpus = 0
    if tune.retrain.train.device != "cpu":
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return tune.parallelism or max(1, gpus), gpus


# --- one trial -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs, picklable, so it runs the same in a thread, a child process or a cluster worker."""

    number: int
    params: dict[str, Any]
    config: RetrainConfig
    splits: Any  # tuneline.data.SplitResult: train and validation rows
    tune: TuneConfig
    storage: str
    parent_run_id: str
    work_dir: Path
    gpu: int | None = None  # the CUDA device this trial owns
    threads: int | None = None  # CPU threads of an isolated trial
    isolate: bool = False  # run in a child process


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: Literal["complete", "pruned", "failed"]
    value: float | None  # the objective (complete) or the last reported value (pruned)
    steps: int
    seconds: float
    run_id: str
    error: str | None = None
    history: tuple[tuple[int, float], ...] = field(default=())  # (step, validation metric) as reported
    device: str = ""


def _pruning_callback(spec: TrialSpec):
    """A TrainerCallback reporting each validation evaluation to the Optuna trial; it stops a trial Optuna prunes."""
    import optuna
    from transformers import TrainerCallback

    storage = optuna.storages.get_storage(spec.storage)
    study = optuna.load_study(study_name=spec.tune.name, storage=storage, pruner=make_pruner(spec.tune))
    trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(spec.tune.name), spec.number))
    key = f"eval_{spec.tune.metric}"

    class Report(TrainerCallback):
        def __init__(self):
            self.pruned_at: int | None = None
            self.history: list[tuple[int, float]] = []  # (step, value) as reported

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.pruned_at is not None or not metrics or key not in metrics:
                return  # the evaluation after a prune, or one without the metric
            value, step = float(metrics[key]), state.global_step
            if self.history and self.history[-1][0] == step:
                return  # the final evaluation of fine_tune repeats the last step's
            self.history.append((step, value))
            trial.report(value, step)
            if step < spec.tune.pruning_warmup * state.max_steps:
                return  # too early to judge (pruning_warmup)
            if trial.should_prune():
                self.pruned_at = step
                log.info("trial %d pruned at step %d: validation %s %.4f", spec.number, step, spec.tune.metric, value)
                # Out of the Trainer at once: a pruned trial's final evaluation and saved model are never used.
                raise optuna.TrialPruned(f"pruned at step {step}")

    return Report()


def _train(spec: TrialSpec, run_id: str) -> TrialOutcome:
    """Fine-tune with the trial's config, reporting to Optuna; the model itself is not kept."""
    import optuna

    from tuneline.training.engine import fine_tune, mlflow_logger, pick_device

    started = time.perf_counter()
    callback = _pruning_callback(spec)
    try:
        result = fine_tune(spec.splits, spec.config.train, spec.work_dir, on_log=mlflow_logger(run_id),
                           task=spec.config.task, callbacks=[callback])
    except optuna.TrialPruned:
        return TrialOutcome(spec.number, "pruned", callback.history[-1][1], callback.pruned_at,
                            time.perf_counter() - started, run_id, history=tuple(callback.history),
                            device=pick_device(spec.config.train.device))
    metric = spec.tune.metric
    value = result.validation_loss if metric == "loss" else result.validation_metrics[metric]
    seconds = time.perf_counter() - started
    return TrialOutcome(spec.number, "complete", float(value), result.steps, seconds, run_id,
                        history=tuple(callback.history), device=result.device)


def _train_in_child(spec: TrialSpec, run_id: str) -> TrialOutcome:
    """`_train` in a child process that owns one GPU or a share of the cores; it dies with its parent."""
    spec.work_dir.mkdir(parents=True, exist_ok=True)
    job = spec.work_dir / "trial.pkl"
    job.write_bytes(pickle.dumps((spec, run_id)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if spec.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(spec.gpu)
    if spec.threads:
        env["OMP_NUM_THREADS"] = str(spec.threads)
    tail: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "tuneline.tuning.search", str(job)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=_die_with_parent) as child:
        for line in child.stdout:
            tail = (tail + [line.rstrip()])[-30:]
            if "tuneline" in line:
                log.info("trial %d | %s", spec.number, line.rstrip())
    outcome_file = spec.work_dir / "outcome.pkl"
    if child.returncode != 0 or not outcome_file.is_file():
        raise TuningError(f"trial {spec.number} process exited with {child.returncode}:\n" + "\n".join(tail))
    outcome = pickle.loads(outcome_file.read_bytes())
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _die_with_parent() -> None:
    """Linux: a killed tune process takes its trial processes with it (no orphan keeps training)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """One trial: an MLflow run nested under the study's, fine-tuning, Optuna reports; pruned or complete.

    Errors inside the trial are returned as a `failed` outcome (the study goes on), with the run marked FAILED.
    """
    from tuneline.registry import store as registry

    experiment = spec.config.registry.experiment
    run_id = registry.start_run(
        experiment, run_name=f"trial-{spec.number}", params=spec.params, config_yaml=spec.config.to_yaml(),
        tags={"mlflow.parentRunId": spec.parent_run_id, "optuna.study": spec.tune.name,
              "optuna.trial": str(spec.number), "gpu": "" if spec.gpu is None else str(spec.gpu)},
        on_created=note_mlflow_run)
    started = time.perf_counter()
    try:
        outcome = _train_in_child(spec, run_id) if spec.isolate else _train(spec, run_id)
    except Exception as error:
        if not isinstance(error, TunelineError) and type(error).__name__ != "OutOfMemoryError":
            registry.finish_run(run_id, failed=True, error=f"{type(error).__name__}: {error}")
            raise  # a bug or an unreachable service, not a property of these parameters
        message = f"{type(error).__name__}: {error}"
        log.warning("trial %d failed: %s", spec.number, message)
        registry.finish_run(run_id, failed=True, error=message)
        return TrialOutcome(spec.number, "failed", None, 0, time.perf_counter() - started, run_id, error=message)
    finally:
        shutil.rmtree(spec.work_dir, ignore_errors=True)  # trial models are not kept: retrain the best config
    registry.log_metrics(run_id, {f"objective_{spec.tune.metric}": outcome.value, "trial_seconds": outcome.seconds,
                                  "trial_steps": outcome.steps})
    registry.set_tags(run_id, {"optuna.state": outcome.state, "device": outcome.device})
    registry.finish_run(run_id)
    return outcome


# --- the study's results -------------------------------------------------------------------------------------

def top_trials(study, count: int = 10) -> list[dict[str, Any]]:
    """The best finished trials, best first, as table rows (pruned ones after complete ones)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    sign = -1 if study.direction.name == "MAXIMIZE" else 1

    def key(trial):
        value = trial.value if trial.state == TrialState.COMPLETE else None
        return (trial.state != TrialState.COMPLETE, sign * value if value is not None else 0.0)

    rows = []
    for trial in sorted(done, key=key)[:count]:
        last = max(trial.intermediate_values) if trial.intermediate_values else None
        value = trial.value if trial.value is not None else (trial.intermediate_values[last] if last is not None else None)
        rows.append({"trial": trial.number, "state": trial.state.name.lower(),
                     "value": None if value is None else round(value, 5), "steps": last,
                     "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
                     **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in trial.params.items()}})
    return rows


def best_config(study) -> RetrainConfig:
    """The retrain config of the best complete trial, exactly as it ran."""
    try:
        best = study.best_trial
    except ValueError:
        raise TuningError(f"study {study.study_name!r} has no complete trial yet: no best config") from None
    return RetrainConfig.model_validate(best.user_attrs["config"])


def write_preset(config: RetrainConfig, path: Path, study, metric: str) -> Path:
    """The best config as a YAML preset `tuneline retrain --config` loads."""
    best = study.best_trial
    header = (f"# Best trial {best.number} of study {study.study_name!r}: validation {metric} {best.value:.5f}\n"
              f"# Searched: {', '.join(f'{k}={v}' for k, v in best.params.items())}\n"
              f"# Retrain with it:  tuneline retrain --config {path.name}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + config.to_yaml())
    tmp.replace(path)  # never a half-written preset
    return path


def plot_study(study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances, parallel coordinates and pruning curves as PNGs.

    A plot that needs more than the study has (importances need two complete trials with varied values) is skipped.
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("optimization_history", plots.plot_optimization_history),
                       ("param_importances", plots.plot_param_importances),
                       ("parallel_coordinate", plots.plot_parallel_coordinate),
                       ("intermediate_values", plots.plot_intermediate_values)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log.info("study plot %s skipped: %s", name, exc)
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def _child_main(job: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec, run_id = pickle.loads(job.read_bytes())
    try:
        outcome: Any = _train(spec, run_id)
    except BaseException as error:  # handed back to the parent, which raises it
        try:
            pickle.dumps(error)
            outcome = error
        except Exception:
            outcome = TuningError(f"{type(error).__name__}: {error}")
    (job.parent / "outcome.pkl").write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    from tuneline.tuning import search as tuning  # the module itself, so what the child pickles names tuneline.tuning.search

    tuning._child_main(Path(sys.argv[1]))
