"""The serving image and its Kubernetes manifests agree with each other, with the server and with the venv.

There is no Docker here: the Dockerfile and the manifests are read and cross-checked, and the image's
Python environment is rebuilt from infra/serving/requirements.txt alone (the locked distributions'
files, nothing else importable) to run `tuneline serve` against a real MLflow server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from fnmatch import fnmatch
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import free_port, running_mlflow_server

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "infra" / "serving"
# Training needs them; the image must not carry them. Full mlflow adds the tracking server, sklearn and scipy.
NOT_IN_IMAGE = {"torch", "transformers", "prefect", "mlflow"}
PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!]+")


def manifests() -> dict[str, dict]:
    """kubernetes.yaml's documents by kind."""
    documents = [d for d in yaml.safe_load_all((SERVING / "kubernetes.yaml").read_text()) if d is not None]
    kinds = [d["kind"] for d in documents]
    assert len(kinds) == len(set(kinds)), f"one document per kind expected, got {kinds}"
    return {d["kind"]: d for d in documents}


def pod() -> dict:
    return manifests()["Deployment"]["spec"]["template"]


def container() -> dict:
    containers = pod()["spec"]["containers"]
    assert len(containers) == 1, [c["name"] for c in containers]
    return containers[0]


def container_port() -> int:
    (port,) = container()["ports"]
    return port["containerPort"]


