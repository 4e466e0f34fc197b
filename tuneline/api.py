"""The Python API: what the CLI's `retrain`, `tune` and `serve` do, as functions a notebook can call.

    import tuneline

    config = tuneline.load_config("configs/lora.yaml", ["train.epochs=2"])
    result = tuneline.retrain(config)            # RetrainResult: model_uri, version, alias, metrics
    model = tuneline.load_model(result.model_uri)
    model.predict(["a gripping, well acted film"])

`retrain` and `tune` run the same Prefect flows as the CLI, guarded the same way (tuneline.runs: the state folder
checked and locked, a killed run's leftovers closed, the log kept under `<state>/logs/`); a bad config or bad data
raises the same typed `TunelineError`, whose `log_path` says where the full log is. `load_model` runs the exported
ONNX model with onnxruntime and tokenizers, as `tuneline serve` does: no torch, no Prefect.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneline.errors import TunelineError

if TYPE_CHECKING:
    from tuneline.config import RetrainConfig
    from tuneline.serving.model import LoadedModel
    from tuneline.summary import RetrainSummary
    from tuneline.tuning.search import TuneConfig


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RetrainConfig:
    """The retrain config: defaults, then the YAML file at `path` (a preset under configs/, or your own), then
    `section.key=value` overrides. `ConfigError` names the file and each invalid field."""
    from tuneline.config import load_config as load

    return load(path, list(overrides))


def load_tune_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TuneConfig:
    """The tune config, read like `load_config` (`retrain.train.method=lora`, `trials=20`)."""
    from tuneline.tuning.search import load_tune_config as load

    return load(path, list(overrides))


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain run produced: the registered version, the alias it got and its test metrics."""

    model_uri: str  # models:/NAME/VERSION, for load_model, `tuneline serve --model` and mlflow.pyfunc.load_model
    name: str
    version: str
    alias: str  # champion, or challenger when the gate held it back
    metrics: dict[str, float]  # the PyTorch model's test metrics (accuracy, macro_f1 / mse / bleu, rouge...)
    run_id: str  # the MLflow run
    summary: RetrainSummary  # everything the run printed: data, variants, parity, gate reasons


def retrain(config: RetrainConfig | None = None) -> RetrainResult:
    """Run the retrain flow (ingest, validate, clean, split, fine-tune, evaluate, export, register, gate) on
    `config` (default: `load_config()`, the embedded default) and return the registered version."""
    from tuneline.data.loading import existing_data_path
    # Prefect sets up its console logging when imported: before flow_run adds the run's log file, or the console
    # shows none of the run's lines (tuneline.runs.captured_logs).
    from tuneline.flows.retrain import retrain as retrain_flow

    config = config if config is not None else load_config()
    with flow_run("retrain"):
        existing_data_path(config.data.path)  # a missing file is named at once, before Prefect's server starts
        summary = retrain_flow(config=config)
    return RetrainResult(model_uri=f"models:/{summary.model_name}/{summary.version}", name=summary.model_name,
                         version=summary.version, alias=summary.alias, metrics=dict(summary.torch_metrics),
                         run_id=summary.run_id, summary=summary)


def tune(config: TuneConfig | None = None):
    """Run a hyperparameter study (the tune flow) and return its summary: best trial, value and params, and the
    preset it wrote (`tuneline retrain --config <preset_path>`). Running the same study_name again resumes it."""
    from tuneline.flows.tune import tune as tune_flow

    config = config if config is not None else load_tune_config()
    with flow_run("tune"):
        return tune_flow(config=config)


