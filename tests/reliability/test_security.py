"""Secrets come only from the environment or Prefect Secret blocks and never reach configs, logs or records; models
load only from safetensors; nothing unpickles input tuneline did not write itself."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_reviews, running_mlflow_server
from tuneline.registry import store as registry
from tuneline.cli import app
from tuneline.config import load_config
from tuneline.errors import ConfigError, UnsafeModelError
from tuneline.settings import PROJECT_ROOT, SECRET_VARIABLES, redact

# Distinctive values, so a leak anywhere is found by a plain substring search.
SECRETS = {
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-4a6b8c",
    "AWS_ACCESS_KEY_ID": "aws-key-id-1f2e3d",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-5b1e2d",
    "TUNELINE_SERVE_TOKEN": "serve-token-9c8d7e",
    "HF_TOKEN": "hf-token-3c2b1a",
}
URL_PASSWORD = "urlpass-7f3a9c"


def test_a_config_holding_a_secret_is_refused_and_says_where_it_belongs(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  epochs: 1\nmlflow:\n  password: hunter2-in-yaml\n")
    with pytest.raises(ConfigError) as in_file:
        load_config(path)
    message = str(in_file.value)
    assert "mlflow.password looks like a credential" in message
    assert "MLFLOW_TRACKING_PASSWORD (or the Prefect Secret block 'tuneline-mlflow-tracking-password')" in message
    assert "hunter2-in-yaml" not in message

    with pytest.raises(ConfigError, match=r"serving\.token looks like a credential: remove it and set the environment "
                                          r"variable TUNELINE_SERVE_TOKEN \(or the Prefect Secret block "
                                          r"'tuneline-serve-token'\)"):
        load_config(overrides=["serving.token=abc-in-override"])
    with pytest.raises(ConfigError, match=r"data\.path holds a URL with a password in it") as in_url:
        load_config(overrides=["data.path=https://reader:pw-in-url@data.example/reviews.csv"])
    assert "pw-in-url" not in str(in_url.value)
    # Keys that only sound alike are real settings, and naming where a secret lives is the right way.
    assert load_config(overrides=["generation.max_new_tokens=8"]).generation.max_new_tokens == 8
    result = CliRunner().invoke(app, ["config", "aws.secret_access_key=xyz-in-cli"])
    assert result.exit_code == 1 and "AWS_SECRET_ACCESS_KEY" in result.output and "xyz-in-cli" not in result.output


def test_redact_hides_url_credentials_and_secret_values(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("HF_TOKEN", "abc")  # too short to tell from ordinary text: left alone
    text = (f"GET http://bob:{URL_PASSWORD}@mlflow.internal:5000/api failed; "
            f"key={SECRETS['AWS_SECRET_ACCESS_KEY']}; abc; s3://bucket/a@b")
    assert redact(text) == "GET http://***@mlflow.internal:5000/api failed; key=***; abc; s3://bucket/a@b"


def _flow_logs_and_artifacts(flow_run_id) -> str:
    """Everything Prefect holds of a flow run that a person can read: parameters, log lines, artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # log lines travel to the server in batches
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
    return "\n".join([json.dumps(run.parameters, default=str), *(log.message for log in logs),
                      *(f"{a.key} {a.description} {a.data}" for a in artifacts)])


