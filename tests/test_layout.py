"""The architecture's promises, checked: the library never imports Prefect, serving never imports torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_never_imports_prefect():
    offenders = [p.name for p in (ROOT / "tuneline").rglob("*.py") if "prefect" in _imports(p)]
    assert offenders == []


def test_flows_hold_no_ml_imports():
    for path in (ROOT / "flows").glob("*.py"):
        assert not _imports(path) & {"torch", "transformers", "sklearn", "onnxruntime", "mlflow"}, path.name


def test_onnx_runtime_path_loads_without_torch_or_prefect():
    code = (
        "import sys; import tuneline.runtime.classifier, tuneline.runtime.pyfunc; "
        "bad = [m for m in ('torch', 'transformers', 'prefect') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _deployments() -> list[dict]:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert spec["deployments"]
    return spec["deployments"]


def _flow(entrypoint: str):
    """The object an entrypoint `flows/<file>.py:<name>` names, imported as Prefect's worker would."""
    import importlib

    file, _, name = entrypoint.partition(":")
    assert (ROOT / file).is_file() and file.startswith("flows/"), entrypoint
    return getattr(importlib.import_module(file.removesuffix(".py").replace("/", ".")), name)


def _render(value, sample: str):
    """Trigger parameters with every `{{ template }}` replaced by a sample value."""
    if isinstance(value, dict):
        return {key: _render(inner, sample) for key, inner in value.items()}
    if isinstance(value, list):
        return [_render(inner, sample) for inner in value]
    return sample if isinstance(value, str) and "{{" in value else value


def test_every_deployment_imports_its_flow_and_its_presets_validate():
    import typing

    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import BaseModel, TypeAdapter, ValidationError

    for deployment in _deployments():
        flow = _flow(deployment["entrypoint"])
        assert isinstance(flow, Flow), deployment["entrypoint"]
        hints = typing.get_type_hints(flow.fn)
        # The preset and each trigger's parameters, validated against the flow's parameter types as the
        # server validates a run's; required parameters without a preset (promote's name) are asked for at run time.
        presets = [deployment.get("parameters", {})]
        presets += [_render(t["parameters"], "data/new.csv") for t in deployment.get("triggers", [])]
        for preset in presets:
            assert set(preset) <= set(flow.parameters.properties), deployment["name"]
            for name, value in preset.items():
                validated = TypeAdapter(hints[name]).validate_python(value)
                assert isinstance(validated, BaseModel), (deployment["name"], name)  # RetrainConfig, TuneConfig
        for schedule in deployment.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    # A preset the model refuses is caught, so the check above can fail.
    retrain = typing.get_type_hints(_flow("flows/retrain.py:retrain").fn)["config"]
    with pytest.raises(ValidationError, match="epochs"):
        TypeAdapter(retrain).validate_python({"train": {"epochs": -1}})


def test_retrain_deployment_is_limited_and_its_trigger_cannot_loop():
    """One retrain at a time, and new data (only `tuneline land` emits tuneline.data.landed) starts it;
    the retrain itself emits only tuneline.data.ingested, which no trigger listens for."""
    from tuneline.tasks.ingest import DATA_INGESTED, DATA_LANDED, dataset_resource_id
    from tuneline.config import RetrainConfig

    (retrain,) = [d for d in _deployments() if d["entrypoint"] == "flows/retrain.py:retrain"]
    assert retrain["concurrency_limit"]["limit"] == 1
    assert retrain["concurrency_limit"]["collision_strategy"] == "ENQUEUE"
    model = RetrainConfig.model_validate(retrain["parameters"]["config"]).registry.model_name
    (trigger,) = retrain["triggers"]
    assert trigger["expect"] == [DATA_LANDED] and trigger["posture"] == "Reactive"
    assert trigger["match"] == {"prefect.resource.id": dataset_resource_id(model)}
    assert "tuneline.data.path" in trigger["parameters"]["config"]["data"]["path"]
    # Events the pipeline's own code emits: none is one a deployment trigger listens for.
    listened = {event for d in _deployments() for t in d.get("triggers", []) for event in t["expect"]}
    emitted = set()
    for path in [*(ROOT / "flows").glob("*.py"), *(ROOT / "tasks").glob("*.py")]:
        tree = ast.parse(path.read_text())
        constants = {n.targets[0].id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("emit_event"):
                first = node.args[0]
                emitted.add(first.value if isinstance(first, ast.Constant) else constants[first.id])
    assert emitted == {DATA_INGESTED}
    assert not emitted & listened
