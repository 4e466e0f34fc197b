"""The training job's checkpoint folder: a stable key, only complete checkpoints, one live owner."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tuneline.training.checkpoints import OWNER_FILE, checkpoint_key, claim, latest_checkpoint, read_owner
from tuneline.config import TrainConfig
from tuneline.errors import TrainingError


def test_the_key_names_the_job_not_the_run(reviews_splits, tiny_bert):
    config = TrainConfig(base_model=str(tiny_bert), max_steps=40, save_steps=10)
    key = checkpoint_key(reviews_splits, config, "classification", str(tiny_bert))
    assert key == checkpoint_key(reviews_splits, config.model_copy(), "classification", str(tiny_bert))
    # Settings that cannot change the trained weights keep the key: the checkpoints still fit.
    for harmless in ({"logging_steps": 1}, {"eval_batch_size": 7}, {"resume": False}, {"save_total_limit": 5},
                     {"oom_fallback": False}):
        assert checkpoint_key(reviews_splits, config.model_copy(update=harmless), "classification", str(tiny_bert)) == key
    # Anything that changes them gives another folder: no run continues work done on other terms.
    for changed in ({"learning_rate": 1e-3}, {"batch_size": 16}, {"seed": 1}, {"max_steps": 41}, {"max_length": 64}):
        assert checkpoint_key(reviews_splits, config.model_copy(update=changed), "classification", str(tiny_bert)) != key
    fewer_rows = type(reviews_splits)(train=reviews_splits.train[1:], validation=reviews_splits.validation,
                                      test=reviews_splits.test, labels=reviews_splits.labels)
    assert checkpoint_key(fewer_rows, config, "classification", str(tiny_bert)) != key
    assert checkpoint_key(reviews_splits, config, "regression", str(tiny_bert)) != key


def test_only_a_complete_checkpoint_is_resumed(tmp_path):
    for step in (10, 20, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (10, 20):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-30" / "model.safetensors").write_bytes(b"half a model")  # killed while saving
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-20"
    assert not (tmp_path / "checkpoint-30").exists()  # removed, so step 30 is saved afresh
    assert latest_checkpoint(tmp_path / "missing") is None


def test_a_live_owner_keeps_its_folder_and_a_dead_one_hands_it_over(tmp_path):
    assert claim(tmp_path, "run-a") is None
    assert read_owner(tmp_path).run_id == "run-a"
    assert claim(tmp_path, "run-a").run_id == "run-a"  # a Prefect retry: the same run, the same process
    # Another live process on this host owns it: a second run must not write the same checkpoints.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            (tmp_path / OWNER_FILE).write_text(json.dumps({"run_id": "run-b", "host": socket.gethostname(),
                                                           "pid": other.pid, "claimed_at": 0.0}))
            with pytest.raises(TrainingError, match="run-b .* is training the same job"):
                claim(tmp_path, "run-c")
        finally:
            other.kill()
    # That process is gone (as after kill -9): the next run takes over and learns whose work it continues.
    previous = claim(tmp_path, "run-c")
    assert (previous.run_id, previous.pid) == ("run-b", other.pid)
    assert read_owner(tmp_path).run_id == "run-c" and read_owner(tmp_path).pid == os.getpid()
