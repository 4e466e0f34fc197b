"""The state folder from the outside: read-only or full, shared by two runs, left behind by a killed run.

Each test drives the real CLI (`tuneline retrain` in a process of its own) or `tuneline.runs` on a real MLflow
(SQLite) store. What a user sees: an error that names the folder and the cause before any server starts, a second
run that names the first, a killed run marked KILLED with the stage it died in, no process left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_reviews
from tuneline.runs import ActiveRun, StateFolderBusy, StateFolderError, StateLock, preflight, run_guard

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TUNELINE = str(Path(sys.executable).with_name("tuneline"))


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "TUNELINE_"))}
    return env | {"TUNELINE_HOME": str(home), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"} | extra


def retrain_cli(home: Path, *overrides: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([TUNELINE, "retrain", *overrides], cwd=home.parent, env=environment(home, **extra),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def read_only(tmp_path) -> Path:
    """A read-only file system (tmpfs mounted ro): root writes through `chmod 555`, not through this."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_state_folder_is_named_before_any_server_starts(read_only, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(read_only))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    started = time.perf_counter()
    with pytest.raises(StateFolderError, match="is not writable: the file system is read-only") as refused:
        preflight()
    assert time.perf_counter() - started < 1 and str(read_only) in str(refused.value)
    assert "TUNELINE_HOME" in str(refused.value)

    done = retrain_cli(read_only)
    assert done.returncode == 1
    assert f"the state folder (TUNELINE_HOME) {read_only} is not writable: the file system is read-only" in done.stderr
    assert "Traceback" not in done.stderr and "temporary server" not in done.stderr + done.stdout  # no Prefect start


