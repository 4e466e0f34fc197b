"""Data-parallel fine-tuning: real torchrun workers (gloo DDP on CPU), the same code path GPUs take with NCCL."""

from __future__ import annotations

import math

import pytest

from tuneline.config import TrainConfig
from tuneline.distributed import fine_tune_parallel, process_count
from tuneline.errors import TrainingError
from tuneline.modeling import load_trained


def test_two_workers_share_each_epoch_and_rank_zero_saves(reviews_splits, tiny_bert, tmp_path):
    config = TrainConfig(base_model=str(tiny_bert), epochs=1, batch_size=4, max_length=32, device="cpu", processes=2)
    logged: list[int] = []
    result = fine_tune_parallel(reviews_splits, config, tmp_path, 2, on_log=lambda logs, step: logged.append(step))
    rows = len(reviews_splits.train)
    # Each step takes batch_size rows in each of the 2 workers: half the steps of one process for one epoch.
    assert result.steps == math.ceil(rows / (2 * config.batch_size))
    assert result.steps < math.ceil(rows / config.batch_size)
    assert {"loss", "accuracy"} <= set(result.validation_metrics)
    assert load_trained(result.model_dir).config.num_labels == len(reviews_splits.labels)
    assert logged and logged[-1] == result.steps  # the history reached the caller, per step


def test_a_failing_worker_reports_its_last_lines(reviews_splits, tmp_path):
    config = TrainConfig(base_model=str(tmp_path / "no-such-model"), max_steps=1, device="cpu", processes=2)
    with pytest.raises(TrainingError, match="data-parallel fine-tuning with 2 processes failed") as caught:
        fine_tune_parallel(reviews_splits, config, tmp_path, 2)
    assert "no-such-model" in str(caught.value)


def test_process_count_follows_the_config_and_the_hardware():
    assert process_count(TrainConfig(processes=3)) == 3
    assert process_count(TrainConfig(device="cpu")) == 1
    import torch

    expected = torch.cuda.device_count() if torch.cuda.device_count() > 1 else 1
    assert process_count(TrainConfig()) == expected
