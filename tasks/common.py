"""What every tuneline task shares: retry only on transient faults."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from tuneline.errors import is_transient


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry network and busy-server faults, never bad data or config."""
    try:
        state.result()
    except Exception as exc:  # the state holds the task's exception; re-raising is how Prefect hands it over
        return is_transient(exc)
    return False


# Tasks pass in-memory frames and run-scoped MLflow ids, so nothing is cached yet:
# re-using a result across runs needs persisted results keyed on data hash + config.
TRANSIENT_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
