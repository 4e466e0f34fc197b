"""A run registers one version, however often its register step runs: retried, re-run, or racing itself; and the
export flow run again for the same source version and settings returns the version it registered the first time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_reviews, running_mlflow_server
from tuneline.registry import store as registry
from tuneline.config import ExportConfig, load_config
from tuneline.export.encoder import export_and_quantize

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model_files(tiny_bert, tmp_path_factory) -> Path:
    """hf_model/, model.onnx, model.int8.onnx of the tiny BERT, named as a version stores them."""
    folder = tmp_path_factory.mktemp("files")
    shutil.copytree(tiny_bert, folder / "hf_model")
    export_and_quantize(tiny_bert, folder, ExportConfig(), 32, ["a short text", "another one"])
    return folder


def register(run_id: str, files: Path, model: str) -> registry.RegisteredVersion:
    return registry.register_model(run_id, model, files / "hf_model", files / "model.onnx", files / "model.int8.onnx",
                                   32, {"test.accuracy": "0.5"}, "# card")


def logged_models(run_id: str) -> list:
    experiment = registry.client().get_run(run_id).info.experiment_id
    return list(registry.client().search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'"))


def test_registering_one_run_twice_returns_the_first_version(state, model_files):
    run_id = registry.start_run("idempotent", "run", {}, "", {})
    first = register(run_id, model_files, "twice")
    again = register(run_id, model_files, "twice")

    assert again == first and first.version == "1"
    assert [str(v.version) for v in registry.client().search_model_versions("name='twice'")] == ["1"]
    assert len(logged_models(run_id)) == 1  # the second call uploaded nothing
    other = registry.start_run("idempotent", "another run", {}, "", {})
    assert register(other, model_files, "twice").version == "2"  # one version per run, not per model


# One process of the race: register the given run, print the version it got.
RACER = """
import sys
from pathlib import Path
from tuneline.registry import store as registry
folder, run_id = Path(sys.argv[1]), sys.argv[2]
version = registry.register_model(run_id, "raced", folder / "hf_model", folder / "model.onnx", folder / "model.int8.onnx",
                                  32, {"test.accuracy": "0.5"}, "# card")
print(version.version, version.model_uri)
"""


def test_two_attempts_racing_for_one_run_leave_one_version(tmp_path, model_files, monkeypatch):
    """Both attempts pass the lookup before either has created its version (each spends seconds uploading);
    the later one withdraws its own version and returns the earlier one."""
    with running_mlflow_server(tmp_path) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        run_id = registry.start_run("race", "run", {}, "", {})
        env = os.environ | {"MLFLOW_TRACKING_URI": uri}
        racers = [subprocess.Popen([sys.executable, "-c", RACER, str(model_files), run_id], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [racer.communicate(timeout=300) for racer in racers]
        for racer, (_, err) in zip(racers, outputs):
            assert racer.returncode == 0, err[-2000:]
        answers = {out.strip().splitlines()[-1] for out, _ in outputs}
        versions = registry.client().search_model_versions("name='raced'")

        assert len(answers) == 1, answers  # both attempts return the same version and files
        assert [str(v.version) for v in versions] == [answers.pop().split()[0]]
        files = registry.download_version("raced", str(versions[0].version), tmp_path / "download")
        assert (files / "model.int8.onnx").is_file() and (files / "hf_model" / "model.safetensors").is_file()


def test_the_export_flow_run_again_returns_the_version_it_registered(prefect_harness, state, tiny_bert, tmp_path):
    from tuneline.flows.export import export
    from tuneline.flows.retrain import retrain

    path = tmp_path / "reviews.csv"
    make_reviews(40).to_csv(path, index=False)
    champion = retrain(config=load_config(overrides=[
        f"data.path={path}", f"train.base_model={tiny_bert}", "train.max_length=64", "train.max_steps=2",
        "train.batch_size=16", "split.train_fraction=0.6", "split.validation_fraction=0.2",
        "split.test_fraction=0.2", "export.parity_rows=8", "export.max_accuracy_drop=1.0",
        "registry.model_name=reexported"])).version
    from tuneline.registry import store as registry

    registry.move_alias("reexported", registry.CHAMPION, champion, "2 tiny steps stay under the gate's floor")
    settings = ExportConfig(quantization="none", max_accuracy_drop=1.0)

    first = export(name="reexported", version="champion", settings=settings)
    again = export(name="reexported", version=champion, settings=ExportConfig(**settings.model_dump()))

    assert (champion, first, again) == ("1", "2", "2")
    versions = registry.client().search_model_versions("name='reexported'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    tags = registry.client().get_model_version("reexported", first).tags
    assert tags["reexport.of"] == "1" and len(tags["reexport.config_hash"]) == 16
    experiment = registry.client().get_experiment_by_name("tuneline").experiment_id
    exports = registry.client().search_runs([experiment], "tags.exported_from = 'reexported/1'")
    assert len(exports) == 1  # the second run stopped before exporting anything
    # Other settings are another re-export.
    other = export(name="reexported", version="champion", settings=ExportConfig(quantization="dynamic",
                                                                                max_accuracy_drop=1.0))
    assert other == "3"
    assert registry.client().get_model_version("reexported", other).tags["reexport.config_hash"] != \
        tags["reexport.config_hash"]
