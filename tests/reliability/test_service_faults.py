"""Services failing mid-run, against real servers on 127.0.0.1: an MLflow server that restarts while a run registers,
one that stays down, one that answers 5xx or refuses a request, and a Prefect API that does not answer.

The faults are real (a killed `mlflow server`, refused connections, real HTTP answers); the only thing a test
arranges is the moment: it stops the server from inside the call that comes right before the fault it studies.
"""

from __future__ import annotations

import http.server
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from tuneline.tasks.common import TRANSIENT_RETRIES
from tests.conftest import free_port, make_reviews, running_mlflow_server
from tuneline.registry import store as registry
from tuneline.cli import app
from tuneline.config import load_config
from tuneline.errors import TrackingServerError, is_transient

pytestmark = pytest.mark.e2e
MODEL = "faults"


class RestartableServer:
    """tests.conftest's real `mlflow server` on one port and one store, stopped and started again at will."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self._running: ExitStack | None = None

    def start(self) -> str:
        stack = ExitStack()
        uri = stack.enter_context(running_mlflow_server(self.folder, self.port))
        self._running = stack
        return uri

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.close()


@pytest.fixture
def server(state, monkeypatch):
    """A real MLflow server for one test; MLFLOW_TRACKING_URI points at it."""
    folder = state / "mlflow-server"
    folder.mkdir()
    server = RestartableServer(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.start())
    yield server
    server.stop()


@pytest.fixture
def reviews(tmp_path) -> Path:
    path = tmp_path / "reviews.csv"
    make_reviews(40).to_csv(path, index=False)
    return path


def tiny_retrain(data: Path, base_model: Path):
    """A retrain of a few seconds: the tiny random BERT, two steps, 80 rows."""
    return load_config(overrides=[
        f"data.path={data}", f"train.base_model={base_model}", "train.max_length=64", "train.max_steps=2",
        "train.batch_size=16", "split.train_fraction=0.6", "split.validation_fraction=0.2", "split.test_fraction=0.2",
        "export.parity_rows=8", "export.max_accuracy_drop=1.0", f"registry.model_name={MODEL}",
    ])


def task_runs(flow_run_id) -> dict[str, tuple[object, list[str]]]:
    """Each task run of a flow run by task name: the run and the names of the states it went through."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return {run.name.rsplit("-", 1)[0]: (run, [s.name for s in client.read_task_run_states(run.id)]) for run in runs}


