"""Ingest, validate, clean and split are cached on the data's hash plus their settings, in persistent storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

from tuneline.flows.retrain import prepare_data
from tests.conftest import make_reviews
from tuneline.registry import store as registry
from tuneline.config import load_config
from tuneline.settings import PROJECT_ROOT

DATA_STAGES = ("ingest", "validate", "clean", "split")


@flow(name="data-stages")
def data_flow(config, run_id: str) -> str:
    _, _, _, splits = prepare_data(config, run_id)
    return splits.hashes["test"]


def stage_states(config) -> dict[str, str]:
    """Run the data stages in a new flow run with a new MLflow run; the state name of each task run."""
    run_id = registry.start_run("caching", "test", params={}, config_yaml="", tags={})
    state = data_flow(config, run_id, return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    names = {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}
    names["mlflow_run"] = run_id
    return names


def _config(path, *extra):
    return load_config(overrides=[f"data.path={path}", "split.train_fraction=0.6", "split.validation_fraction=0.2",
                                  "split.test_fraction=0.2", *extra])


@pytest.fixture
def reviews(tmp_path):
    path = tmp_path / "reviews.csv"
    make_reviews(40).to_csv(path, index=False)
    return path


def test_a_rerun_with_the_same_data_and_settings_is_cached(prefect_harness, state, reviews):
    first = stage_states(_config(reviews))
    assert [first[s] for s in DATA_STAGES] == ["Completed"] * 4

    second = stage_states(_config(reviews))
    assert [second[s] for s in DATA_STAGES] == ["Cached"] * 4
    assert second["record-data"] == "Completed"  # every run still gets its own lineage
    run = registry.client().get_run(second["mlflow_run"])
    assert run.data.tags["data.hash"] and run.data.tags["validation.success"] == "True"
    assert run.data.metrics["rows_raw"] == 80
    assert {a.path for a in registry.client().list_artifacts(second["mlflow_run"], "data")} >= {"data/test.csv",
                                                                                                 "data/calibration.csv"}
    # The split's checks come with the cached split: the run logs them without checking again.
    checks = registry.client().download_artifacts(second["mlflow_run"], "validation/split_checks.json")
    assert json.loads(Path(checks).read_text())["success"] is True

    # Another split seed: the data stages before it are still valid; the split is computed again.
    reseeded = stage_states(_config(reviews, "split.seed=7"))
    assert [reseeded[s] for s in DATA_STAGES] == ["Cached", "Cached", "Cached", "Completed"]

    # New bytes in the file: everything from ingest on is computed again.
    frame = make_reviews(40)
    frame.loc[0, "text"] = "item 0 is great and I am very happy"
    frame.to_csv(reviews, index=False)
    changed = stage_states(_config(reviews))
    assert [changed[s] for s in DATA_STAGES] == ["Completed"] * 4

    # data.cache=false recomputes (and refreshes the cache) even though nothing changed.
    refreshed = stage_states(_config(reviews, "data.cache=false"))
    assert [refreshed[s] for s in DATA_STAGES] == ["Completed"] * 4


def test_a_failed_validation_is_not_cached(prefect_harness, state, tmp_path):
    frame = make_reviews(40)
    frame.loc[3, "text"] = None
    path = tmp_path / "broken.csv"
    frame.to_csv(path, index=False)
    for _ in range(2):  # the second run validates again and fails again: nothing remembered a failure
        run_id = registry.start_run("caching", "test", params={}, config_yaml="", tags={})
        state_ = data_flow(_config(path), run_id, return_state=True)
        assert state_.is_failed()
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state_.state_details.flow_run_id])))
        states = {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}
        assert states["ingest"] in {"Completed", "Cached"} and states["validate"] == "Failed"


RERUN = """
import json, sys
from tests.reliability.test_caching import _config, stage_states
print(json.dumps(stage_states(_config(sys.argv[1]))))
"""


def test_the_cache_survives_a_restart(prefect_harness, state, reviews):
    first = stage_states(_config(reviews))
    assert first["split"] == "Completed"
    # A new process: a new Prefect (ephemeral) server and an empty memory; only the result storage is shared.
    env = os.environ | {"PREFECT_LOCAL_STORAGE_PATH": str(PREFECT_LOCAL_STORAGE_PATH.value()),
                        "PREFECT_HOME": str(state / "other-prefect-home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-c", RERUN, str(reviews)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    states = json.loads(done.stdout.strip().splitlines()[-1])
    assert [states[s] for s in DATA_STAGES] == ["Cached"] * 4
