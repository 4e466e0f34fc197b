"""MLflow tracking and the Model Registry: runs, versions, aliases.

Every call names its run explicitly (no reliance on MLflow's thread-local
"active run"), because Prefect may run tasks on different threads.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tuneline.kinds import kind
import tuneline
from tuneline.errors import RegistrationError, TrackingServerError, is_unreachable
from tuneline.settings import PROJECT_ROOT, artifact_location, bound_service_calls, public_tracking_uri, redact, \
    refuse_secrets, state_dir, tracking_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str  # models:/m-<id>, where the files live


def client() -> MlflowClient:
    bound_service_calls()  # a dead server fails a call in seconds, also outside the flows (CLI, serving)
    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def local_files(run_id: str) -> Path:
    """Where a run keeps its files until it succeeds (`state_dir()/runs/<run_id>`: the trained model, ONNX files)."""
    return state_dir() / "runs" / run_id


@contextmanager
def reaching_server(doing: str, run_id: str | None = None) -> Iterator[None]:
    """Turn "the MLflow server gave no answer" into a TrackingServerError that says which server, what was being
    done and where the run's files are; it stays transient, so Prefect still retries the task.

    Only unreachable-server failures are translated: a refused request (bad name, missing version) passes as is.
    """
    try:
        yield
    except MlflowException as exc:
        if not is_unreachable(exc):
            raise
        root = exc  # the socket-level cause says most: refused, reset, timed out
        for _ in range(16):
            root = root.__cause__ or root.__context__ or root
        kept = ""
        if run_id and local_files(run_id).is_dir():
            kept = (f" Nothing of run {run_id} is lost: its local files (model, ONNX files) are kept in "
                    f"{local_files(run_id)}.")
        raise TrackingServerError(
            f"the MLflow server at {public_tracking_uri()} is unreachable while {doing} "
            f"({redact(f'{type(root).__name__}: {root}')[:300]}), after "
            f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '7')} retries "
            f"(MLFLOW_HTTP_REQUEST_MAX_RETRIES).{kept} Start the server or fix MLFLOW_TRACKING_URI, then run again."
        ) from exc


def _point_fluent_api_at_store() -> None:
    """log_model and models:/ URIs go through MLflow's global URIs; make them ours."""
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())


def code_version() -> str:
    """The git commit of the checkout (with `-dirty` for local changes), else the package version."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"tuneline=={tuneline.__version__}"


def ensure_experiment(name: str) -> str:
    """The experiment's id, creating it (with the local artifact root when embedded) if missing."""
    with reaching_server(f"looking up experiment {name!r}"):
        mlflow_client = client()
        existing = mlflow_client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        try:
            return mlflow_client.create_experiment(name, artifact_location=artifact_location())
        except MlflowException as exc:  # another process created it between our lookup and our create
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return mlflow_client.get_experiment_by_name(name).experiment_id


def start_run(experiment: str, run_name: str, params: dict[str, Any], config_yaml: str, tags: dict[str, str],
              on_created: Callable[[str], None] | None = None) -> str:
    """Open a tracked run holding the resolved config (as params and as config.yaml); return its id.

    `on_created(run_id)` runs as soon as the run exists, before anything is logged to it: the CLI passes
    `tuneline.runs.note_mlflow_run`, so a process that dies with the run open leaves its id for the next run to close.

    A run started from the Prefect UI never passed through `load_config`: its parameters are checked for
    credentials here, before anything is written to MLflow.
    """
    refuse_secrets(params, f"the parameters of run {run_name!r}")
    experiment_id = ensure_experiment(experiment)
    with reaching_server(f"opening a run in experiment {experiment!r}"):
        mlflow_client = client()
        run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
    if on_created is not None:
        on_created(run_id)
    with reaching_server("logging the run's config", run_id):
        # MLflow caps a param value at 6000 characters; a long label list is still logged whole in config.yaml.
        mlflow_client.log_batch(
            run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        )
        mlflow_client.log_text(run_id, config_yaml, "config.yaml")
    return run_id


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    now = int(time.time() * 1000)
    entities = [mlflow.entities.Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    names = ", ".join(list(metrics)[:3]) + (", ..." if len(metrics) > 3 else "")
    with reaching_server(f"logging metrics ({names})", run_id):
        for start in range(0, len(entities), 900):  # log_batch takes at most 1000 metrics
            client().log_batch(run_id, metrics=entities[start : start + 900])


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    with reaching_server("tagging the run", run_id):
        client().log_batch(run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in tags.items()])