def test_a_registration_rides_out_an_mlflow_restart_after_the_upload(prefect_harness, state, server, tiny_bert,
                                                                     reviews, monkeypatch):
    """The half-done case: the model files are uploaded, then the server dies before the version exists, and
    comes back while Prefect waits to retry. The retry finds the finished upload and creates one version."""
    create_version = MlflowClient.create_model_version
    restarts: list[threading.Thread] = []

    def server_dies_first(self, *args, **kwargs):
        if restarts:
            return create_version(self, *args, **kwargs)
        server.stop()  # the first attempt: the upload is done, the version not yet created
        try:
            return create_version(self, *args, **kwargs)  # refused, through all of MLflow's own retries
        finally:  # the attempt has failed: the server comes back while Prefect waits to retry the task
            restarts.append(threading.Thread(target=server.start, daemon=True))
            restarts[0].start()

    monkeypatch.setattr(MlflowClient, "create_model_version", server_dies_first)
    from tuneline.flows.retrain import retrain

    final = retrain(config=tiny_retrain(reviews, tiny_bert), return_state=True)
    restarts[0].join(timeout=180)
    summary = final.result()

    assert summary.version == "1"
    versions = registry.client().search_model_versions(f"name='{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    register, states = task_runs(final.state_details.flow_run_id)["register"]
    assert register.run_count >= 2 and "AwaitingRetry" in states and states[-1] == "Completed", states
    # The retry re-used the first attempt's upload: the run holds one MLflow model, and the version points at it.
    experiment = registry.client().get_run(summary.run_id).info.experiment_id
    logged = registry.client().search_logged_models([experiment], filter_string=f"source_run_id = '{summary.run_id}'")
    assert len(logged) == 1 and versions[0].source == f"models:/{logged[0].model_id}"
    files = registry.download_version(MODEL, "1", state / "download")
    assert (files / "hf_model" / "model.safetensors").is_file() and (files / "model.int8.onnx").is_file()
    assert not (state / "runs" / summary.run_id).exists()  # a run that succeeded cleans up after itself


# Slow (about a minute: four attempts against a dead server, with their backoff): the fast check that a dead server's
# error is typed, transient and bounded is test_what_mlflow_raises_for_a_server_that_is_down_is_transient_and_a_refusal_is_not.
@pytest.mark.slow
def test_an_mlflow_server_that_stays_down_fails_the_run_clearly_and_keeps_its_files(
        prefect_harness, state, server, tiny_bert, reviews, monkeypatch):
    import tuneline.registry.registration

    render_card = tuneline.registry.registration.render_model_card

    def server_dies_first(**kwargs):  # the register stage starts: everything trained is on disk
        server.stop()
        return render_card(**kwargs)

    monkeypatch.setattr(tuneline.registry.registration, "render_model_card", server_dies_first)
    uri = f"http://127.0.0.1:{server.port}"
    from tuneline.flows.retrain import retrain

    started = time.monotonic()
    final = retrain(config=tiny_retrain(reviews, tiny_bert), return_state=True)
    seconds = time.monotonic() - started
    print(f"the run failed {seconds:.0f} s after it started")  # about 90 s: 2 training steps, then 4 attempts of ~7 s

    assert final.is_failed()
    with pytest.raises(TrackingServerError) as raised:
        final.result()
    [work_dir] = (state / "runs").iterdir()
    message = str(raised.value)
    assert f"the MLflow server at {uri} is unreachable while uploading model_card.md" in message
    assert f"Nothing of run {work_dir.name} is lost: its local files (model, ONNX files) are kept in {work_dir}." in message
    assert "Start the server or fix MLFLOW_TRACKING_URI" in message
    assert (work_dir / "hf_model" / "model.safetensors").is_file()
    assert (work_dir / "onnx" / "model.onnx").is_file() and (work_dir / "onnx" / "model.int8.onnx").is_file()
    runs = task_runs(final.state_details.flow_run_id)
    register, states = runs["register"]
    assert register.run_count == TRANSIENT_RETRIES["retries"] + 1, states  # retried as transient, every time
    assert states.count("AwaitingRetry") == TRANSIENT_RETRIES["retries"] and states[-1] == "Failed"
    # Marking the MLflow run FAILED could not reach the server either: logged, and the flow's own error went on.
    finish, finish_states = runs["finish-tracking"]
    assert finish.run_count == 1 and finish_states[-1] == "Completed"
    assert seconds < 600, "a dead MLflow server must end the run, not hang it"


def test_what_mlflow_raises_for_a_server_that_is_down_is_transient_and_a_refusal_is_not(server, monkeypatch):
    client = registry.client()
    with pytest.raises(MlflowException) as missing:
        client.get_model_version("no-such-model", "1")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST" and not is_transient(missing.value)
    with pytest.raises(MlflowException) as invalid:
        client.search_model_versions("no_such_field = 'x'")
    assert invalid.value.error_code == "INVALID_PARAMETER_VALUE" and not is_transient(invalid.value)

    server.stop()
    started = time.monotonic()
    with pytest.raises(MlflowException) as refused:
        client.get_model_version("no-such-model", "1")
    seconds = time.monotonic() - started
    print(f"a call to the stopped server failed after {seconds:.1f} s")  # ~7 s; MLflow's own defaults: ~246 s
    assert refused.value.error_code == "INTERNAL_ERROR" and is_transient(refused.value)
    assert seconds < 60, "MLflow's retries must be bounded (tuneline.settings.MLFLOW_HTTP_DEFAULTS)"
    # Through tuneline it is a typed error that says where and what, and stays transient for Prefect's retry.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingServerError, match=r"at http://127\.0\.0\.1:\d+ is unreachable while looking up "
                                                  r"no-such-model version 1 \(ConnectionRefusedError") as typed:
        registry.resolve_version("no-such-model", "1")
    assert is_transient(typed.value)


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status in the server's `status` (a proxy in front of MLflow, failing)."""

    def _answer(self) -> None:
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("status, transient", [(503, True), (502, True), (404, False), (403, False)])
def test_an_http_answer_is_transient_only_when_another_try_can_help(status, transient, monkeypatch):
    answers = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    answers.status = status
    threading.Thread(target=answers.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{answers.server_address[1]}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        with pytest.raises(Exception) as raised:
            registry.client().get_experiment_by_name("anything")
    finally:
        answers.shutdown()
    assert is_transient(raised.value) is transient, f"{type(raised.value).__name__}: {raised.value}"


def test_retrain_with_a_prefect_api_that_does_not_answer_fails_at_once(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("PREFECT_API_URL", f"http://tuneline:s3cret-in-url@127.0.0.1:{port}/api")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["retrain", "train.max_steps=1"])
    seconds = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert (f"no Prefect server answers at PREFECT_API_URL=http://***@127.0.0.1:{port}/api" in result.output
            and "Connection refused" in result.output), result.output
    assert "s3cret-in-url" not in result.output
    assert seconds < 30  # without the check: a traceback after ~17 s (Prefect's client tries first)


# Slow (about two minutes): a real Prefect server started and killed, and Prefect's client retries and event drain.
@pytest.mark.slow
def test_a_prefect_server_lost_mid_run_ends_the_run_clearly_and_keeps_its_files(tiny_bert, tmp_path):
    """A real `prefect server` (infra/services.sh, as the infra tests start it) dies once training has written the
    model; the real `tuneline retrain` must end with a clear error, and the trained files must stay on disk.

    What Prefect 3.8.8 does (measured here): tasks run client-side and go on; the first task that calls the API
    (an artifact) fails with httpx.ConnectError, is retried as transient and fails; the flow fails, marks its
    MLflow run FAILED, cannot record its own end, and the process exits after draining its queue of undeliverable
    events at ~7 s each (about 95 s in all). PREFECT_CLIENT_MAX_RETRIES=1 keeps each API call's give-up to ~2 s;
    with the default 5 each takes about a minute (a flow that lost its server ended 140 s after its last task)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.infra.conftest import SCRIPT

    home, prefect_port, mlflow_port = tmp_path / "home", free_port(), free_port()
    env = {name: value for name, value in os.environ.items()
           if name not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME")}
    env |= {"TUNELINE_HOME": str(home), "PREFECT_PORT": str(prefect_port), "MLFLOW_PORT": str(mlflow_port),
            "TUNELINE_WORK_POOL": "", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    data = tmp_path / "reviews.csv"
    make_reviews(40).to_csv(data, index=False)
    try:
        started = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        api = f"http://127.0.0.1:{prefect_port}/api"
        run_env = env | {"PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
                         "PREFECT_HOME": str(home / "client-prefect"), "PREFECT_CLIENT_MAX_RETRIES": "1"}
        command = [str(Path(sys.executable).with_name("tuneline")), "retrain", f"data.path={data}",
                   f"train.base_model={tiny_bert}", "train.max_length=64", "train.max_steps=2",
                   "train.batch_size=16", "split.train_fraction=0.6", "split.validation_fraction=0.2",
                   "split.test_fraction=0.2", "export.parity_rows=8", "export.max_accuracy_drop=1.0"]
        run = subprocess.Popen(command, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while not list((home / "runs").glob("*/hf_model/model.safetensors")):  # training is done
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before it trained"
            time.sleep(0.2)
        os.killpg(int((home / "services" / "prefect.pid").read_text()), signal.SIGKILL)
        lost = time.monotonic()
        output, _ = run.communicate(timeout=600)
        seconds = time.monotonic() - lost
        print(f"the run ended {seconds:.0f} s after the Prefect server died")

        assert run.returncode == 1, output[-3000:]
        assert f"error: the Prefect server at PREFECT_API_URL={api} stopped answering during the run" in output, \
            output[-3000:]
        [work_dir] = (home / "runs").iterdir()
        assert (work_dir / "hf_model" / "model.safetensors").is_file()  # nothing trained is lost
        tracked = MlflowClient(f"http://127.0.0.1:{mlflow_port}").get_run(work_dir.name)
        assert tracked.info.status == "FAILED"  # MLflow still answered: the run says how it ended
        assert seconds < 300, "a lost Prefect server must end the run, not hang it"
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=120)