def test_secret_blocks_fill_unset_variables_and_their_values_are_never_logged(prefect_harness, monkeypatch):
    from prefect import flow
    from prefect.blocks.system import Secret

    from tuneline.tasks.tracking import load_secrets

    Secret(value=SECRETS["MLFLOW_TRACKING_TOKEN"]).save(SECRET_VARIABLES["MLFLOW_TRACKING_TOKEN"], overwrite=True)
    Secret(value="serve-token-from-block").save(SECRET_VARIABLES["TUNELINE_SERVE_TOKEN"], overwrite=True)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("TUNELINE_SERVE_TOKEN", SECRETS["TUNELINE_SERVE_TOKEN"])  # the environment wins
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)  # no block of these names: they stay unset

    @flow(name="secrets")
    def uses_secrets() -> list[str]:
        return load_secrets()

    final = uses_secrets(return_state=True)

    assert final.result() == ["MLFLOW_TRACKING_TOKEN"]
    import os

    assert os.environ["MLFLOW_TRACKING_TOKEN"] == SECRETS["MLFLOW_TRACKING_TOKEN"]
    assert os.environ["TUNELINE_SERVE_TOKEN"] == SECRETS["TUNELINE_SERVE_TOKEN"]
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ
    recorded = _flow_logs_and_artifacts(final.state_details.flow_run_id)
    assert "set MLFLOW_TRACKING_TOKEN from Prefect Secret blocks" in recorded
    assert SECRETS["MLFLOW_TRACKING_TOKEN"] not in recorded


def _run_records(run_id: str, folder: Path) -> str:
    """Everything MLflow holds of a run and its version that a person can read: params, tags, metric names, every
    text artifact of the run, the version's tags and description."""
    client = registry.client()
    run = client.get_run(run_id)
    parts = [json.dumps(run.data.params), json.dumps(run.data.tags), " ".join(run.data.metrics)]
    pending = [""]
    while pending:
        for entry in client.list_artifacts(run_id, pending.pop() or None):
            if entry.is_dir:
                pending.append(entry.path)
            elif Path(entry.path).suffix in (".md", ".yaml", ".json", ".csv", ".txt"):
                parts.append(Path(client.download_artifacts(run_id, entry.path, str(folder))).read_text())
    for version in client.search_model_versions(f"run_id = '{run_id}'"):
        parts += [json.dumps(version.tags), version.description or ""]
    return "\n".join(parts)


def test_a_run_records_no_secret_from_its_environment(prefect_harness, state, tiny_bert, tmp_path, monkeypatch, capfd):
    """A real retrain against a real MLflow server reached through a URI with a password in it, with every secret
    variable set: neither the password nor any secret value shows up in MLflow, in Prefect, in the summary or in
    the process's own output."""
    for variable, value in SECRETS.items():
        monkeypatch.setenv(variable, value)
    data = tmp_path / "reviews.csv"
    make_reviews(40).to_csv(data, index=False)
    with running_mlflow_server(tmp_path / "server") as uri:
        port = uri.rsplit(":", 1)[1]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://tuneline:{URL_PASSWORD}@127.0.0.1:{port}")
        from tuneline.flows.retrain import retrain

        final = retrain(config=load_config(overrides=[
            f"data.path={data}", f"train.base_model={tiny_bert}", "train.max_length=64", "train.max_steps=2",
            "train.batch_size=16", "split.train_fraction=0.6", "split.validation_fraction=0.2",
            "split.test_fraction=0.2", "export.parity_rows=8", "export.max_accuracy_drop=1.0",
            "registry.model_name=secretive"]), return_state=True)
        summary = final.result()
        # A failed run's error tag goes through the same redaction.
        failed = registry.start_run("secretive", "failing", {}, "", {})
        registry.finish_run(failed, failed=True, error=f"ConnectionError: http://tuneline:{URL_PASSWORD}@host "
                                                       f"with {SECRETS['AWS_SECRET_ACCESS_KEY']}")
        error_tag = registry.client().get_run(failed).data.tags["error"]
        recorded = "\n".join([repr(summary), summary.to_markdown(), _run_records(summary.run_id, tmp_path / "artifacts"),
                              _flow_logs_and_artifacts(final.state_details.flow_run_id), error_tag,
                              *capfd.readouterr()])

    assert summary.tracking_uri == f"http://***@127.0.0.1:{port}"
    assert error_tag == "ConnectionError: http://***@host with ***"
    assert "config.yaml" in recorded or "train.max_steps" in recorded  # the records were really read
    for secret in [URL_PASSWORD, *SECRETS.values()]:
        assert secret not in recorded, secret


