"""The real services, started once for the tests of this folder that need them.

`services` runs infra/services.sh (a Prefect server, an MLflow server and a process worker on free
loopback ports, all state in a temporary folder) and stops it after the folder's last test.
`deployed` registers the deployments with `tuneline deploy`: deployments/prefect.yaml with the
retrain presets shrunk to a 240-row slice and 3 training steps, so a run takes about a minute.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "services.sh"
DEPLOYED_MODEL = "deployed-e2e"
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class Services:
    prefect_api: str
    mlflow_uri: str
    home: Path
    env: dict[str, str]  # for CLI calls against these services

    def cli(self, *arguments: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
        """Run `tuneline ARGUMENTS` against the services."""
        command = [str(Path(sys.executable).with_name("tuneline")), *arguments]
        return subprocess.run(command, env=self.env | extra_env, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)

    def deployment(self, flow: str, name: str) -> dict:
        response = httpx.get(f"{self.prefect_api}/deployments/name/{flow}/{name}", timeout=10)
        response.raise_for_status()
        return response.json()

    def flow_runs(self, **criteria) -> list[dict]:
        response = httpx.post(f"{self.prefect_api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC",
                                                                              **criteria}, timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_for_run(self, run_id: str, timeout: float = 420) -> dict:
        """Poll a flow run until it reaches a final state; fail with its logs' end if it does not complete."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = httpx.get(f"{self.prefect_api}/flow_runs/{run_id}", timeout=10).json()
            if run["state_type"] in FINAL_STATES:
                if run["state_type"] != "COMPLETED":
                    pytest.fail(f"flow run {run['name']} ended {run['state_name']}:\n{self.logs(run_id)[-3000:]}")
                return run
            time.sleep(2)
        pytest.fail(f"flow run {run_id} did not finish in {timeout:.0f} s (state {run['state_name']}); "
                    f"worker log: {(self.home / 'services' / 'worker.log').read_text()[-2000:]}")

    def logs(self, run_id: str) -> str:
        response = httpx.post(f"{self.prefect_api}/logs/filter",
                              json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}, timeout=10)
        return "\n".join(entry["message"] for entry in response.json())


@pytest.fixture(scope="package")
def services(tmp_path_factory) -> Services:
    home = tmp_path_factory.mktemp("services-home")
    prefect_port, mlflow_port = free_port(), free_port()
    env = os.environ | {
        "TUNELINE_HOME": str(home),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(mlflow_port),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        # The worker looks for runs every 2 s instead of 10: the tests wait less.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(name, None)
    try:
        started = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        prefect_api, mlflow_uri = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
        assert f"export PREFECT_API_URL={prefect_api} MLFLOW_TRACKING_URI={mlflow_uri}" in started.stdout
        client_env = os.environ | {"TUNELINE_HOME": str(home / "client"), "PREFECT_API_URL": prefect_api,
                                   "MLFLOW_TRACKING_URI": mlflow_uri, "PREFECT_HOME": str(home / "client-prefect")}
        yield Services(prefect_api, mlflow_uri, home, client_env)
    finally:
        stopped = subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=120)
        print(stopped.stdout, stopped.stderr)


def tiny_retrain_config(data_path: Path) -> dict:
    """A retrain of a few seconds: see tests/flows/test_retrain.py `_config`."""
    return {
        "data": {"path": str(data_path), "labels": ["negative", "positive"]},
        "train": {"max_steps": 3, "logging_steps": 1, "batch_size": 16, "max_length": 64},
        # 3 steps leave the model near chance: the INT8 accuracy check has its own tests.
        "export": {"parity_rows": 24, "max_accuracy_drop": 1.0},
        "registry": {"model_name": DEPLOYED_MODEL},
    }


def write_slice(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """`rows` rows of the shipped sample, as a CSV with the default column names."""
    from tuneline.data.loading import BUILTIN_SAMPLE, load_dataset

    frame = load_dataset(BUILTIN_SAMPLE, "text", "label").frame.sample(rows, random_state=seed)
    frame[["text", "label"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="package")
def deployed(services, tmp_path_factory) -> dict:
    """deployments/prefect.yaml registered by `tuneline deploy`, retrain presets made tiny; returns the spec used."""
    folder = tmp_path_factory.mktemp("deployments")
    config = tiny_retrain_config(write_slice(folder / "slice.csv"))
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        if deployment["entrypoint"] == "flows/retrain.py:retrain":
            deployment["parameters"] = {"config": copy.deepcopy(config)}
            for trigger in deployment.get("triggers", []):
                landed = copy.deepcopy(config)
                landed["data"]["path"] = trigger["parameters"]["config"]["data"]["path"]  # the event's template
                trigger["parameters"] = {"config": landed}
                # The same model's data: the trigger listens on the resource `tuneline land --model` names.
                trigger["match"] = {"prefect.resource.id": f"tuneline.dataset.{DEPLOYED_MODEL}"}
    copy_path = folder / "prefect.yaml"
    copy_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = services.cli("deploy", "--prefect-file", str(copy_path))
    assert done.returncode == 0, done.stdout + done.stderr
    return spec