def resolve_port(port: int | str) -> int:
    """A probe's or the Service's port: a number, or the name of a container port."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container()["ports"] if "name" in p}
    assert port in named, f"port {port!r} names no container port; named ports: {sorted(named)}"
    return named[port]


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} should appear once in {args}"
    return args[args.index(name) + 1]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity as a number: '500m' -> 0.5, '512Mi' -> 536870912."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (SERVING / "Dockerfile").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def instruction(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile() if keyword == name]


def requirement_lines() -> list[str]:
    lines = [line.split("#")[0].strip() for line in (SERVING / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line]


def pins() -> dict[str, str]:
    """Canonical name -> pinned version."""
    return {canonicalize_name(name): pinned for name, _, pinned in (l.partition("==") for l in requirement_lines())}


def applicable_requirements(name: str, extras: frozenset[str]) -> list[Requirement]:
    """What the installed `name[extras]` depends on, for this interpreter and platform (the image's)."""
    requirements = [Requirement(line) for line in distribution(name).requires or []]
    return [r for r in requirements
            if r.marker is None or any(r.marker.evaluate({"extra": extra}) for extra in extras or {""})]


# The Kubernetes manifests


def test_the_manifest_holds_a_configmap_a_deployment_and_a_service():
    documents = manifests()
    assert set(documents) == {"ConfigMap", "Deployment", "Service"}
    assert all(d["apiVersion"] and d["metadata"]["name"] for d in documents.values())
    assert documents["Deployment"]["spec"]["replicas"] == 2


def test_probes_ask_the_health_endpoints_on_the_container_port():
    expected = {"startupProbe": "/v2/health/ready", "readinessProbe": "/v2/health/ready",
                "livenessProbe": "/v2/health/live"}
    for probe, path in expected.items():
        get = container()[probe]["httpGet"]
        assert (get["path"], resolve_port(get["port"])) == (path, container_port()), probe


def test_the_server_listens_on_the_container_port_on_every_interface():
    spec = container()
    assert "command" not in spec  # the image's ENTRYPOINT, `tuneline serve`, is what runs
    assert int(flag(spec["args"], "--port")) == container_port()
    # The server's default, 127.0.0.1, would answer neither the kubelet's probes nor the Service.
    assert flag(spec["args"], "--host") == "0.0.0.0"
    assert re.fullmatch(r"models:/[^/@]+@champion", flag(spec["args"], "--model"))


def test_the_service_sends_port_80_to_the_container_port_of_these_pods():
    documents = manifests()
    labels = pod()["metadata"]["labels"]
    service = documents["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"].items() <= labels.items()
    assert documents["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["port"] == 80 and resolve_port(port["targetPort"]) == container_port()


def test_prometheus_scrapes_metrics_on_the_container_port():
    annotations = pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_port()
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_container_runs_as_the_images_non_root_user_on_a_read_only_filesystem():
    security = pod()["spec"].get("securityContext", {}) | container().get("securityContext", {})  # container wins
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    (user,) = instruction("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: runAsNonRoot can only verify a numeric, non-zero uid"
    assert security.get("runAsUser", int(uid)) == int(uid)


def test_every_folder_the_server_writes_is_a_volume():
    spec = container()
    env = {e["name"]: e.get("value") for e in spec["env"]}
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in spec["volumeMounts"]}
    # The server downloads each version into tempfile's folder; tuneline keeps its state in TUNELINE_HOME.
    for folder in (env.get("TMPDIR") or "/tmp", env["TUNELINE_HOME"]):
        assert folder in mounts, f"{folder} is written but the root filesystem is read-only"
        assert "emptyDir" in mounts[folder] and "medium" not in mounts[folder]["emptyDir"]  # disk, not RAM


def test_the_tracking_uri_comes_from_the_configmap_and_the_token_from_an_optional_secret():
    documents = manifests()
    env = {e["name"]: e for e in container()["env"]}
    reference = env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]
    assert reference["name"] == documents["ConfigMap"]["metadata"]["name"]
    # mlflow-skinny has no SQL store: the image can only talk to a tracking server.
    assert documents["ConfigMap"]["data"][reference["key"]].startswith(("http://", "https://"))
    secret = env["TUNELINE_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True and secret["key"]


def test_requests_fit_their_limits_and_onnxruntime_threads_match_the_cpu_limit():
    spec = container()
    requests, limits = spec["resources"]["requests"], spec["resources"]["limits"]
    for resource in ("cpu", "memory"):
        assert quantity(requests[resource]) <= quantity(limits[resource]), resource
    # Model threads beyond the CPU limit are throttled; fewer leave CPU the pod pays for idle.
    assert int(flag(spec["args"], "--workers")) * int(flag(spec["args"], "--threads")) == quantity(limits["cpu"])


# The Dockerfile


def test_the_image_runs_tuneline_serve_on_the_port_it_exposes_and_checks():
    (entrypoint,) = instruction("ENTRYPOINT")
    (command,) = instruction("CMD")
    assert json.loads(entrypoint) == ["tuneline", "serve"]
    args = json.loads(command)
    port = flag(args, "--port")
    assert instruction("EXPOSE") == [port]
    assert flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--model") == flag(container()["args"], "--model")
    assert int(port) == container_port()
    (healthcheck,) = instruction("HEALTHCHECK")
    assert f"127.0.0.1:{port}/v2/health/live" in healthcheck


def test_the_image_has_the_python_the_tests_run_on():
    (base,) = instruction("FROM")
    assert re.fullmatch(rf"python:{sys.version_info.major}\.{sys.version_info.minor}(\.\d+)?-slim(-\w+)?", base), base


def test_the_image_installs_tuneline_without_its_dependencies():
    installs = [run for run in instruction("RUN") if "pip install" in run]
    assert any("-r /tmp/requirements.txt" in run for run in installs)
    assert any("--no-deps /src" in run for run in installs)


def test_every_file_the_image_copies_is_in_the_build_context():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "this check does not read exceptions; extend it"
    patterns = [p.strip("/") for p in patterns]
    patterns += [p[3:] for p in patterns if p.startswith("**/")]  # `**/` also matches the top folder

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)

    for arguments in instruction("COPY"):
        *sources, _ = arguments.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            dropped = [f.relative_to(ROOT).as_posix() for f in files if ignored(f.relative_to(ROOT).as_posix())]
            assert dropped == [], f"COPY {source}: .dockerignore leaves these out of the build context"


# requirements.txt


def test_every_requirement_is_pinned_and_none_is_for_training():
    lines = requirement_lines()
    assert [line for line in lines if not PIN.fullmatch(line)] == []
    names = [canonicalize_name(line.partition("==")[0]) for line in lines]
    assert len(names) == len(set(names)), "a package is listed twice"
    assert set(names) & NOT_IN_IMAGE == set()
    assert {"mlflow-skinny", "onnxruntime", "tokenizers", "fastapi", "uvicorn", "prometheus-client", "typer"} <= set(names)


def test_pinned_versions_are_the_ones_the_tests_ran_with():
    drift = {}
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            drift[name] = (pinned, installed)
    assert drift == {}, "pinned vs installed; re-pin from the venv: " + " ".join(
        f"{name}=={installed}" for name, (_, installed) in drift.items())


def test_the_requirements_are_a_complete_lock():
    """Every dependency of a pinned package is pinned too: pip resolves nothing the tests did not run."""
    locked = pins()
    missing: dict[str, str] = {}
    queue = [(name, frozenset()) for name in locked]
    seen = set(queue)
    while queue:
        name, extras = queue.pop()
        for requirement in applicable_requirements(name, extras):
            dependency = canonicalize_name(requirement.name)
            if dependency not in locked:
                missing[dependency] = name
            elif (dependency, frozenset(requirement.extras)) not in seen:
                seen.add((dependency, frozenset(requirement.extras)))
                queue.append((dependency, frozenset(requirement.extras)))
    assert missing == {}, "needed by a pinned package but not pinned (dependency: needed by): " + ", ".join(
        f"{dependency}=={version(dependency)}: {parent}" for dependency, parent in sorted(missing.items()))


# The image's Python environment, running the server


@pytest.fixture(scope="module")
def image_site(tmp_path_factory) -> Path:
    """A site-packages holding what the image installs: the locked distributions' files and tuneline."""
    site = tmp_path_factory.mktemp("image-site")
    for name in pins():
        dist = distribution(name)
        for file in dist.files or []:
            source = Path(dist.locate_file(file))
            if file.parts[0] == ".." or "__pycache__" in file.parts or not source.exists():
                continue  # console scripts live outside site-packages; bytecode is rebuilt
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(source)
    (site / "tuneline").symlink_to(ROOT / "tuneline")
    return site


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory, tiny_bert):
    """A real `mlflow server` (proxied artifacts) with a tiny classifier registered as `served@champion`."""
    from tuneline.registry import store as registry
    from tuneline.config import ExportConfig
    from tuneline.export.encoder import export_and_quantize

    folder = tmp_path_factory.mktemp("tracking-server")
    with running_mlflow_server(folder) as uri:
        files = folder / "files"
        shutil.copytree(tiny_bert, files / "hf_model")
        export_and_quantize(files / "hf_model", files, ExportConfig(), 32, ["a short text", "another one"])
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", uri)
            run_id = registry.start_run("serving-image", "tiny", {}, "", {})
            registry.register_model(run_id, "served", files / "hf_model", files / "model.onnx",
                                    files / "model.int8.onnx", 32, {"task": "classification"}, "# card")
            registry.finish_run(run_id)
            registry.move_alias("served", registry.CHAMPION, "1", "image test")
        yield uri