def _pickled_copy(tiny_bert: Path, folder: Path) -> Path:
    """The tiny BERT as an old-style checkpoint: config, tokenizer and `pytorch_model.bin` (a pickle), no safetensors."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_bert, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(str(tiny_bert / "model.safetensors")), folder / "pytorch_model.bin")
    return folder


def test_a_model_with_pickled_weights_is_refused_by_the_loaders(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from tuneline.promotion.gate import score_version
    from tuneline.training.modeling import load_trained

    pickled = _pickled_copy(tiny_bert, tmp_path / "hf_model")
    # transformers alone would load it (through torch.load): the refusal is tuneline's.
    assert AutoModelForSequenceClassification.from_pretrained(pickled) is not None

    with pytest.raises(UnsafeModelError, match=r"holds no safetensors weights: it has only pickled weights "
                                                r"\(pytorch_model\.bin\)\. tuneline loads models only from safetensors"):
        load_trained(pickled)
    test = make_reviews(2).assign(label=["1.0", "0.0", "1.0", "0.0"])
    with pytest.raises(UnsafeModelError, match="pytorch_model.bin"):  # the gate re-scoring a downloaded champion
        score_version("regression", pickled, test, 32, 4)
    assert load_trained(tiny_bert).config.num_labels == 2  # the same model saved as safetensors loads


# The only places tuneline unpickles, each reading a file that tuneline itself wrote a moment before, in a folder
# of the run under the state folder (never a download from the registry or the Hub). A new one must be argued here.
TRUSTED_UNPICKLING = {
    ("tuneline/training/distributed.py", "_launch", "pickle.loads"): "error.rank*.pkl, written by our own torchrun workers",
    ("tuneline/training/distributed.py", "_work", "pickle.load"): "job.pkl, written by _launch, the parent of the worker",
    ("tuneline/tuning/search.py", "_train_in_child", "pickle.loads"): "outcome.pkl, written by the trial's child process",
    ("tuneline/tuning/search.py", "_child_main", "pickle.loads"): "trial.pkl, written by _train_in_child, the parent",
    ("tuneline/export/variants.py", "torchscript_runner", "torch.jit.load"): "model.int8.pt, which quantize_torch_dynamic "
    "wrote in the same export task (a TorchScript archive: tensors and TorchScript code, no Python objects)",
}
UNPICKLING = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads", "dill.load",
              "dill.loads", "joblib.load", "torch.jit.load", "pandas.read_pickle", "pd.read_pickle", "marshal.loads",
              "shelve.open", "yaml.unsafe_load", "yaml.full_load"}


def _calls(path: Path):
    """(enclosing function, dotted callee, call node) for every call in a module, import aliases resolved."""
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name: a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}

    def dotted(node) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit(node, function: str):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call) and (callee := dotted(child.func)):
                yield name, callee, child
            yield from visit(child, name)

    yield from visit(tree, "<module>")


def test_nothing_unpickles_untrusted_input_and_torch_load_is_weights_only():
    found, unsafe = set(), []
    for path in sorted([*(PROJECT_ROOT / "tuneline").rglob("*.py"), *(PROJECT_ROOT / "tasks").rglob("*.py"),
                        *(PROJECT_ROOT / "flows").rglob("*.py")]):
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        for function, callee, call in _calls(path):
            keywords = {k.arg: k.value for k in call.keywords}
            if callee == "torch.load":
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    unsafe.append(f"{relative}:{call.lineno} torch.load without weights_only=True")
            elif callee in ("numpy.load", "np.load") and "allow_pickle" in keywords:
                unsafe.append(f"{relative}:{call.lineno} np.load(allow_pickle=...)")
            elif callee == "yaml.load":
                unsafe.append(f"{relative}:{call.lineno} yaml.load (use yaml.safe_load)")
            elif callee in UNPICKLING:
                found.add((relative, function, callee))
    assert not unsafe, unsafe
    assert found == set(TRUSTED_UNPICKLING), (
        f"unpickling not argued in TRUSTED_UNPICKLING: {sorted(found - set(TRUSTED_UNPICKLING))}; "
        f"gone (remove it there): {sorted(set(TRUSTED_UNPICKLING) - found)}")
