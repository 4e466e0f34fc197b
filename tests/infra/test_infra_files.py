"""The production-shape files agree with each other and with the project: the compose file, the training
image, the Kubernetes worker and the work pools' base job templates.

There is no Docker or cluster here, so they are read and cross-checked; the templates are also accepted by
a real Prefect server in test_services.py.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TRAINING_IMAGE = "tuneline-training:0.1.0"


def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def worker_manifests() -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for document in yaml.safe_load_all((INFRA / "kubernetes" / "worker.yaml").read_text()):
        if document:
            by_kind.setdefault(document["kind"], []).append(document)
    return by_kind


def template(pool_type: str) -> dict:
    return json.loads((INFRA / "work-pools" / f"{pool_type}.json").read_text())


def rendered(pool_type: str, **values) -> dict:
    """The job configuration a worker would build from the template's defaults (plus `values`)."""
    from prefect.utilities.templating import apply_values

    base = template(pool_type)
    defaults = {name: spec["default"] for name, spec in base["variables"]["properties"].items() if "default" in spec}
    return apply_values(base["job_configuration"], defaults | values)


def test_compose_services_builds_and_mounts_exist():
    spec = compose()
    services = spec["services"]
    assert {"postgres", "minio", "prefect-server", "mlflow", "worker", "serving"} <= set(services)
    for name, service in services.items():
        assert "image" in service, name
        if "build" in service:
            assert (INFRA / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        else:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]) and "latest" not in service["image"], name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (INFRA / source).exists(), (name, source)
            elif not source.startswith(("$", "..")):
                assert source in spec["volumes"], (name, source)
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # nothing published beyond this host


def test_compose_wires_workers_to_the_servers_and_pins_the_project_versions():
    services = compose()["services"]
    prefect_port = services["prefect-server"]["command"][services["prefect-server"]["command"].index("--port") + 1]
    worker = services["worker"]
    assert worker["environment"]["PREFECT_API_URL"] == f"http://prefect-server:{prefect_port}/api"
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["serving"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["image"] == TRAINING_IMAGE and worker["build"]["dockerfile"] == "infra/training/Dockerfile"
    # The pool the compose worker serves is the one the deployments name.
    deployments = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    assert {d["work_pool"]["name"] for d in deployments} == {worker["command"][worker["command"].index("--pool") + 1]}
    # The serving container follows the champion of the model the nightly retrain registers.
    nightly = next(d for d in deployments if d["name"] == "nightly")
    model = nightly["parameters"]["config"]["registry"]["model_name"]
    assert f"models:/{model}@champion" in services["serving"]["command"]
    # Server images at the versions the project pins and tests.
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{version('prefect')}-python3.11"
    assert f"mlflow=={version('mlflow')}" in (INFRA / "mlflow" / "Dockerfile").read_text()
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "CREATE DATABASE mlflow" in (INFRA / "postgres" / "init.sql").read_text()


def test_training_image_matches_the_tested_environment():
    dockerfile = (INFRA / "training" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:[\w.-]+-runtime-ubuntu[\d.]+$", dockerfile, re.M)
    assert f"uv python install {sys.version_info.major}.{sys.version_info.minor}" in dockerfile
    torch_pin = re.search(r"^TORCH := (torch==\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"uv pip install {torch_pin}" in dockerfile
    for folder in ("tuneline", "flows", "tasks", "expectations", "deployments"):
        assert f"COPY {folder} /app/{folder}" in dockerfile, folder
    # The deployments' pull step reads TUNELINE_PROJECT_DIR: the image and both templates set it to the code.
    assert "TUNELINE_PROJECT_DIR=/app" in dockerfile
    for pool_type in ("docker", "kubernetes"):
        assert template(pool_type)["variables"]["properties"]["env"]["default"]["TUNELINE_PROJECT_DIR"] == "/app"


def test_kubernetes_template_renders_a_job_of_the_training_image():
    job = rendered("kubernetes", command="prefect flow-run execute", name="retrain-1")["job_manifest"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == TRAINING_IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 0
    with_gpu = rendered("kubernetes", gpu_count=1)["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert with_gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    docker = rendered("docker")
    assert docker["image"] == TRAINING_IMAGE and docker["networks"] == [compose()["networks"]["default"]["name"]]


def test_kubernetes_worker_may_start_jobs_as_the_templates_expect():
    manifests = worker_manifests()
    accounts = {a["metadata"]["name"] for a in manifests["ServiceAccount"]}
    (namespace,) = [n["metadata"]["name"] for n in manifests["Namespace"]]
    variables = template("kubernetes")["variables"]["properties"]
    assert variables["namespace"]["default"] == namespace
    assert variables["service_account_name"]["default"] in accounts  # the flow-run pods' identity exists
    (deployment,) = manifests["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] in accounts
    (container,) = pod["containers"]
    assert container["image"] == f"prefecthq/prefect:{version('prefect')}-python3.11-kubernetes"
    command = container["command"]
    assert command[command.index("--type") + 1] == "kubernetes"
    assert command[command.index("--pool") + 1] == "tuneline-kubernetes"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health" and "--with-healthcheck" in command
    (role,) = manifests["Role"]
    jobs = next(rule for rule in role["rules"] if "jobs" in rule["resources"])
    assert jobs["apiGroups"] == ["batch"] and {"create", "watch", "delete"} <= set(jobs["verbs"])
    (binding,) = manifests["RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {(s["name"], s["namespace"]) for s in binding["subjects"]} == {(pod["serviceAccountName"], namespace)}
    for kind, documents in manifests.items():
        for document in documents:
            if kind != "Namespace":
                assert document["metadata"]["namespace"] == namespace, (kind, document["metadata"]["name"])


@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_templates_declare_every_placeholder(pool_type):
    base = template(pool_type)
    placeholders = set(re.findall(r"\{\{\s*([\w.]+)\s*\}\}", json.dumps(base["job_configuration"])))
    assert placeholders <= set(base["variables"]["properties"]), placeholders - set(base["variables"]["properties"])
