"""Open and close the MLflow run that records one retrain."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import RetrainConfig
from tuneline.settings import tracking_uri


@task(name="start-tracking", **TRANSIENT_RETRIES)
def start_tracking(config: RetrainConfig, run_name: str) -> str:
    """Create the MLflow run with the resolved config; return its id."""
    run_id = registry.start_run(
        config.registry.experiment,
        run_name=run_name,
        params=config.flat(),
        config_yaml=config.to_yaml(),
        tags={"code_version": registry.code_version(), "base_model": config.train.base_model,
              "orchestrator": "prefect"},
    )
    uri = tracking_uri()
    if uri.startswith("http"):
        experiment = registry.ensure_experiment(config.registry.experiment)
        create_link_artifact(f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}", link_text="MLflow run")
    return run_id


@task(name="finish-tracking", **TRANSIENT_RETRIES)
def finish_tracking(run_id: str, error: BaseException | None = None) -> None:
    """Mark the MLflow run FINISHED, or FAILED with the error that stopped the flow."""
    registry.finish_run(run_id, failed=error is not None, error=None if error is None else f"{type(error).__name__}: {error}")
