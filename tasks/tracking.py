"""Open and close the MLflow run that records one retrain; fill secrets from Prefect Secret blocks first."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.registry import tracking
from tuneline.config import RetrainConfig
from tuneline.settings import fill_secrets


def _secret_block(name: str) -> str | None:
    """The value of the Prefect Secret block `name`, or None when there is no such block."""
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name).get())
    except ValueError:  # "Unable to find block document named ..."
        return None


def load_secrets() -> list[str]:
    """Fill each unset secret variable (tuneline.settings.SECRET_VARIABLES) from its Prefect Secret block.

    Call at the start of a flow, before anything talks to MLflow or S3. A variable already set wins, so a
    worker's environment overrides the blocks. Only the variables' names are logged, never their values.
    """
    filled = fill_secrets(_secret_block)
    if filled:
        get_run_logger().info("set %s from Prefect Secret blocks", ", ".join(filled))
    return filled


@task(name="start-tracking", **TRANSIENT_RETRIES)
def start_tracking(config: RetrainConfig, run_name: str) -> str:
    """Create the MLflow run with the resolved config; return its id."""
    run_id, link = tracking.start_tracking(config, run_name)
    publish(link)
    return run_id


@task(name="finish-tracking", **TRANSIENT_RETRIES)
def finish_tracking(run_id: str, error: BaseException | None = None) -> None:
    """Mark the MLflow run FINISHED, or FAILED with the error that stopped the flow.

    With an error, this runs inside the flow's `except`: it must neither hide that error nor keep the flow
    waiting, so a failure here (a server that does not answer) is logged after one attempt, not retried, and
    the flow's own error goes on.
    """
    tracking.finish_tracking(run_id, error)
