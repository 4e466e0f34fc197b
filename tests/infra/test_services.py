"""Real servers: infra/services.sh starts Prefect and MLflow on 127.0.0.1; the CLI's flow runs against them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def services(tmp_path):
    prefect_port, mlflow_port = _free_port(), _free_port()
    env = os.environ | {
        "TUNELINE_HOME": str(tmp_path / "services-home"),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(mlflow_port),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(name, None)
    script = str(ROOT / "infra" / "services.sh")
    try:
        started = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
    finally:
        subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=60)


def test_retrain_against_real_prefect_and_mlflow_servers(services, tmp_path):
    prefect_url, mlflow_url = services
    env = os.environ | {
        "TUNELINE_HOME": str(tmp_path / "client"),
        "PREFECT_API_URL": prefect_url,
        "MLFLOW_TRACKING_URI": mlflow_url,
    }
    env.pop("PREFECT_HOME", None)
    cli = str(Path(sys.executable).with_name("tuneline"))
    run = subprocess.run(
        # 2 steps: near chance, so the INT8 accuracy check (tested on its own) must not decide the outcome
        [cli, "retrain", "train.max_steps=2", "train.max_length=64", "registry.model_name=served-e2e",
         "export.max_accuracy_drop=1.0"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    registry = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    champion = registry.get_model_version_by_alias("served-e2e", "champion")
    assert champion.tags["validation.success"] == "True" and champion.tags["data.hash"]
    names = {a.path for a in registry.list_artifacts(champion.run_id)}
    assert {"config.yaml", "summary.md", "evaluation"} <= names
    flow_runs = httpx.post(f"{prefect_url}/flow_runs/filter", json={"limit": 5}).json()
    assert [(r["state_type"]) for r in flow_runs] == ["COMPLETED"]
    # Embedded stores were not touched: everything went to the servers.
    assert not (tmp_path / "client" / "mlflow.db").exists()