def log_artifact(run_id: str, path: Path, folder: str | None = None) -> None:
    with reaching_server(f"uploading {path.name}", run_id):
        client().log_artifact(run_id, str(path), folder)


def log_json(run_id: str, payload: Any, name: str) -> None:
    with reaching_server(f"uploading {name}", run_id):
        client().log_text(run_id, json.dumps(payload, indent=2, default=str), name)


def log_datasets(run_id: str, frames: dict[str, pd.DataFrame], source: str) -> None:
    """Record each split as an `mlflow.data` input of the run, so the MLflow UI shows what it trained and tested on."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for context, frame in frames.items():
        with warnings.catch_warnings():  # a local path matches two equivalent source types; either is right
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame[["text", "label"]], source=source,
                                              name=f"{Path(source).stem}-{context}", targets="label")
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
    with reaching_server("logging the run's datasets", run_id):
        client().log_inputs(run_id, datasets=inputs)


def finish_run(run_id: str, failed: bool = False, error: str | None = None) -> None:
    """Mark the run FINISHED or FAILED, keeping the error message (credentials redacted) as a tag."""
    with reaching_server(f"marking the run {'FAILED' if failed else 'FINISHED'}", run_id):
        mlflow_client = client()
        if error:
            mlflow_client.set_tag(run_id, "error", redact(error)[:5000])
        mlflow_client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")


def _signature(task: str = "classification"):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec(dtype, name) for name, dtype in kind(task).outputs]
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema(outputs))


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("onnxruntime", "tokenizers", "numpy", "pandas", "mlflow")]


def register_model(
    run_id: str,
    model_name: str,
    model_dir: Path,
    onnx_path: Path,
    int8_path: Path | None,
    max_length: int,
    tags: dict[str, Any],
    description: str,
    extras: dict[str, Path] | None = None,
    task: str = "classification",
    generation: dict[str, Any] | None = None,
    same_as: dict[str, str] | None = None,
) -> RegisteredVersion:
    """Log the model files as one MLflow model, then create the registry version in a single call.

    The version carries the HF model and tokenizer (safetensors), model.onnx,
    model.int8.onnx, model_card.md (= `description`), and `tags` (lineage, metrics). Either the whole
    version exists afterwards, or none does. MLflow keeps each file's or
    folder's own name under `artifacts/`, so pass them named `hf_model/`,
    `model.onnx` and `model.int8.onnx`: that is the layout serving reads. `extras` adds more
    files or folders under their own names (`model.int8.pt`, `triton/`), keyed by artifact name.
    A generative model's ONNX files are the folders `generator/` and `generator.int8/`, and
    `generation` (the decoding settings) travels in the model's config.

    Idempotent: a run registers one version. When a version of this run (or one carrying every tag in
    `same_as`, e.g. the same re-export of the same source) exists, it is returned and nothing is logged. When an
    earlier attempt logged the model but failed before creating the version, its finished upload is re-used.
    Attempts that race each other leave one version (`_keep_first`).
    """
    generative = kind(task).generative
    fp32_name, int8_name = ("generator", "generator.int8") if generative else ("model.onnx", "model.int8.onnx")
    expected = {"hf_model": model_dir.name, fp32_name: onnx_path.name}
    if int8_path is not None:
        expected[int8_name] = int8_path.name
    misnamed = {want: got for want, got in expected.items() if want != got}
    if misnamed:
        raise RegistrationError(f"model files must be named {sorted(misnamed)}, got {sorted(misnamed.values())}")
    artifacts = {"hf_model": str(model_dir), "onnx": str(onnx_path)}
    if int8_path is not None:
        artifacts["onnx_int8"] = str(int8_path)
    card = model_dir.parent / "model_card.md"  # `description` travels with the files too
    card.write_text(description)
    artifacts["model_card"] = str(card)
    artifacts |= {key: str(path) for key, path in (extras or {}).items()}
    with reaching_server(f"registering a version of {model_name!r}", run_id):
        earlier = find_versions(model_name, run_id, same_as)
        if earlier:  # a retried or re-run registration: the version exists already
            log.info("%s version %s already holds run %s%s: not registering it again", model_name, earlier[0].version,
                     run_id, f" ({same_as})" if same_as else "")
            return RegisteredVersion(model_name, str(earlier[0].version), earlier[0].run_id, earlier[0].source)
        logged = _finished_logged_model(run_id)
        if logged is not None:  # an earlier attempt uploaded the files, then failed before the version existed
            log.info("re-using model %s that an earlier attempt logged in run %s", logged.model_id, run_id)
            model_id, model_uri = logged.model_id, logged.model_uri
        else:
            model_id, model_uri = _log_model(run_id, artifacts, max_length, task, generation)
        mlflow_client = client()
        try:
            mlflow_client.create_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            version = mlflow_client.create_model_version(
                model_name,
                source=model_uri,
                run_id=run_id,
                tags={k: str(v) for k, v in tags.items()},
                description=description,
                model_id=model_id,
            )
        except MlflowException as exc:
            if is_unreachable(exc):
                raise  # transient: the task's retry finds the logged model, or the version if it was created
            raise RegistrationError(f"could not create a version of {model_name!r}: {exc}") from exc
        return _keep_first(model_name, run_id, same_as, version, model_id)


def find_versions(model_name: str, run_id: str | None, same_as: dict[str, str] | None = None) -> list:
    """The versions of `model_name` registered from `run_id`, or carrying every tag in `same_as`; oldest first."""
    searches = [f"name = '{model_name}' AND run_id = '{run_id}'"] if run_id else []
    if same_as:
        searches.append(" AND ".join([f"name = '{model_name}'"] + [f"tags.`{key}` = '{value}'" for key, value in same_as.items()]))
    found = {}
    for search in searches:
        for version in client().search_model_versions(search):
            found[int(version.version)] = version
    return [found[number] for number in sorted(found)]


def _finished_logged_model(run_id: str):
    """The MLflow model this run logged under `model/` whose upload finished (status READY), or None."""
    from mlflow.entities import LoggedModelStatus

    mlflow_client = client()
    experiment_id = mlflow_client.get_run(run_id).info.experiment_id
    logged = mlflow_client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_ARTIFACT}'")
    ready = [model for model in logged if model.status == LoggedModelStatus.READY]
    return min(ready, key=lambda model: model.creation_timestamp) if ready else None


def _log_model(run_id: str, artifacts: dict[str, str], max_length: int, task: str,
               generation: dict[str, Any] | None) -> tuple[str, str]:
    """Log the files as one pyfunc MLflow model in the run; return its model id and `models:/m-<id>` URI."""
    _point_fluent_api_at_store()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            # Models from code: the file is stored with the model, no cloudpickle of a live object.
            python_model=str(Path(__file__).parents[1] / "runtime" / "pyfunc.py"),
            artifacts=artifacts,
            signature=_signature(task),
            # MLflow loads the logged model and predicts on this: a model that cannot serve is never registered.
            input_example=pd.DataFrame({"text": ["a short example review"]}),
            pip_requirements=_requirements(),
            model_config={"max_length": max_length, "task": task, "generation": generation or {}},
        )
    return info.model_id, info.model_uri


def _keep_first(model_name: str, run_id: str, same_as: dict[str, str] | None, version, model_id: str) -> RegisteredVersion:
    """Two attempts that raced past the lookup both created a version: the oldest stays, the others delete themselves.

    Every racer sees the same oldest version (version numbers grow with creation), and each deletes only its own,
    so exactly one version is left whatever the interleaving.
    """
    first = find_versions(model_name, run_id, same_as)[0]
    if str(first.version) == str(version.version):
        log.info("registered %s version %s (%s)", model_name, version.version, version.source)
        return RegisteredVersion(model_name, str(version.version), run_id, version.source)
    mlflow_client = client()
    mlflow_client.delete_model_version(model_name, str(version.version))
    if first.source != version.source:
        try:
            mlflow_client.delete_logged_model(model_id)
        except MlflowException as exc:  # an orphaned copy of the files is untidy, not wrong
            log.warning("could not delete the unused logged model %s: %s", model_id, exc.message)
    log.info("%s version %s was registered for run %s at the same time: version %s withdrawn", model_name,
             first.version, run_id, version.version)
    return RegisteredVersion(model_name, str(first.version), first.run_id, first.source)


def version_by_alias(model_name: str, alias: str):
    """The version holding `alias`, or None when no version does (or the model is not registered)."""
    with reaching_server(f"looking up {model_name}@{alias}"):
        try:
            return client().get_model_version_by_alias(model_name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise


def resolve_version(model_name: str, alias_or_version: str):
    """The registry entry of a version number or alias; RegistrationError saying which does not exist."""
    try:
        if alias_or_version.isdigit():
            with reaching_server(f"looking up {model_name} version {alias_or_version}"):
                return client().get_model_version(model_name, alias_or_version)
        entry = version_by_alias(model_name, alias_or_version)
    except MlflowException as exc:
        raise RegistrationError(f"model {model_name!r} has no version {alias_or_version!r}: {exc.message}") from None
    if entry is None:
        raise RegistrationError(f"no version of model {model_name!r} holds alias {alias_or_version!r}")
    return entry


def actor() -> str:
    """Who moves an alias: `$TUNELINE_ACTOR` (set it in CI or a deployment), else the OS user."""
    import getpass

    return os.environ.get("TUNELINE_ACTOR") or getpass.getuser()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _tag_version(model_name: str, version: str, tags: dict[str, str]) -> None:
    mlflow_client = client()
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(model_name, version, key, value)


def set_version_tags(model_name: str, version: str, tags: dict[str, Any]) -> None:
    """Record lineage on a registered version (a sign-off, a decision), values as strings."""
    _tag_version(model_name, str(version), {key: str(value) for key, value in tags.items()})


def move_alias(model_name: str, alias: str, version: str, reason: str, keep_previous: bool = False) -> str | None:
    """Point `alias` at `version`, recording the move as tags on both versions; return the version it left.

    The new holder gets `<alias>.since/.by/.reason/.previous`; the old holder
    gets `<alias>.until/.replaced_by`, so history survives later moves.
    `keep_previous` leaves the new holder's recorded `.previous` as it was
    (a rollback restores a version together with its own history).
    """
    mlflow_client = client()
    version = str(version)
    leaving = version_by_alias(model_name, alias)
    left = str(leaving.version) if leaving is not None else None
    now = _now()
    tags = {f"{alias}.since": now, f"{alias}.by": actor(), f"{alias}.reason": reason}
    if not keep_previous:
        tags[f"{alias}.previous"] = left or ""
    _tag_version(model_name, version, tags)
    if left is not None and left != version:
        _tag_version(model_name, left, {f"{alias}.until": now, f"{alias}.replaced_by": version})
    mlflow_client.set_registered_model_alias(model_name, alias, version)
    if alias == CHAMPION:
        holder = version_by_alias(model_name, CHALLENGER)
        if holder is not None and str(holder.version) == version:  # a champion is no longer a challenger
            mlflow_client.delete_registered_model_alias(model_name, CHALLENGER)
    return left


def rollback(model_name: str, reason: str) -> tuple[str, str]:
    """Move `champion` back to the version that held it before; return (from, to) versions."""
    current = version_by_alias(model_name, CHAMPION)
    if current is None:
        raise RegistrationError(f"{model_name!r} has no champion to roll back")
    previous = current.tags.get(f"{CHAMPION}.previous")
    if not previous:
        raise RegistrationError(
            f"{model_name!r} version {current.version} has no earlier champion recorded; "
            f"promote a version explicitly with `tuneline promote {model_name} --version N`"
        )
    move_alias(model_name, CHAMPION, previous, f"rollback from version {current.version}: {reason}", keep_previous=True)
    _tag_version(model_name, str(current.version),
                 {"rolled_back.at": _now(), "rolled_back.by": actor(), "rolled_back.reason": reason})
    return str(current.version), previous


def list_versions(model_name: str) -> list[dict[str, str]]:
    """One row per version, newest first: aliases, test metrics of both models, lineage."""
    mlflow_client = client()
    # search_model_versions leaves `aliases` empty; the registered model holds the alias map.
    aliases: dict[str, list[str]] = {}
    for alias, holder in mlflow_client.get_registered_model(model_name).aliases.items():
        aliases.setdefault(str(holder), []).append(alias)
    rows = []
    for version in mlflow_client.search_model_versions(f"name='{model_name}'"):
        tags = version.tags
        code = tags.get("code_version", "")
        rows.append({
            "version": str(version.version),
            "aliases": ",".join(sorted(aliases.get(str(version.version), []))),
            "created": datetime.fromtimestamp(version.creation_timestamp / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "test accuracy": tags.get("test.accuracy", "")[:6],
            "int8 accuracy": tags.get("int8.test.accuracy", "")[:6],
            "macro-F1": tags.get("test.macro_f1", "")[:6],
            "rows train/val/test": "/".join(tags.get(f"rows.{s}", "?") for s in ("train", "validation", "test")),
            "data hash": tags.get("data.hash", "")[:12],
            "code": code if "==" in code else code[:12] + ("-dirty" if code.endswith("-dirty") else ""),
            "champion since": tags.get("champion.since", ""),
        })
    return sorted(rows, key=lambda row: int(row["version"]), reverse=True)


def download_version(model_name: str, alias_or_version: str, destination: Path | None = None) -> Path:
    """Download a version's files (hf_model/, model.onnx, model.int8.onnx); return the artifacts folder."""
    reference = f"@{alias_or_version}" if not alias_or_version.isdigit() else f"/{alias_or_version}"
    return download_model(f"models:/{model_name}{reference}", destination)


