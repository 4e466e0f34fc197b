"""What every tuneline task shares: retry only on transient faults; cache the data stages on data and config;
publish what a stage returns as Prefect artifacts."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.tasks import exponential_backoff

import tuneline
import tuneline.tasks
from tuneline.errors import is_transient
from tuneline.published import Link, Markdown, Published, Table


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry network and busy-server faults, never bad data or config."""
    try:
        state.result()
    except Exception as exc:  # the state holds the task's exception; re-raising is how Prefect hands it over
        return is_transient(exc)
    return False


def note_stage(task, _task_run, _state) -> None:
    """Prefect hook: the run's record on the state folder names the stage it is in, so that if the process dies
    here, the next run marks its MLflow run KILLED "during <stage>" (tuneline.runs)."""
    from tuneline.runs import note_stage as record

    record(task.name)


# Three retries 2, 4 and 8 s apart (each ±50%, so runs that failed together do not retry together): long enough
# to ride out a server restart, short enough that a run that cannot go on says so within a minute.
RETRIES: dict[str, Any] = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
                               retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient,
                               on_running=[note_stage])

# Stages that train, export or write to the registry are never cached: their inputs are run-scoped.
TRANSIENT_RETRIES: dict[str, Any] = dict(**RETRIES, cache_policy=NO_CACHE)


@functools.cache
def code_hash() -> str:
    """SHA-256 of the `tuneline` and `tasks` sources: a cached stage is recomputed whenever the code changes."""
    digest = hashlib.sha256()
    for package in (tuneline, tuneline.tasks):
        root = Path(package.__file__).parent
        for file in sorted(root.rglob("*.py")):
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def data_stage_cache(key: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
    """Task options for a data stage cached on `key(parameters)` (the data's hash plus the settings it reads).

    The key also holds the stage's name and `code_hash()`. Results are persisted to Prefect's result storage
    (`PREFECT_LOCAL_STORAGE_PATH`, by default under the state folder; a shared block such as S3 through
    `PREFECT_DEFAULT_RESULT_STORAGE_BLOCK` for workers on several machines), so a cache survives a restart.
    `key` returns None when it cannot name the input (a Hub dataset id, a missing file): that run is not cached.
    Failed runs are never cached. The run-scoped `run_id` parameter is not part of any key.
    """

    def cache_key(context, parameters: dict[str, Any]) -> str | None:
        part = key(parameters)
        if part is None:
            return None
        return hashlib.sha256(f"{context.task.name}\0{part}\0{code_hash()}".encode()).hexdigest()

    return dict(**RETRIES, cache_policy=CachePolicy.from_cache_key_fn(cache_key), persist_result=True)


def publish(*items: Published | None) -> None:
    """Each table, markdown or link a stage returned as the flow run's Prefect artifact (None: nothing to publish)."""
    for item in items:
        if isinstance(item, Table):
            create_table_artifact(item.rows, key=item.key, description=item.description)
        elif isinstance(item, Markdown):
            create_markdown_artifact(item.markdown, key=item.key, description=item.description)
        elif isinstance(item, Link):
            create_link_artifact(item.link, link_text=item.text)