def test_a_read_only_mlflow_store_and_a_full_disk_are_named(read_only, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELINE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{read_only}/mlflow.db")
    with pytest.raises(StateFolderError, match=r"MLflow's SQLite store \(MLFLOW_TRACKING_URI\) .* read-only"):
        preflight()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("TUNELINE_MIN_FREE_MB", str(10**9))  # more than any disk here has
    with pytest.raises(StateFolderError, match=r"MB free, under the 1000000000 MB a run needs .*TUNELINE_MIN_FREE_MB"):
        preflight()


def test_a_second_run_on_a_state_folder_names_the_first_or_waits_for_it(tmp_path, monkeypatch):
    home = tmp_path / "state"
    home.mkdir()
    first = StateLock(home)
    first.acquire(ActiveRun("retrain", os.getpid(), "here", time.time(), stage="fine-tune"), 0)
    try:
        refused = retrain_cli(home)
        assert refused.returncode == 1
        assert f"the state folder {home} is in use by `tuneline retrain` (pid {os.getpid()} on here" in refused.stderr
        assert "at fine-tune" in refused.stderr and "TUNELINE_LOCK_WAIT_S" in refused.stderr
        waited = retrain_cli(home, TUNELINE_LOCK_WAIT_S="2")
        assert waited.returncode == 1 and "after waiting 2 s" in waited.stderr
    finally:
        first.release()
    # in-process too, and the lock is the kernel's: released with its holder
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from tuneline.runs import ActiveRun, StateLock
        lock = StateLock(Path({str(home)!r}))
        lock.acquire(ActiveRun("tune", os.getpid(), "there", time.time()), 0)
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateFolderBusy, match=f"in use by `tuneline tune` \\(pid {holder.pid} on there"):
            with run_guard("retrain"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_guard("retrain"):  # kill -9 of the holder released it
        pass


def test_the_next_run_marks_a_dead_runs_mlflow_run_killed_in_its_stage_and_clears_its_scratch(tmp_path, monkeypatch):
    home = tmp_path / "state"
    monkeypatch.setenv("TUNELINE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from tuneline.registry import store as registry

    killed = registry.start_run("stale", "killed", {}, "", {})  # RUNNING, as a kill -9 leaves it
    failed = registry.start_run("stale", "failed", {}, "", {})
    registry.finish_run(failed, failed=True, error="the tracking server was down")
    for run_id in (killed, failed):
        (home / "runs" / run_id).mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (home / "active").mkdir()
    (home / "active" / "123.json").write_text(json.dumps({
        "command": "export", "pid": int(gone.stdout), "host": "here", "started": time.time() - 60,
        "stage": "register", "mlflow_runs": [killed]}))

    with run_guard("retrain"):
        run = registry.client().get_run(killed)
        assert run.info.status == "KILLED" and run.data.tags["killed_in_stage"] == "register"
        assert f"stopped during register; marked KILLED by the next run on {home}" in run.data.tags["error"]
        assert not (home / "active" / "123.json").exists()
    # the run succeeded: the killed run's scratch folder went, the failed run keeps its files for its re-run
    assert not (home / "runs" / killed).exists() and (home / "runs" / failed).is_dir()
    assert registry.client().get_run(failed).info.status == "FAILED"
    assert list((home / "active").iterdir()) == []


def descendants(pid: int) -> dict[int, str]:
    sys.path.insert(0, str(ROOT / "tuneline"))
    from watchdog import descendants as found  # the script's own reading of /proc

    return found(pid)


def still_running(pids: dict[int, str]) -> list[int]:
    from watchdog import alive

    return alive(pids)


def test_kill_9_of_a_parent_stops_the_processes_it_started(tmp_path):
    """A parent that started a child in a session of its own (out of reach of a group kill) and a grandchild."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tuneline.runs import start_watchdog
        start_watchdog()
        subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"],
                         start_new_session=True)
        print("started", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while len(descendants(parent.pid)) < 3 and time.monotonic() < deadline:  # watchdog, child, grandchild
        time.sleep(0.2)
    left = descendants(parent.pid)
    assert len(left) == 3
    time.sleep(1)  # the watchdog's first look
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while still_running(left) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(left) == []


# Slow (75 s: two real retrains, one killed): the parts run fast above (the watchdog on kill -9, a stale record closed)
@pytest.mark.slow
def test_a_retrain_killed_with_kill_9_leaves_no_process_and_its_re_run_closes_it(tmp_path, tiny_bert):
    """kill -9 of `tuneline retrain` alone (not its group): the embedded Prefect server and the rest stop within
    30 s. The next run marks the killed MLflow run KILLED in the stage it died in, and once it succeeded, the
    killed run's scratch folder (if it had written one yet) is gone."""
    home, data = tmp_path / "state", tmp_path / "reviews.csv"
    make_reviews(40).to_csv(data, index=False)
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"path": str(data)},
        "train": {"base_model": str(tiny_bert), "max_steps": 400, "save_steps": 2, "batch_size": 8,
                  "max_length": 32, "device": "cpu", "logging_steps": 1},
        "export": {"parity_rows": 4, "max_accuracy_drop": 1.0}, "registry": {"model_name": "killed"}}))
    log = tmp_path / "killed.log"
    run = subprocess.Popen([TUNELINE, "retrain", "--config", str(config)], cwd=tmp_path, env=environment(home),
                           stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((home / "checkpoints").glob("*/checkpoint-*/trainer_state.json")):
        assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    left = descendants(run.pid)
    assert len(left) >= 2, left  # the watchdog and the embedded Prefect server at least
    os.kill(run.pid, signal.SIGKILL)  # the parent alone: no handler of its runs
    run.wait()
    deadline = time.monotonic() + 30
    while still_running(left) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert still_running(left) == [], [Path(f"/proc/{pid}/cmdline").read_text() for pid in still_running(left)]

    [record] = [json.loads(p.read_text()) for p in (home / "active").glob("*.json")]
    [killed_run] = record["mlflow_runs"]
    assert record["stage"] == "fine-tune"
    config.write_text(config.read_text().replace("max_steps: 400", "max_steps: 4"))
    rerun = retrain_cli(home, "--config", str(config))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    closed = client.get_run(killed_run)
    assert closed.info.status == "KILLED" and closed.data.tags["killed_in_stage"] == "fine-tune"
    assert not (home / "runs" / killed_run).exists() and list((home / "active").iterdir()) == []


def test_a_typed_error_prints_its_message_and_the_log_not_a_traceback(tmp_path):
    home, data = tmp_path / "state", tmp_path / "one-class.csv"
    data.write_text("text,label\n" + "".join(f"review number {i},positive\n" for i in range(40)))
    done = retrain_cli(home, f"data.path={data}")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    at = output.find("Traceback")
    assert at < 0, f"a traceback reached the terminal:\n{output[max(0, at - 2000):at + 3000]}"
    # Our line names the failed expectation; the error's type and traceback are in the log (below), not the terminal.
    assert "expect_label_classes_to_be_at_least" in done.stderr
    # The run's progress (Prefect's task and flow lines) reaches the terminal too, not only the log file.
    assert "Finished in state Completed()" in done.stderr and "Flow run" in done.stderr
    lines = done.stderr.splitlines()  # Prefect's own "Stopping temporary server" may follow, at exit
    [last] = [line for line in lines if line.startswith("(the full log, with tracebacks: ")]
    assert lines.index(last) > next(i for i, line in enumerate(lines) if line.startswith("error: ")) and \
        last.endswith(".log)")
    full = Path(last.removeprefix("(the full log, with tracebacks: ").removesuffix(")")).read_text()
    assert "Traceback (most recent call last)" in full and "DataValidationError" in full
