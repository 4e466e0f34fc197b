"""The architecture's promises, checked: the library never imports Prefect, serving never imports torch."""

import ast
import subprocess
import sys
from pathlib import Path

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
        "import sys; import tuneline.onnx_classifier, tuneline.pyfunc_model; "
        "bad = [m for m in ('torch', 'transformers', 'prefect') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_deployment_names_a_real_flow_and_its_parameters():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        file, _, function = deployment["entrypoint"].partition(":")
        assert (ROOT / file).is_file(), deployment["entrypoint"]
        tree = ast.parse((ROOT / file).read_text())
        flows = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and any("flow" in ast.unparse(d) for d in n.decorator_list)}
        assert function in flows, deployment["entrypoint"]
        arguments = {a.arg for a in flows[function].args.args}
        assert set(deployment.get("parameters", {})) <= arguments, deployment["name"]
