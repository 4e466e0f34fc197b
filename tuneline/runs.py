"""One run of a flow on a state folder, from the outside: checked before it starts, alone on its folder, leaving no
process and no stale record behind.

`run_guard(command)` wraps a flow run started by the CLI on the embedded default (no `PREFECT_API_URL`):

1. Preflight, before any Prefect server starts: the state folder, MLflow's store and the artifact folder are
   writable and have free space (`TUNELINE_MIN_FREE_MB`); a failure names the folder and the cause at once.
2. A lock: an OS file lock on `<state>/run.lock`. A second run on the folder fails at once naming the running one,
   or waits for it up to `TUNELINE_LOCK_WAIT_S` seconds with a log line every 30 s. So the embedded Prefect
   server's database is never migrated by two processes at once, and checkpoints and caches are never raced.
3. Stale runs: holding the lock, no other run on the folder is alive, so every run recorded under
   `<state>/active/` is one whose process died (kill -9, a lost machine): its MLflow runs still RUNNING are
   marked KILLED, with the stage it was in.
4. A watchdog process (tuneline/watchdog.py) that stops whatever this process started (the embedded Prefect
   server, training workers) when it dies, kill -9 included.
5. On success, the scratch folders (`<state>/runs/<id>`) of runs that were killed or superseded go.

With a Prefect server the deployments' concurrency limits keep runs apart instead; the preflight still runs.
Nothing here imports Prefect.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from tuneline.errors import ConfigError, TunelineError
from tuneline.settings import state_dir, tracking_uri

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
ACTIVE = "active"
LOGS = "logs"


class StateFolderError(ConfigError):
    """The state folder (or MLflow's store beside it) cannot be written, or is full."""


class StateFolderBusy(TunelineError):
    """Another run holds the state folder."""


def _min_free_bytes() -> int:
    return int(float(os.environ.get("TUNELINE_MIN_FREE_MB", "500")) * 1024 * 1024)


def _writable(folder: Path, role: str) -> None:
    """Create `folder` if need be and write, sync and remove a file in it; StateFolderError naming the cause."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"
        with probe.open("wb") as handle:
            handle.write(b"x" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as exc:
        cause = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full",
                 errno.EDQUOT: "the disk quota is used up"}.get(exc.errno, exc.strerror or str(exc))
        raise StateFolderError(
            f"{role} {folder} is not writable: {cause} ({type(exc).__name__}: {exc}). tuneline keeps its runs, "
            f"MLflow store and Prefect database there: point TUNELINE_HOME at a writable folder, or fix its "
            "permissions") from None
    free = shutil.disk_usage(folder).free
    if free < _min_free_bytes():
        raise StateFolderError(
            f"{role} {folder} has {free / 2**20:.0f} MB free, under the {_min_free_bytes() / 2**20:.0f} MB a run "
            "needs for checkpoints and models (TUNELINE_MIN_FREE_MB): free some space or point TUNELINE_HOME "
            "elsewhere")


def preflight() -> list[Path]:
    """Check the folders a run writes; the folders checked. Takes well under a second."""
    try:
        home = state_dir()
    except OSError as exc:
        raise StateFolderError(f"the state folder {os.environ.get('TUNELINE_HOME', '.tuneline')} cannot be created: "
                               f"{exc.strerror or exc} (TUNELINE_HOME)") from None
    folders = [(home, "the state folder (TUNELINE_HOME)")]
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        folders.append((Path(uri.removeprefix("sqlite:///")).parent, "MLflow's SQLite store (MLFLOW_TRACKING_URI)"))
    elif uri.startswith(("file:", "/")):
        folders.append((Path(uri.removeprefix("file://").removeprefix("file:")), "MLflow's store (MLFLOW_TRACKING_URI)"))
    if not os.environ.get("PREFECT_API_URL"):
        folders.append((Path(os.environ.get("PREFECT_HOME", home / "prefect")), "the embedded Prefect database "
                                                                                 "(PREFECT_HOME)"))
    checked = []
    for folder, role in folders:
        if folder.resolve() not in checked:
            _writable(folder, role)
            checked.append(folder.resolve())
    return checked


@dataclass
class ActiveRun:
    """What `<state>/active/<pid>.json` says of a run in progress."""

    command: str
    pid: int
    host: str
    started: float
    stage: str = "starting"
    mlflow_runs: list[str] = field(default_factory=list)

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        runs = f", MLflow run {', '.join(self.mlflow_runs)}" if self.mlflow_runs else ""
        return f"`tuneline {self.command}` (pid {self.pid} on {self.host}, since {since}, at {self.stage}{runs})"


_current: tuple[Path, ActiveRun] | None = None  # this process's record, while a guarded run is on


def _write(path: Path, record: ActiveRun) -> None:
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(asdict(record)))
    os.replace(partial, path)  # a reader sees the old record or the new one


def note_stage(stage: str) -> None:
    """The stage this process's run is in (a Prefect task's hook calls it); nothing when no run is guarded."""
    if _current is not None:
        path, record = _current
        record.stage = stage
        _write(path, record)


def note_mlflow_run(run_id: str) -> None:
    """An MLflow run this process's run opened: marked KILLED by the next run if this process dies with it open."""
    if _current is not None and run_id not in _current[1].mlflow_runs:
        path, record = _current
        record.mlflow_runs.append(run_id)
        _write(path, record)


def read_active(folder: Path) -> list[tuple[Path, ActiveRun]]:
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append((path, ActiveRun(**json.loads(path.read_text()))))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)  # half-written by a process killed mid-write: nothing to act on
    return found


