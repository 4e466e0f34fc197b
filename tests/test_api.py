"""The Python API (`import tuneline`), the shipped presets under configs/, and the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import tuneline
from tests.conftest import make_reviews
from tuneline.config import RetrainConfig
from tuneline.errors import ConfigError, RegistrationError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def test_import_tuneline_loads_neither_torch_prefect_nor_mlflow():
    code = ("import sys, tuneline; tuneline.load_model, tuneline.retrain; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'prefect', 'mlflow', 'transformers'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_the_api_names_are_documented_and_unknown_names_are_refused():
    assert {"load_config", "retrain", "tune", "load_model"} <= set(tuneline.__all__) <= set(dir(tuneline))
    with pytest.raises(AttributeError, match="no attribute 'fine_tune'"):
        tuneline.fine_tune  # noqa: B018


def test_load_config_reads_a_preset_then_the_overrides():
    config = tuneline.load_config(ROOT / "configs" / "lora.yaml", ["train.lora.r=4", "train.epochs=2"])
    assert (config.train.method, config.train.lora.r, config.train.epochs) == ("lora", 4, 2.0)
    with pytest.raises(ConfigError, match="train.epoch: Extra inputs are not permitted"):
        tuneline.load_config(overrides=["train.epoch=2"])


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads_and_validates(preset):
    config = tuneline.load_config(preset)
    assert isinstance(config, RetrainConfig)
    assert preset.read_text().startswith("#"), f"{preset.name}: say in a comment what the preset is for"


def test_the_presets_cover_what_users_start_from():
    assert {"default", "lora", "seq2seq"} <= {p.stem for p in PRESETS}


def test_the_default_preset_is_the_embedded_default():
    assert tuneline.load_config(ROOT / "configs" / "default.yaml") == RetrainConfig() == tuneline.load_config()


def test_a_bad_model_uri_says_what_it_must_look_like(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="must be models:/NAME@alias or models:/NAME/VERSION"):
        tuneline.load_model("runs:/abc/model")


def test_versions_registered_by_earlier_releases_still_import_their_runtime():
    """A registered version stores its MLflow model code; before 0.2 that code imported tuneline.onnx_classifier."""
    from tuneline.onnx_classifier import OnnxClassifier
    from tuneline.onnx_generator import OnnxGenerator
    from tuneline.runtime.classifier import OnnxClassifier as moved
    from tuneline.runtime.generator import OnnxGenerator as moved_generator

    assert OnnxClassifier is moved and OnnxGenerator is moved_generator


# --- retrain, then load_model, from Python ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_retrain_from_python_registers_a_version_load_model_predicts_as_the_registry_does(
        prefect_harness, state, tiny_bert, tmp_path):
    import mlflow

    from tuneline.registry import store as registry

    data = tmp_path / "reviews.csv"
    make_reviews(60).to_csv(data, index=False)
    config = tuneline.load_config(overrides=[
        f"data.path={data}", f"train.base_model={tiny_bert}", "train.max_steps=4", "train.max_length=32",
        "export.parity_rows=8", "export.max_accuracy_drop=1.0", "registry.model_name=api-model"])

    result = tuneline.retrain(config)

    assert result.model_uri == f"models:/api-model/{result.version}" and result.version == "1"
    assert str(registry.version_by_alias("api-model", result.alias).version) == result.version
    assert set(result.metrics) >= {"accuracy", "macro_f1"} and 0 <= result.metrics["accuracy"] <= 1
    tags = registry.client().get_model_version("api-model", result.version).tags
    assert float(tags["test.accuracy"]) == pytest.approx(result.metrics["accuracy"], abs=1e-6)

    texts = ["great value, works well", "broken on arrival, useless", "an ordinary afternoon"]
    with tuneline.load_model(result.model_uri) as model:
        assert (model.name, model.version, model.task) == ("api-model", "1", "classification")
        predicted = model.predict(texts)
        # Dynamic INT8 scales activations per batch: one text alone scores within a hair of it in a batch of three.
        [alone] = model.predict(texts[0])
        assert alone["label"] == predicted[0]["label"] and alone["score"] == pytest.approx(predicted[0]["score"], abs=1e-3)
        assert model.predict([]) == []
        with pytest.raises(TypeError, match="text 1 is int"):
            model.predict(["fine", 3])
        with pytest.raises(TypeError, match="takes no parameters"):
            model.predict(texts, max_new_tokens=3)
        folder = model._loaded.folder
    assert not folder.exists(), "closing the model removes its downloaded files"
    # The registered MLflow model (pyfunc, INT8 ONNX) gives the same answers.
    expected = mlflow.pyfunc.load_model(result.model_uri).predict(pd.DataFrame({"text": texts}))
    assert [p["label"] for p in predicted] == list(expected["label"])
    assert [p["score"] for p in predicted] == pytest.approx(list(expected["score"]), abs=1e-3)  # batches differ
    with pytest.raises(RegistrationError, match="no version of model 'api-model' holds alias 'nowhere'"):
        tuneline.load_model("models:/api-model@nowhere")


# --- the wheel ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    import shutil

    folder, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("tuneline", "flows", "tasks"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(folder), str(source)], check=True, capture_output=True)
    return next(folder.glob("tuneline-*.whl"))


def test_the_wheel_installs_one_package_with_flows_tasks_and_data_inside(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"tuneline", f"{wheel.name.split('-py')[0]}.dist-info"}
    for inside in ("tuneline/flows/retrain.py", "tuneline/tasks/train.py", "tuneline/api.py",
                   "tuneline/data/resources/sample_reviews.csv", "tuneline/serving/proto/inference.proto",
                   "tuneline/runtime/pyfunc.py", "tuneline/kinds/classification.py"):
        assert inside in names, inside
    assert not [n for n in names if "__pycache__" in n or n.startswith("tuneline/tests")]


def test_the_installed_wheel_runs_its_flows_from_the_tuneline_namespace(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = ("import importlib.util, tuneline.flows.retrain as flow, tuneline.data.samples as samples; "
            "print(flow.__file__); print(samples.SAMPLE_PATH.is_file()); "
            "print(importlib.util.find_spec('flows'), importlib.util.find_spec('tasks'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    flow_file, sample_there, top_level = result.stdout.strip().splitlines()
    assert Path(flow_file).is_relative_to(site) and sample_there == "True"
    assert top_level == "None None", "flows and tasks must not be top-level packages of site-packages"


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_the_readme_shows_the_api():
    [block] = [b for b in readme_python_blocks() if "tuneline.retrain(" in b]
    assert "tuneline.load_config(" in block and "tuneline.load_model(" in block


@pytest.mark.slow  # MiniLM with LoRA, 30 steps, every stage: 80 s on 2 cores
def test_the_readme_python_example_runs_verbatim(tmp_path):
    [block] = [b for b in readme_python_blocks() if "tuneline.retrain(" in b]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "TUNELINE_"))}
    result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=ROOT,
                            env=env | {"TUNELINE_HOME": str(tmp_path / "state")}, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    first, predictions = result.stdout.strip().splitlines()[-2:]
    uri, alias, accuracy = first.split()
    assert uri == "models:/tuneline-classifier-lora/1" and alias in ("champion", "challenger")
    assert 0.5 < float(accuracy) <= 1.0
    assert predictions.count("'label'") == 2