class Model:
    """A registered version's exported model, loaded as the server loads it (INT8 ONNX when there is one).

    `predict(texts)` returns one dict per text, as `POST /predict` answers: `{"label", "score"}` (classification),
    `{"value"}` (regression) or `{"generated"}` (seq2seq, causal_lm; keyword arguments are decoding settings, e.g.
    `max_new_tokens=32`). Close it (or use `with`) to remove its downloaded files.
    """

    def __init__(self, loaded: LoadedModel):
        self._loaded = loaded
        self.name, self.version, self.task, self.labels = loaded.name, loaded.version, loaded.task, loaded.labels

    def predict(self, texts: str | list[str], **parameters: Any) -> list[dict[str, Any]]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"predict takes strings; text {bad[0]} is {type(texts[bad[0]]).__name__}")
        if self._loaded.decoding is not None:
            self._loaded.decoding(parameters)  # a bad decoding setting is refused before any text runs
        elif parameters:
            raise TypeError(f"a {self.task} model takes no parameters, got {sorted(parameters)}")
        return self._loaded.predict(texts, parameters, None) if texts else []

    def close(self) -> None:
        shutil.rmtree(self._loaded.folder, ignore_errors=True)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, version={self.version!r}, task={self.task!r})"


def load_model(uri: str, threads: int | None = None) -> Model:
    """The exported model of `models:/NAME@alias` or `models:/NAME/VERSION` from the registry at MLFLOW_TRACKING_URI
    (the embedded store by default); `RegistrationError` when the model, version or alias does not exist."""
    from tuneline.registry import store as registry
    from tuneline.serving.model import load_model as load
    from tuneline.serving.settings import ServeSettings

    try:
        name, reference = ServeSettings(model_uri=uri).reference()
    except ValueError as exc:
        from tuneline.errors import ConfigError

        raise ConfigError(f"load_model: {exc}".replace("--model ", "")) from None
    version = str(registry.resolve_version(name, reference).version)
    return Model(load(name, version, threads))


# --- what every flow run from the CLI or the API goes through -------------------------------------------------------


@contextmanager
def flow_run(command: str) -> Iterator[None]:
    """A flow run: its Prefect server checked first, alone on its state folder and watched (tuneline.runs), logged
    to `<state>/logs/`. A typed error carries where that log is (`log_path`); a Prefect server lost mid-run is a
    `PrefectServerError` saying what that means."""
    from tuneline.runs import captured_logs, log_file, run_guard

    named_prefect_answers()
    with run_guard(command) as home, captured_logs(log_file(home, command)) as log:
        try:
            with prefect_server_lost():
                yield
        except TunelineError as exc:
            exc.log_path = log
            raise


def named_prefect_answers() -> None:
    """With PREFECT_API_URL set, its server must answer before a flow starts: else a ConfigError says so at once,
    instead of Prefect's client failing with a traceback after its own retries."""
    from tuneline.settings import answering_prefect_api

    if os.environ.get("PREFECT_API_URL"):
        answering_prefect_api(os.environ["PREFECT_API_URL"])


@contextmanager
def prefect_server_lost() -> Iterator[None]:
    """A Prefect server that stops answering mid-run ends the run with what that means, not an httpx traceback.

    Prefect 3 runs tasks client-side, so the flow goes on until a task needs the API (an artifact) or the run's
    end is recorded; each call gives up after PREFECT_CLIENT_MAX_RETRIES tries (default 5, about a minute).
    """
    from tuneline.errors import PrefectServerError, is_transient
    from tuneline.settings import redact, state_dir

    try:
        yield
    except Exception as exc:
        api = os.environ.get("PREFECT_API_URL")
        if not api or not (type(exc).__module__.startswith(("httpx", "httpcore")) and is_transient(exc)):
            raise
        raise PrefectServerError(
            f"the Prefect server at PREFECT_API_URL={redact(api)} stopped answering during the run "
            f"({type(exc).__name__}: {redact(str(exc))}), after its client's retries (PREFECT_CLIENT_MAX_RETRIES). "
            f"Prefect could not record how the run ended. What the run did in MLflow stands (its MLflow run says "
            f"FINISHED or FAILED); a run that did not finish keeps its files under {state_dir() / 'runs'}. "
            "Start the Prefect server, then run again.") from exc
