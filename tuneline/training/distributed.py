"""Data-parallel fine-tuning: the same `fine_tune`, in N processes launched with torchrun.

The fine-tune stage calls `fine_tune_parallel` when `train.processes` (or the
number of visible GPUs) is above one. It writes the splits and the config to a
job folder, runs `python -m torch.distributed.run --nproc_per_node N -m
tuneline.training.distributed JOB`, streams the workers' log into the caller's, and
reads back the TrainResult rank 0 wrote. The Trainer does the rest: each
process takes a shard of every batch (NCCL on GPUs, gloo on CPU), gradients
are averaged, and rank 0 saves the model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tuneline.training.checkpoints import checkpoint_step, latest_checkpoint
from tuneline.config import TrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.errors import TrainingError, TunelineError
from tuneline.training.engine import TrainResult, fine_tune, smaller_micro_batch

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


def fine_tune_parallel(splits: SplitResult, config: TrainConfig, output_dir: Path, processes: int,
                       on_log: Callable[[dict[str, float], int], None] | None = None,
                       task: str = "classification", checkpoint_dir: Path | None = None,
                       callbacks: list | None = None) -> TrainResult:
    """`fine_tune` in `processes` data-parallel workers; the result of rank 0.

    `on_log` receives the log lines after the workers finish (per step, as in one process). `callbacks` go to
    every worker's Trainer, so they must pickle (a class defined at a module's top level). When a worker runs
    out of CUDA memory (and train.oom_fallback is on), all of them are relaunched with half the micro-batch and
    twice the gradient accumulation, from the latest checkpoint: one rank cannot shrink alone while the others
    wait for it in all-reduce.
    """
    micro, accumulation, fallbacks, resumed = config.batch_size, config.gradient_accumulation_steps, 0, None
    attempt = config
    while True:
        try:
            result = _launch(splits, attempt, output_dir, processes, task, checkpoint_dir, callbacks)
            break
        except _WorkerOutOfMemory as error:
            if micro == 1:  # (with train.oom_fallback=false the worker raised a TrainingError saying so)
                raise TrainingError(f"CUDA ran out of memory in a data-parallel worker at micro-batch 1 after "
                                    f"{fallbacks} fallback(s) from train.batch_size {config.batch_size} ({error}): "
                                    f"the model does not fit as configured; lower train.max_length "
                                    f"(now {config.max_length}), set train.gradient_checkpointing=true, or train an "
                                    "adapter (train.method=lora, or qlora for a 4-bit base)") from None
            resumed = error.resumed_from_step if fallbacks == 0 else resumed
        smaller = smaller_micro_batch(micro)
        accumulation, micro, fallbacks = accumulation * (micro // smaller), smaller, fallbacks + 1
        # The relaunch continues this job's checkpoints, whatever train.resume said for the first launch.
        attempt = config.model_copy(update={"batch_size": micro, "gradient_accumulation_steps": accumulation,
                                            "resume": True})
        log.warning("a data-parallel worker ran out of CUDA memory: relaunching %d workers with micro-batch %d x %d "
                    "accumulation steps (effective batch unchanged)", processes, micro, accumulation)
    if fallbacks:
        result = dataclasses.replace(result, oom_fallbacks=fallbacks,
                                     resumed_from_step=resumed if resumed is not None else result.resumed_from_step)
    if on_log is not None:
        for line in result.history:
            on_log({k: v for k, v in line.items() if k != "step"}, int(line["step"]))
    return result


class _WorkerOutOfMemory(Exception):
    """A worker's torch.OutOfMemoryError, seen from the launcher."""

    def __init__(self, message: str, resumed_from_step: int | None):
        super().__init__(message)
        self.resumed_from_step = resumed_from_step


def _launch(splits: SplitResult, config: TrainConfig, output_dir: Path, processes: int, task: str,
            checkpoint_dir: Path | None, callbacks: list | None) -> TrainResult:
    """One torchrun launch of `processes` workers; the TrainResult rank 0 wrote."""
    job = output_dir / "parallel"
    job.mkdir(parents=True, exist_ok=True)
    for stale in [job / RESULT_FILE, *job.glob("error.rank*.pkl")]:
        stale.unlink(missing_ok=True)
    checkpoints = checkpoint_dir or output_dir / "checkpoints"
    start = latest_checkpoint(checkpoints) if config.resume else None
    with open(job / "job.pkl", "wb") as handle:
        pickle.dump({"splits": splits, "config": config, "output_dir": output_dir, "task": task,
                     "checkpoint_dir": checkpoint_dir, "callbacks": callbacks}, handle)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "tuneline.training.distributed", str(job)]
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
        if _is_out_of_memory(error):
            raise _WorkerOutOfMemory(f"{failure.stem.removeprefix('error.')}: {error}",
                                     checkpoint_step(start) if start else None)
        cause = f"{failure.stem.removeprefix('error.')}: {type(error).__name__}: {error}" if error else "\n".join(tail)
        raise TrainingError(f"data-parallel fine-tuning with {processes} processes failed (exit {workers.returncode}); "
                            f"{cause}")
    return TrainResult.from_json((job / RESULT_FILE).read_text())


def _is_out_of_memory(error: BaseException | None) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError)


def _work(job: Path) -> None:
    """One worker (run by torchrun): fine-tune; rank 0 writes the result."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank {rank} %(name)s %(message)s")
    with open(job / "job.pkl", "rb") as handle:
        spec = pickle.load(handle)
    try:
        result = fine_tune(spec["splits"], spec["config"], spec["output_dir"], task=spec["task"],
                           checkpoint_dir=spec["checkpoint_dir"], callbacks=spec["callbacks"])
    except BaseException as error:
        try:
            payload = pickle.dumps(error)
        except Exception:  # an exception holding something unpicklable: keep its words
            payload = pickle.dumps(TrainingError(f"{type(error).__name__}: {error}"))
        (job / f"error.rank{rank}.pkl").write_bytes(payload)
        raise
    if rank == 0:
        (job / RESULT_FILE).write_text(result.to_json())


if __name__ == "__main__":
    _work(Path(sys.argv[1]))
