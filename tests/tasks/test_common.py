"""Retries happen for transient faults only, through Prefect's real task engine."""

import pytest
from prefect import flow, task
from prefect.runtime import task_run

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.errors import DataValidationError

ATTEMPTS: dict[str, int] = {}


@task(**(TRANSIENT_RETRIES | {"retry_delay_seconds": 0}))
def flaky(kind: str) -> int:
    ATTEMPTS[kind] = task_run.run_count
    if kind == "network" and task_run.run_count < 2:
        raise ConnectionResetError("connection reset by peer")
    if kind == "bad-data":
        raise DataValidationError("label 'x' not allowed", failures=[])
    return task_run.run_count


@flow
def call(kind: str) -> int:
    return flaky(kind)


def test_a_network_fault_is_retried(prefect_harness):
    assert call("network") == 2


def test_bad_data_fails_at_once(prefect_harness):
    with pytest.raises(DataValidationError):
        call("bad-data")
    assert ATTEMPTS["bad-data"] == 1