def close_stale_runs(folder: Path) -> list[str]:
    """Mark KILLED the MLflow runs that dead runs left RUNNING, naming the stage they died in; their ids.

    Called holding the lock: no run recorded here is alive, whatever its pid says now (a pid may be reused)."""
    from tuneline.registry import store as registry

    closed = []
    for path, record in read_active(folder):
        for run_id in record.mlflow_runs:
            try:
                if registry.client().get_run(run_id).info.status != "RUNNING":
                    continue
                registry.set_tags(run_id, {"error": f"its process (pid {record.pid} on {record.host}) stopped during "
                                                    f"{record.stage}; marked KILLED by the next run on {folder.parent}",
                                           "killed_in_stage": record.stage})
                registry.client().set_terminated(run_id, status="KILLED")
                closed.append(run_id)
                log.warning("MLflow run %s was left RUNNING by %s, whose process is gone: marked KILLED", run_id,
                            record.describe())
            except Exception as exc:  # noqa: BLE001 - a deleted run, another tracking server: nothing to close here
                log.info("could not close MLflow run %s of a dead run: %s", run_id, exc)
        path.unlink(missing_ok=True)
    return closed


def remove_leftovers(home: Path, keep: set[str]) -> list[str]:
    """Remove `<home>/runs/<id>` of runs that were killed or superseded (their models live on in checkpoints or the
    registry); runs that failed otherwise keep theirs (a tracking server outage: the files wait for the re-run)."""
    from tuneline.registry import store as registry

    removed = []
    for folder in sorted((home / "runs").glob("*")) if (home / "runs").is_dir() else []:
        if folder.name in keep or not folder.is_dir():
            continue
        try:
            run = registry.client().get_run(folder.name)
        except Exception:  # noqa: BLE001 - not a run of this store: not ours to remove
            continue
        if run.info.status == "KILLED" or "superseded_by" in run.data.tags:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("removed the scratch folders of %d killed or superseded runs: %s", len(removed), ", ".join(removed))
    return removed


class StateLock:
    """An exclusive OS lock (flock) on `<state>/run.lock`, released by the kernel when the process dies."""

    def __init__(self, home: Path):
        self.path = home / LOCK_FILE
        self.handle = None

    def holder(self) -> str:
        try:
            return ActiveRun(**json.loads(self.path.read_text())).describe()
        except (OSError, ValueError, TypeError):
            return "another tuneline process"

    def acquire(self, record: ActiveRun, wait_s: float) -> None:
        handle = self.path.open("a+")
        deadline, announced = time.monotonic() + wait_s, 0.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    waited = f" after waiting {wait_s:g} s" if wait_s else ""
                    raise StateFolderBusy(
                        f"the state folder {self.path.parent} is in use by {self.holder()}{waited}. Runs on one state "
                        "folder go one at a time: wait for it, set TUNELINE_LOCK_WAIT_S=<seconds> to queue behind "
                        "it, or give this run its own TUNELINE_HOME") from None
                if time.monotonic() - announced >= 30:
                    log.info("waiting for %s to finish with %s (up to %g s more, TUNELINE_LOCK_WAIT_S)",
                             self.holder(), self.path.parent, deadline - time.monotonic())
                    announced = time.monotonic()
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(asdict(record)))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def start_watchdog() -> subprocess.Popen | None:
    """The watchdog of this process (Linux: it reads /proc); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    script = Path(__file__).with_name("watchdog.py")
    # Its own session: a kill of this process's group (Ctrl-C, a supervisor) leaves it to clean up the rest.
    return subprocess.Popen([sys.executable, "-I", "-S", str(script), str(os.getpid())], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def log_file(home: Path, command: str) -> Path:
    folder = home / LOGS
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}.log"


@contextmanager
def run_guard(command: str) -> Iterator[Path]:
    """Preflight, lock, close stale runs, watch, record; yields the state folder. See the module docstring."""
    global _current
    preflight()
    home = state_dir()
    record = ActiveRun(command, os.getpid(), socket.gethostname(), time.time())
    embedded = not os.environ.get("PREFECT_API_URL")
    lock = StateLock(home)
    if embedded:
        lock.acquire(record, float(os.environ.get("TUNELINE_LOCK_WAIT_S", "0")))
    active = home / ACTIVE
    active.mkdir(exist_ok=True)
    watchdog = None
    try:
        if embedded:
            close_stale_runs(active)
        watchdog = start_watchdog()
        path = active / f"{os.getpid()}.json"
        _write(path, record)
        _current = (path, record)
        yield home
        if embedded:
            remove_leftovers(home, keep=set(record.mlflow_runs))
    finally:
        _current = None
        (active / f"{os.getpid()}.json").unlink(missing_ok=True)
        lock.release()
        if watchdog is not None:
            watchdog.terminate()  # this process ends well: what it started, it stops itself


class _NoTracebackForOurErrors(logging.Formatter):
    """A console formatter that prints our typed errors as their message: they say what is wrong and what to do,
    and Prefect's 80-line traceback above them buried that. Other errors keep their traceback."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and isinstance(record.exc_info[1], TunelineError):
            record = logging.makeLogRecord(record.__dict__ | {"exc_info": None, "exc_text": None})
        return self.inner.format(record)


@contextmanager
def captured_logs(path: Path) -> Iterator[Path]:
    """Everything logged at INFO and above, tracebacks included, also goes to `path`; the console shows our typed
    errors without their traceback. Call once Prefect has set up its logging (after importing a flow)."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    consoles = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]
    formatters = [h.formatter for h in consoles]
    for console in consoles:
        console.setFormatter(_NoTracebackForOurErrors(console.formatter))
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        for console, formatter in zip(consoles, formatters):
            console.setFormatter(formatter)
