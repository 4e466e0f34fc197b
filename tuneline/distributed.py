"""Data-parallel fine-tuning: the same `fine_tune`, in N processes launched with torchrun.

The fine-tune stage calls `fine_tune_parallel` when `train.processes` (or the
number of visible GPUs) is above one. It writes the splits and the config to a
job folder, runs `python -m torch.distributed.run --nproc_per_node N -m
tuneline.distributed JOB`, streams the workers' log into the caller's, and
reads back the TrainResult rank 0 wrote. The Trainer does the rest: each
process takes a shard of every batch (NCCL on GPUs, gloo on CPU), gradients
are averaged, and rank 0 saves the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tuneline.config import TrainConfig
from tuneline.data import SplitResult
from tuneline.errors import TrainingError, TunelineError
from tuneline.training import TrainResult, fine_tune

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


def process_count(config: TrainConfig) -> int:
    """`train.processes` when set; else one per visible GPU when there are several; else 1."""
    if config.processes:
        return config.processes
    if config.device == "cpu":
        return 1
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() and torch.cuda.device_count() > 1 else 1


def _result_to_json(result: TrainResult) -> str:
    return json.dumps(dataclasses.asdict(result), default=str)


def _result_from_json(text: str) -> TrainResult:
    fields = json.loads(text)
    fields["model_dir"] = Path(fields["model_dir"])
    fields["history"] = tuple(fields["history"])
    return TrainResult(**fields)


def fine_tune_parallel(splits: SplitResult, config: TrainConfig, output_dir: Path, processes: int,
                       on_log: Callable[[dict[str, float], int], None] | None = None,
                       task: str = "classification") -> TrainResult:
    """`fine_tune` in `processes` data-parallel workers; the result of rank 0.

    `on_log` receives the log lines after the workers finish (per step, as in one process).
    """
    job = output_dir / "parallel"
    job.mkdir(parents=True, exist_ok=True)
    for stale in [job / RESULT_FILE, *job.glob("error.rank*.pkl")]:
        stale.unlink(missing_ok=True)
    with open(job / "job.pkl", "wb") as handle:
        pickle.dump({"splits": splits, "config": config, "output_dir": output_dir, "task": task}, handle)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "tuneline.distributed", str(job)]
    log.info("launching %d data-parallel workers: %s", processes, " ".join(command[2:]))
    # Each worker gets its share of the cores, not all of them each (oversubscription is slower than one process).
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as workers:
        for line in workers.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-40:]
            if "tuneline" in line or "rank" in line.lower():
                log.info("%s", line)
    if workers.returncode != 0 or not (job / RESULT_FILE).is_file():
        failure = next(iter(sorted(job.glob("error.rank*.pkl"))), None)
        error = pickle.loads(failure.read_bytes()) if failure else None
        if isinstance(error, TunelineError):
            raise error  # bad data or config: the same typed error one process would raise
        cause = f"{failure.stem.removeprefix('error.')}: {type(error).__name__}: {error}" if error else "\n".join(tail)
        raise TrainingError(f"data-parallel fine-tuning with {processes} processes failed (exit {workers.returncode}); "
                            f"{cause}")
    result = _result_from_json((job / RESULT_FILE).read_text())
    if on_log is not None:
        for line in result.history:
            on_log({k: v for k, v in line.items() if k != "step"}, int(line["step"]))
    return result


def _work(job: Path) -> None:
    """One worker (run by torchrun): fine-tune; rank 0 writes the result."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank {rank} %(name)s %(message)s")
    with open(job / "job.pkl", "rb") as handle:
        spec = pickle.load(handle)
    try:
        result = fine_tune(spec["splits"], spec["config"], spec["output_dir"], task=spec["task"])
    except BaseException as error:
        try:
            payload = pickle.dumps(error)
        except Exception:  # an exception holding something unpicklable: keep its words
            payload = pickle.dumps(TrainingError(f"{type(error).__name__}: {error}"))
        (job / f"error.rank{rank}.pkl").write_bytes(payload)
        raise
    if rank == 0:
        (job / RESULT_FILE).write_text(_result_to_json(result))


if __name__ == "__main__":
    _work(Path(sys.argv[1]))