def download_model(model_uri: str, destination: Path | None = None) -> Path:
    """Download `models:/NAME@alias` or `models:/NAME/VERSION`; return its artifacts folder."""
    _point_fluent_api_at_store()
    destination = destination or Path(tempfile.mkdtemp(prefix="tuneline-model-"))
    with reaching_server(f"downloading {model_uri}"):
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination))
    return Path(local) / "artifacts"


def _version_repository(model_name: str, version: str):
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    _point_fluent_api_at_store()
    return ModelsArtifactRepository(f"models:/{model_name}/{version}")


def list_version_files(model_name: str, version: str, folder: str = "artifacts") -> list[str]:
    """Paths directly under `folder` of a version's MLflow model (`artifacts/model.int8.onnx`, `artifacts/hf_model`)."""
    return [entry.path for entry in _version_repository(model_name, version).list_artifacts(folder)]


def download_version_files(model_name: str, version: str, paths: list[str], destination: Path) -> Path:
    """Download only `paths` of a version (relative to its MLflow model: `MLmodel`, `artifacts/hf_model/config.json`,
    a folder downloads whole), laid out as in the registry under `destination`; return `destination`."""
    repository = _version_repository(model_name, version)
    for path in paths:
        repository.download_artifacts(path, str(destination))
    return destination
