"""`tuneline predict`: files scored in chunks by the served predictor, from a real (SQLite) MLflow registry."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tuneline.serving.batch import PredictionReport, predict_file, score_on_worker
from tuneline.cli import app
from tuneline.errors import ConfigError, DataLoadError, DataValidationError, RegistrationError
from tuneline.settings import PROJECT_ROOT

from tests.tuneline.test_serving import registered_classifiers

pytestmark = pytest.mark.e2e
MODEL = "tuneline-classifier"  # the name the README's commands use
URI = f"models:/{MODEL}@champion"
TUNELINE = str(Path(sys.executable).with_name("tuneline"))
WORDS = ["great", "broke", "fine", "awful", "lovely", "slow", "cheap", "sturdy"]


def reviews(n: int) -> pd.DataFrame:
    """Distinct texts of different lengths (so the predictor's length-sorted pieces differ per chunk), an id and
    a code that only survives as text ("007")."""
    texts = [f"item {i} is " + " ".join(WORDS[(i + k) % 8] for k in range(1 + i % 7)) for i in range(n)]
    return pd.DataFrame({"id": range(n), "code": [f"{i % 13:03d}" for i in range(n)], "text": texts})


@pytest.fixture(scope="module")
def home(tiny_bert, tmp_path_factory):
    """A registry holding a tiny classifier as version 1 of MODEL, champion; this module's tests use it."""
    home = registered_classifiers(tiny_bert, tmp_path_factory, MODEL, versions=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELINE_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield home


@pytest.fixture(scope="module")
def served(home):
    """The server's predictor, answering chunk by chunk as `tuneline predict` asks it."""
    from tuneline.serving import load_model

    model = load_model(MODEL, "1")

    def answers(texts: list[str], chunk_rows: int) -> list[dict]:
        return [p for i in range(0, len(texts), chunk_rows) for p in model.predict(texts[i : i + chunk_rows], {}, None)]

    return answers


@pytest.fixture(scope="module")
def cluster(home):
    """A real two-worker Dask cluster on loopback (worker processes, their registry from TUNELINE_HOME)."""
    from dask.distributed import LocalCluster

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELINE_HOME", str(home))  # the workers' environment
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0", memory_limit="1GiB") as local:
            yield local.scheduler_address


def assert_scored(output: pd.DataFrame, frame: pd.DataFrame, expected: list[dict], prefix: str = "") -> None:
    """OUTPUT holds the input's columns as they were, then the predictor's answers, rows in input order."""
    assert list(output.columns) == [*frame.columns, f"{prefix}label", f"{prefix}score"]
    for column in frame.columns:  # compared as text: a CSV's columns come back as strings
        assert [str(v) for v in output[column]] == [str(v) for v in frame[column]], column
    assert list(output[f"{prefix}label"]) == [p["label"] for p in expected]
    assert list(output[f"{prefix}score"].astype(float)) == pytest.approx([p["score"] for p in expected], abs=1e-6)


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t", dtype=str, keep_default_na=False)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


def leftovers(folder: Path, *expected: str) -> list[str]:
    """What is in `folder` beyond `expected`: a half-written OUTPUT or temporary file would show here."""
    return sorted(set(os.listdir(folder)) - set(expected))


def readme_commands() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("### Batch inference", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_commands_run_as_written(home, cluster, served, tmp_path):
    commands = readme_commands()
    assert [shlex.split(c)[:2] for c in commands] == [["tuneline", "sample"], ["tuneline", "predict"],
                                                      ["tuneline", "predict"]]
    env = os.environ | {"TUNELINE_HOME": str(home), "DASK_SCHEDULER_ADDRESS": cluster,
                        "PATH": f"{Path(TUNELINE).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    said = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        said.append(done.stdout)
    reviews_frame = pd.read_csv(tmp_path / "reviews.csv", dtype=str, keep_default_na=False)
    assert len(reviews_frame) == 600 and "label" in reviews_frame  # hence --output-prefix
    assert said[1].startswith(f"scored 600 rows in 3 chunks with {MODEL} version 1")
    assert said[2].startswith(f"scored 600 rows in 1 chunk with {MODEL} version 1")
    texts = list(reviews_frame.text)
    assert_scored(read_output(tmp_path / "scored.csv"), reviews_frame, served(texts, 256), "predicted_")
    assert_scored(read_output(tmp_path / "scored.parquet"), reviews_frame, served(texts, 1024), "predicted_")
    assert leftovers(tmp_path, "reviews.csv", "scored.csv", "scored.parquet") == []


def write_input(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False, row_group_size=50)  # row groups that do not line up with the chunks
    else:
        import datasets

        datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(("source", "target"), [("in.csv", "out.jsonl"), ("in.tsv", "out.tsv"), ("in.jsonl", "out.csv"),
                                                ("in.parquet", "out.parquet"), ("dataset", "out.csv")])
def test_each_format_is_scored_in_chunks_like_the_server(home, served, tmp_path, monkeypatch, source, target):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    frame = reviews(150)
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = write_input(frame, inputs / source)
    seen: list[tuple[int, int]] = []
    report = predict_file(URI, path, tmp_path / target, chunk_rows=64,
                          progress=lambda done, total: seen.append((done, total)))
    assert report == PredictionReport(150, 3, report.seconds, tmp_path / target, MODEL, "1")
    assert seen == [(0, 150), (64, 150), (128, 150), (150, 150)]  # the total is known before the first chunk
    output = read_output(tmp_path / target)
    assert_scored(output, frame, served(list(frame.text), 64))
    if source.endswith((".csv", ".tsv")) and target.endswith((".csv", ".tsv")):
        assert list(output.code) == list(frame.code)  # CSV columns pass through as text: "007" stays "007"
    assert leftovers(tmp_path, "in", target) == []


def test_the_dask_runner_scores_on_the_workers_in_input_order(home, served, cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    frame = reviews(230)
    path = write_input(frame, tmp_path / "in.jsonl")
    report = predict_file(URI, path, tmp_path / "out.jsonl", chunk_rows=20, runner="dask", address=cluster)
    assert (report.rows, report.chunks) == (230, 12)
    assert_scored(read_output(tmp_path / "out.jsonl"), frame, served(list(frame.text), 20))
    assert leftovers(tmp_path, "in.jsonl", "out.jsonl") == []


def test_a_worker_with_another_registry_is_refused(home, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    with pytest.raises(ConfigError, match=r"on worker .* whose registry is .*MLFLOW_TRACKING_URI / TUNELINE_HOME.*"
                                          r"stored at models:/m-.*the client's at models:/m-elsewhere"):
        score_on_worker(MODEL, "1", "models:/m-elsewhere", ["fine"])


def fake_ray(calls: list) -> types.ModuleType:
    """ray's API as `_RayRunner` uses it, running each task at once in this process."""
    ray = types.ModuleType("ray")
    ray.init = lambda **kwargs: calls.append(("init", kwargs))
    ray.is_initialized = lambda: False
    ray.cluster_resources = lambda: {"CPU": 2.0}
    ray.get = lambda handle: handle
    ray.cancel = lambda handle: None
    ray.shutdown = lambda: calls.append(("shutdown",))

    def remote(**options):
        calls.append(("remote", options))
        return lambda function: types.SimpleNamespace(remote=lambda *arguments: function(*arguments))

    ray.remote = remote
    return ray


def test_the_ray_runner_sends_chunks_to_ray_and_keeps_their_order(home, served, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    calls: list = []
    monkeypatch.setitem(sys.modules, "ray", fake_ray(calls))
    frame = reviews(90)
    path = write_input(frame, tmp_path / "in.csv")
    report = predict_file(URI, path, tmp_path / "out.csv", chunk_rows=40, runner="ray", address="ray://head:10001")
    assert report.chunks == 3
    assert_scored(read_output(tmp_path / "out.csv"), frame, served(list(frame.text), 40))
    assert calls[0][0] == "init" and calls[0][1]["address"] == "ray://head:10001"
    assert calls[1:] == [("remote", {"num_cpus": 1}), ("shutdown",)]


runner = CliRunner()


def fails(args: list[str], *fragments: str) -> str:
    """`tuneline predict ARGS` ends with exit code 1 and one `error:` line holding every fragment."""
    result = runner.invoke(app, ["predict", *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_ray_not_installed_names_the_extra(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray gives: ImportError
    path = write_input(reviews(5), tmp_path / "in.csv")
    fails(["--model", URI, str(path), str(tmp_path / "out.csv"), "--runner", "ray", "--address", "ray://head:10001"],
          "--runner ray needs the ray package", "pip install 'tuneline[ray]'")
    assert leftovers(tmp_path, "in.csv") == []


def test_bad_inputs_say_what_where_and_which_option(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    frame = reviews(6)
    out = str(tmp_path / "out.csv")

    # the column mapped wrong: the columns that exist, a guess, the option
    csv_path = write_input(frame, tmp_path / "in.csv")
    fails(["--model", URI, str(csv_path), out, "--text-column", "txt"],
          "in.csv has no column 'txt' (--text-column", "['id', 'code', 'text']", "Did you mean --text-column text?")
    # a TSV saved with a .csv name
    tsv_named_csv = tmp_path / "tabs.csv"
    frame.to_csv(tsv_named_csv, sep="\t", index=False)
    fails(["--model", URI, str(tsv_named_csv), out], "tabs.csv has no column 'text'", "tab-separated",
          "rename it to tabs.tsv")
    # JSONL with a null text and a number for a text
    rows = [{"text": "fine"}, {"text": "good"}, {"text": None}, {"text": "ok"}, {"text": 5}]
    jsonl = tmp_path / "nulls.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fails(["--model", URI, str(jsonl), out], "column 'text' (--text-column)", "2 lines (lines 3, 5)",
          "missing, null or not a string")
    # a CSV row without a text
    holes = tmp_path / "holes.csv"
    holes.write_text("id,text\n1,fine\n2,\n3,good\n")
    fails(["--model", URI, str(holes), out], "is empty or null in row 2 (counting from 1 after the header)")
    # a Parquet column of numbers named as the texts
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    fails(["--model", URI, str(numbers), out], "column 'text' holds int64 values, not text", "--text-column")
    # empty files
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fails(["--model", URI, str(empty), out], "empty.csv is empty (0 bytes)")
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,text\n")
    fails(["--model", URI, str(header_only), out], "header.csv holds no rows to score")
    # suffixes
    fails(["--model", URI, str(tmp_path / "in.json"), out], "INPUT", "does not exist")
    (tmp_path / "in.json").write_text('{"text": "fine"}\n')
    fails(["--model", URI, str(tmp_path / "in.json"), out], "suffix '.json'", ".csv, .tsv, .jsonl, .parquet",
          "must be named .jsonl")
    fails(["--model", URI, str(csv_path), str(tmp_path / "out.xlsx")], "suffix '.xlsx'", "picks the format")
    # OUTPUT in a folder that does not exist, OUTPUT = INPUT
    fails(["--model", URI, str(csv_path), str(tmp_path / "no-such" / "out.csv")], "no-such does not exist",
          "create it first")
    before = csv_path.read_bytes()
    fails(["--model", URI, str(csv_path), str(csv_path)], "in.csv is INPUT")
    (tmp_path / "link.csv").symlink_to(csv_path)
    fails(["--model", URI, str(csv_path), str(tmp_path / "link.csv")], "link.csv is INPUT")
    assert csv_path.read_bytes() == before
    # the model
    fails(["--model", "models:/nope@champion", str(csv_path), out], "model 'nope' is not registered",
          f"registered models: ['{MODEL}']")
    fails(["--model", f"models:/{MODEL}@staging", str(csv_path), out], "holds alias 'staging'",
          "its aliases: champion -> version 1")
    fails(["--model", f"models:/{MODEL}/7", str(csv_path), out], f"model '{MODEL}' has no version '7'")
    fails(["--model", "runs:/abc/model", str(csv_path), out], "must be models:/NAME@alias or models:/NAME/VERSION")
    # options
    fails(["--model", URI, str(csv_path), out, "--chunk-rows", "0"], "--chunk-rows must be at least 1")
    fails(["--model", URI, str(csv_path), out, "--runner", "spark"], "--runner must be one of local, dask, ray")
    fails(["--model", URI, str(csv_path), out, "--runner", "dask"], "--runner dask needs --address")
    # an input column the predictions would take
    labelled = write_input(frame.assign(label="positive"), tmp_path / "labelled.csv")
    fails(["--model", URI, str(labelled), out], "already has the column(s) ['label']",
          "--output-prefix predicted_ writes predicted_label, predicted_score")
    # a value TSV cannot hold, found mid-run: the temporary file goes too
    tabbed = tmp_path / "tabbed.csv"
    pd.DataFrame({"text": ["fine"] * 5 + ["a\ttab"]}).to_csv(tabbed, index=False)
    fails(["--model", URI, str(tabbed), str(tmp_path / "out.tsv"), "--chunk-rows", "2"],
          "out.tsv: row 6, column 'text' holds a tab or a newline", "write .csv, .jsonl or .parquet")
    assert leftovers(tmp_path, "in.csv", "tabs.csv", "tabbed.csv", "nulls.jsonl", "holes.csv", "numbers.parquet", "empty.csv",
                     "header.csv", "in.json", "labelled.csv", "link.csv") == []


def test_the_library_raises_typed_errors(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    path = write_input(reviews(4), tmp_path / "in.csv")
    with pytest.raises(DataLoadError):
        predict_file(URI, path, tmp_path / "out.csv", text_column="body")
    with pytest.raises(RegistrationError):
        predict_file("models:/nope/1", path, tmp_path / "out.csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": null}\n')
    with pytest.raises(DataValidationError) as raised:
        predict_file(URI, bad, tmp_path / "out.csv")
    assert raised.value.failures == [{"expectation": "text is a string", "column": "text", "unexpected_count": 1,
                                      "lines": [1]}]


def test_a_run_stopped_midway_leaves_no_output_and_no_temporary_file(home, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    path = write_input(reviews(200), tmp_path / "in.csv")
    output = tmp_path / "out.parquet"
    output.write_bytes(b"the previous run's output")

    def interrupt(done: int, total: int) -> None:
        if done:  # the first chunk is in the temporary file: Ctrl-C now
            assert len(leftovers(tmp_path, "in.csv", "out.parquet")) == 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_file(URI, path, output, chunk_rows=50, progress=interrupt)
    assert output.read_bytes() == b"the previous run's output"  # the old OUTPUT stands; no half of a new one
    assert leftovers(tmp_path, "in.csv", "out.parquet") == []


def test_sigterm_mid_run_removes_the_temporary_file(home, tmp_path):
    path = write_input(reviews(60_000), tmp_path / "in.csv")
    env = os.environ | {"TUNELINE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([TUNELINE, "predict", "--model", URI, str(path), str(tmp_path / "out.jsonl"),
                                "--chunk-rows", "100"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path, "in.csv") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped: " + process.communicate()[1][-2000:]
    [temporary] = leftovers(tmp_path, "in.csv")
    assert temporary.startswith(".out.jsonl.") and temporary.endswith(".tmp")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert leftovers(tmp_path, "in.csv") == []


def test_batch_inference_imports_neither_torch_nor_prefect(home, tmp_path):
    path = write_input(reviews(10), tmp_path / "in.parquet")
    script = f"""
import sys
from tuneline.serving.batch import predict_file
report = predict_file({URI!r}, {str(path)!r}, {str(tmp_path / 'out.csv')!r})
heavy = sorted({{"torch", "prefect", "transformers"}} & set(sys.modules))
assert not heavy, heavy
print(report.rows)
"""
    env = os.environ | {"TUNELINE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "10"
