"""Checkpoints that outlive a crash: one folder per training job, found again by a retry or a re-run.

The retrain flow's fine-tune stage writes the Trainer's checkpoints to
`<state>/checkpoints/<key>`. The key names the training job: the train and
validation data, the task, the labels, the base model and every training
setting that changes the trained weights. A Prefect retry of the stage and a
re-run of the flow after the process was killed compute the same key, so they
find the latest complete checkpoint and continue from it instead of starting
over. Once training completed, `finished/` holds the model and its result
(and the Trainer's checkpoints go), so a re-run after a later stage failed
takes them as they are. `owner.json` names the MLflow run training into the
folder, so a re-run can say whose work it continued, and refuse to write into
a folder a live process is still training into. The flow deletes the folder
once the whole run succeeded; a failure later in the flow (export, registry)
keeps it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneline.config import TrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.errors import TrainingError

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
FINISHED = "finished"  # the trained model and its TrainResult, once training of the job completed
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it is incomplete
_PREFIX = "checkpoint-"

# TrainConfig fields that cannot change the trained weights: checkpoints saved under other values resume as well.
# Every other field (a new one too, until someone adds it here) is part of the key: a changed value starts afresh
# rather than continuing work that was done with another setting.
_NOT_IN_KEY = frozenset({"eval_batch_size", "logging_steps", "save_total_limit", "resume", "oom_fallback", "cv_folds"})


def _model_stamp(source: str) -> str:
    """A cheap stand-in for the base model's identity: its weight and config files' names, sizes and mtimes.

    Not a content hash (hashing a 14 GB model on every attempt would cost more than the resume saves): a copied or
    touched folder gives a new stamp, which only means starting afresh. A Hub id is the id.
    """
    folder = Path(source)
    if not folder.is_dir():
        return source
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def checkpoint_key(splits: SplitResult, config: TrainConfig, task: str, model_source: str) -> str:
    """The name of one training job: same data, task, labels, base model and result-changing settings, same key."""
    payload = {
        "train": splits.hashes["train"],
        "validation": splits.hashes["validation"],  # evaluations choose the best checkpoint and stop early
        "task": task,
        "labels": list(splits.labels),
        "model": _model_stamp(model_source),
        "train_config": config.model_dump(mode="json", exclude=set(_NOT_IN_KEY)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def checkpoint_step(checkpoint: Path) -> int:
    """`.../checkpoint-40` -> 40."""
    return int(checkpoint.name.removeprefix(_PREFIX))


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the highest step whose save completed; None when there is none.

    A process killed while saving leaves a `checkpoint-N` without its trainer state (written last), which the
    Trainer cannot resume from: such folders are removed, so the next save of step N starts clean.
    """
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)
             and p.name.removeprefix(_PREFIX).isdigit()]
    for checkpoint in sorted(found, key=checkpoint_step, reverse=True):
        try:
            json.loads((checkpoint / TRAINER_STATE).read_text())
            return checkpoint
        except (OSError, ValueError):
            log.warning("removing %s: its save did not complete (the process was stopped while writing it)", checkpoint)
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder as hard links (the weights are not stored twice); a plain copy across file systems."""
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def record_finished(folder: Path, job: str, model_dir: Path, result_json: str) -> None:
    """Keep the finished model and its result in the job's folder; the Trainer's checkpoints are not needed any more.

    A re-run after a later stage failed (export, registry) takes them as they are: resuming the Trainer from its
    last checkpoint would train one step more when that step ended mid-epoch (transformers 5.23), and evaluate again.
    """
    partial = folder / f".{FINISHED}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    _link_tree(model_dir, partial / "hf_model")
    (partial / "result.json").write_text(json.dumps({"job": job, "result": result_json}))
    shutil.rmtree(folder / FINISHED, ignore_errors=True)
    os.replace(partial, folder / FINISHED)  # one rename: a reader sees the whole record or none
    for checkpoint in folder.glob(f"{_PREFIX}*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def take_finished(folder: Path, job: str, model_dir: Path) -> str | None:
    """The result (JSON) of this job's finished training, its model linked to `model_dir`; None when it has none."""
    try:
        saved = json.loads((folder / FINISHED / "result.json").read_text())
    except (OSError, ValueError):
        return None
    if saved.get("job") != job:  # a default folder (<output_dir>/checkpoints) reused for another job
        return None
    shutil.rmtree(model_dir, ignore_errors=True)
    _link_tree(folder / FINISHED / "hf_model", model_dir)
    return saved["result"]


@dataclass(frozen=True)
class CheckpointOwner:
    """Who trains into a checkpoint folder: an MLflow run, in a process on a host."""

    run_id: str
    host: str
    pid: int
    claimed_at: float  # seconds since the epoch

    def is_alive_elsewhere(self) -> bool:
        """True when another process on this host with the owner's pid still runs (a concurrent run).

        A process on another host cannot be checked from here: it counts as gone. The same pid is this process
        (a Prefect retry runs in the process that failed), never a rival.
        """
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process holds the pid: it exists
            return True
        return True


def read_owner(folder: Path) -> CheckpointOwner | None:
    """The owner recorded in `folder`, or None when there is none (or it cannot be read)."""
    try:
        return CheckpointOwner(**json.loads((folder / OWNER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def claim(folder: Path, run_id: str) -> CheckpointOwner | None:
    """Record `run_id` (this process) as the owner of `folder`; return the previous owner, if any.

    Raises TrainingError when a live process of another run owns it: two runs writing the same checkpoints
    would corrupt both.
    """
    folder.mkdir(parents=True, exist_ok=True)
    previous = read_owner(folder)
    if previous is not None and previous.run_id != run_id and previous.is_alive_elsewhere():
        raise TrainingError(
            f"MLflow run {previous.run_id} (pid {previous.pid} on {previous.host}) is training the same job into "
            f"{folder} right now; wait for it to finish, or stop it: its checkpoints stay and the next run resumes "
            "from them")
    owner = CheckpointOwner(run_id=run_id, host=socket.gethostname(), pid=os.getpid(), claimed_at=time.time())
    partial = folder / f".{OWNER_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(asdict(owner)))
    os.replace(partial, folder / OWNER_FILE)  # atomic: a reader sees the old owner or the new one
    return previous
