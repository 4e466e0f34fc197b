"""The registry against a real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import running_mlflow_server
from tuneline.registry import store as registry
from tuneline.config import ExportConfig
from tuneline.export.encoder import export_and_quantize

pytestmark = pytest.mark.e2e

# A worker process: one run, one registered version, as the retrain flow's register stage does it.
WORKER = """
import sys
from pathlib import Path
from tuneline.registry import store as registry
folder, name, worker = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
run_id = registry.start_run("concurrency", f"worker-{worker}", {"worker": worker}, "worker: " + worker, {})
version = registry.register_model(run_id, name, folder / "hf_model", folder / "model.onnx", folder / "model.int8.onnx",
                                  32, {"worker": worker, "test.accuracy": "0.5", "test.macro_f1": "0.5"}, "# card")
registry.finish_run(run_id)
print(version.version)
"""


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


@pytest.fixture(scope="module")
def model_files(tiny_bert, tmp_path_factory):
    """hf_model/, model.onnx, model.int8.onnx of the tiny BERT, named as a version stores them."""
    folder = tmp_path_factory.mktemp("files")
    shutil.copytree(tiny_bert, folder / "hf_model")  # MLflow refuses symlinks that leave the folder
    export_and_quantize(tiny_bert, folder, ExportConfig(), 32, ["a short text", "another one"])
    return folder


def test_two_processes_register_concurrently_and_consistently(mlflow_server, model_files, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    env = os.environ | {"MLFLOW_TRACKING_URI": mlflow_server}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(model_files), "shared-model", str(i)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-2000:]
    assert sorted(out.strip().splitlines()[-1] for out, _ in outputs) == ["1", "2"]

    versions = registry.client().search_model_versions("name='shared-model'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert sorted(v.tags["worker"] for v in versions) == ["1", "2"]  # each version kept its own lineage
    for version in versions:
        files = registry.download_version("shared-model", str(version.version))
        assert (files / "model.int8.onnx").is_file() and (files / "hf_model" / "tokenizer.json").is_file()


def test_alias_history_and_rollback_on_the_server(mlflow_server, model_files, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    registered = []
    for _ in range(2):
        run_id = registry.start_run("aliases", "run", {}, "", {})
        registered.append(registry.register_model(run_id, "aliased", model_files / "hf_model", model_files / "model.onnx",
                                                  None, 32, {}, "# card").version)
    first, second = registered
    assert registry.move_alias("aliased", registry.CHAMPION, first, "first") is None
    assert registry.move_alias("aliased", registry.CHAMPION, second, "better") == first
    assert registry.rollback("aliased", "regression in canary") == (second, first)
    client = registry.client()
    assert str(client.get_model_version_by_alias("aliased", registry.CHAMPION).version) == first
    assert client.get_model_version("aliased", second).tags["rolled_back.reason"] == "regression in canary"
    assert client.get_model_version("aliased", first).tags["champion.replaced_by"] == second
    with pytest.raises(registry.RegistrationError, match="no earlier champion"):
        registry.rollback("aliased", "again")  # version 1 was the first champion: nothing before it
