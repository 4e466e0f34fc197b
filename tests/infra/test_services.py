"""Real servers: infra/services.sh starts Prefect, MLflow and a worker on 127.0.0.1; flows run against them,
from the CLI and as deployments registered by `tuneline deploy`."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from tests.infra.conftest import DEPLOYED_MODEL, ROOT, write_slice

pytestmark = pytest.mark.e2e
SPEC = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())


def real(name: str) -> dict:
    """A deployment as deployments/prefect.yaml defines it."""
    return next(d for d in SPEC["deployments"] if d["name"] == name)


def test_retrain_against_real_prefect_and_mlflow_servers(services, tmp_path):
    run = services.cli(
        # 2 steps: near chance, so the INT8 accuracy check (tested on its own) must not decide the outcome
        "retrain", "train.max_steps=2", "train.max_length=64", "registry.model_name=served-e2e",
        "export.max_accuracy_drop=1.0", timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    registry = MlflowClient(tracking_uri=services.mlflow_uri, registry_uri=services.mlflow_uri)
    # 2 steps may stay under the gate's floor: version 1 is champion or held as challenger, the gate decided
    champion = registry.get_model_version("served-e2e", "1")
    assert {"champion", "challenger"} & set(champion.aliases), champion.aliases
    assert champion.tags["validation.success"] == "True" and champion.tags["data.hash"]
    names = {a.path for a in registry.list_artifacts(champion.run_id)}
    assert {"config.yaml", "summary.md", "evaluation"} <= names
    cli_runs = [r for r in services.flow_runs() if r["deployment_id"] is None]
    assert [r["state_type"] for r in cli_runs] == ["COMPLETED"]
    # Embedded stores were not touched: everything went to the servers.
    assert not (services.home / "client" / "mlflow.db").exists()


def test_deploy_registers_schedule_trigger_limits_and_typed_forms(services, deployed):
    api = services.prefect_api
    for definition in SPEC["deployments"]:
        flow_name = definition["entrypoint"].rpartition(":")[2]
        registered = services.deployment(flow_name, definition["name"])
        assert registered["entrypoint"] == definition["entrypoint"]
        assert registered["work_pool_name"] == "tuneline-process"
        assert registered["pull_steps"] == SPEC["pull"]
        assert registered["enforce_parameter_schema"] is True
    # The nightly retrain: the file's cron, one run at a time (queued, not dropped).
    nightly = services.deployment("retrain", "nightly")
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in nightly["schedules"]] == [
        (s["cron"], s["timezone"], True) for s in real("nightly")["schedules"]]
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert services.deployment("tune", "tune")["global_concurrency_limit"]["limit"] == 1
    # The parameters are RetrainConfig: the UI's form has its sections, descriptions and bounds.
    schema = nightly["parameter_openapi_schema"]
    assert schema["properties"]["config"]["$ref"].endswith("/RetrainConfig")
    train = schema["definitions"]["TrainConfig"]["properties"]
    assert train["learning_rate"]["description"] and "exclusiveMinimum" in json.dumps(train["learning_rate"])
    # A run with a parameter the model refuses is refused by the server, naming the field.
    refused = httpx.post(f"{api}/deployments/{nightly['id']}/create_flow_run",
                         json={"parameters": {"config": {"train": {"epochs": -1}}}}, timeout=10)
    assert refused.status_code == 409 and "epochs" in refused.text
    # The new-data trigger is an automation that runs this deployment on tuneline.data.landed only.
    automations = httpx.post(f"{api}/automations/filter", json={}, timeout=10).json()
    (automation,) = [a for a in automations if a["actions"][0].get("deployment_id") == nightly["id"]]
    assert automation["trigger"]["expect"] == ["tuneline.data.landed"]
    assert automation["trigger"]["posture"] == "Reactive" and automation["enabled"]
    assert automation["actions"][0]["parameters"]["config"]["data"]["path"] == (
        "{{ event.resource['tuneline.data.path'] }}")


def test_nightly_schedule_creates_runs(services, deployed):
    # Fails on SQLAlchemy 2.1 (Prefect 3.8.8's scheduler): pyproject.toml pins sqlalchemy<2.1.
    nightly = services.deployment("retrain", "nightly")
    deadline = time.monotonic() + 90  # the scheduler looks at new deployments every few seconds
    while time.monotonic() < deadline:
        scheduled = services.flow_runs(deployments={"id": {"any_": [nightly["id"]]}},
                                       flow_runs={"state": {"type": {"any_": ["SCHEDULED"]}}})
        if len(scheduled) >= 2:
            break
        time.sleep(3)
    starts = [r["expected_start_time"] for r in scheduled]
    assert len(starts) >= 2, starts
    assert all(re.search(r"T02:00:00", start) for start in starts), starts


def test_deploy_creates_docker_and_kubernetes_pools_from_the_templates(services, deployed, tmp_path):
    promote = dict(real("promote"))
    for pool_type in ("docker", "kubernetes"):
        spec = dict(SPEC, deployments=[dict(promote, name=f"promote-on-{pool_type}")])
        path = tmp_path / f"{pool_type}.yaml"
        path.write_text(yaml.safe_dump(spec))
        done = services.cli("deploy", "--prefect-file", str(path), "--pool", f"tuneline-{pool_type}",
                            "--pool-type", pool_type)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"created {pool_type} work pool tuneline-{pool_type}" in done.stdout
        # The server accepted the template (it refuses placeholders without a declared variable).
        pool = httpx.get(f"{services.prefect_api}/work_pools/tuneline-{pool_type}", timeout=10).json()
        template = json.loads((ROOT / "infra" / "work-pools" / f"{pool_type}.json").read_text())
        assert pool["type"] == pool_type and pool["base_job_template"] == template
        assert services.deployment("promote", f"promote-on-{pool_type}")["work_pool_name"] == f"tuneline-{pool_type}"


def test_deploy_and_land_refuse_without_a_server(services, tmp_path):
    done = services.cli("deploy", PREFECT_API_URL="")
    assert done.returncode == 1 and "set PREFECT_API_URL" in done.stderr
    done = services.cli("deploy", PREFECT_API_URL="http://127.0.0.1:9/api")
    assert done.returncode == 1 and "no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:9/api" in done.stderr
    done = services.cli("deploy", "--prefect-file", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1 and "missing.yaml does not exist" in done.stderr
    done = services.cli("land", str(ROOT / "README.md"), PREFECT_API_URL="")
    assert done.returncode == 1 and "needs a Prefect server" in done.stderr
    done = services.cli("land", str(tmp_path / "nothing.csv"))
    assert done.returncode == 1 and "nothing.csv does not exist" in done.stderr


@pytest.mark.slow
def test_deployment_runs_on_the_worker_and_new_data_retrains_once(services, deployed, tmp_path):
    """Triggered through the REST API, the nightly deployment runs on the worker and registers a champion;
    `tuneline land` starts exactly one more retrain, which waits for the first (concurrency 1), and nothing
    loops: the retrain's own ingest event starts nothing, and landing the same file again announces nothing."""
    api = services.prefect_api
    registry = MlflowClient(tracking_uri=services.mlflow_uri, registry_uri=services.mlflow_uri)
    nightly = services.deployment("retrain", "nightly")

    def started_runs() -> dict[str, dict]:
        """The deployment's runs but the cron schedule's (those wait for 02:00)."""
        runs = services.flow_runs(deployments={"id": {"any_": [nightly["id"]]}})
        return {r["id"]: r for r in runs if not r["auto_scheduled"]}

    before = set(started_runs())
    created = httpx.post(f"{api}/deployments/{nightly['id']}/create_flow_run", json={}, timeout=10)
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["parameters"]["config"]["registry"]["model_name"] == DEPLOYED_MODEL
    new_data = write_slice(tmp_path / "landed.csv", rows=240, seed=1)
    landed = services.cli("land", str(new_data), "--model", DEPLOYED_MODEL)
    assert landed.returncode == 0 and "announced" in landed.stdout, landed.stdout + landed.stderr

    deadline = time.monotonic() + 60
    while len(triggered := set(started_runs()) - before - {first["id"]}) < 1 and time.monotonic() < deadline:
        time.sleep(2)
    assert len(triggered) == 1, triggered
    first = services.wait_for_run(first["id"])
    second = services.wait_for_run(triggered.pop())
    assert second["parameters"]["config"]["data"]["path"] == str(new_data)
    # Never two at once: the triggered run started after the first had ended.
    assert datetime.fromisoformat(second["start_time"]) >= datetime.fromisoformat(first["end_time"])

    versions = {v.version: registry.get_model_version(DEPLOYED_MODEL, v.version)
                for v in registry.search_model_versions(f"name='{DEPLOYED_MODEL}'")}
    assert sorted(versions, key=int) == ["1", "2"]
    assert {"champion", "challenger"} & set(versions["2"].aliases)  # the gate decided which (its floor too)
    assert versions["2"].tags["data.source"] == str(new_data)
    assert versions["2"].tags["data.hash"] != versions["1"].tags["data.hash"]

    # Each retrain's ingest reported what it read; no trigger listens to that.
    events = httpx.post(f"{api}/events/filter", json={"filter": {"event": {"name": ["tuneline.data.ingested"]}},
                                                      "limit": 50}, timeout=10).json()["events"]
    assert {e["resource"]["tuneline.data.hash"] for e in events} >= {versions["1"].tags["data.hash"],
                                                                     versions["2"].tags["data.hash"]}
    again = services.cli("land", str(new_data), "--model", DEPLOYED_MODEL)
    assert again.returncode == 0 and "nothing announced" in again.stdout, again.stdout + again.stderr
    time.sleep(15)
    assert set(started_runs()) == before | {first["id"], second["id"]}