@pytest.mark.e2e  # starts a real MLflow server, like the registry's server tests
def test_the_server_runs_with_only_the_locked_packages(image_site, tracking_server, tmp_path):
    """`tuneline serve` as the image starts it, with nothing importable beyond requirements.txt."""
    home, scratch = tmp_path / "cache", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TUNELINE_", "MLFLOW_"))} | {
        "PYTHONPATH": str(image_site), "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(home),
        "TUNELINE_HOME": str(home), "TMPDIR": str(scratch), "MLFLOW_TRACKING_URI": tracking_server,
    }
    # -S: no site-packages of the venv, so a package missing from the lock fails here as in the image.
    launch = "import sys; from tuneline.cli import app; app(sys.argv[1:], prog_name='tuneline')"
    server = subprocess.Popen(
        [sys.executable, "-S", "-c", launch, "serve", "--model", "models:/served@champion",
         "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port), "--threads", "1"],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail("server exited during start-up:\n" + server.stdout.read()[-3000:])
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        else:
            pytest.fail("server did not become ready in 60 s")
        response = httpx.post(f"{url}/v1/predict", json={"inputs": ["works well", "broke at once"]}, timeout=30)
        assert response.status_code == 200, response.text
        assert (response.json()["version"], len(response.json()["predictions"])) == ("1", 2)
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        assert "tuneline_model_version" in httpx.get(f"{url}/metrics").text
        import tritonclient.grpc as grpcclient  # gRPC runs on the locked grpcio and protobuf too

        assert grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready("served")
        # The model went to tempfile's folder, which the Deployment mounts as an emptyDir.
        assert list(scratch.glob("tuneline-serve-*/served-v1-*/artifacts/model.int8.onnx"))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
