"""Data-parallel fine-tuning: real torchrun workers (gloo DDP on CPU), the same code path GPUs take with NCCL."""

from __future__ import annotations

import math

import pytest
from transformers import TrainerCallback

from tuneline.config import TrainConfig
from tuneline.training.distributed import fine_tune_parallel, process_count
from tuneline.errors import TrainingError
from tuneline.training.modeling import load_trained


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


class OutOfMemoryAboveMicroBatch2(TrainerCallback):
    """In every worker: a real `torch.OutOfMemoryError` before step 3 while the micro-batch is above 2 (a top-level
    class, so it pickles into the torchrun workers)."""

    def on_step_begin(self, args, state, control, **kwargs):
        import torch

        if args.per_device_train_batch_size > 2 and state.global_step >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


@pytest.mark.slow  # 36 s: three launches of two torchrun workers; test_two_workers_share_each_epoch... runs one launch
def test_out_of_memory_in_a_worker_relaunches_all_of_them_with_half_the_micro_batch(reviews_splits, tiny_bert, tmp_path):
    config = TrainConfig(base_model=str(tiny_bert), max_steps=4, save_steps=2, batch_size=4, max_length=32,
                         logging_steps=1, device="cpu", processes=2)
    result = fine_tune_parallel(reviews_splits, config, tmp_path, 2, callbacks=[OutOfMemoryAboveMicroBatch2()])
    # Both ranks shrank together (one alone would leave the other waiting in all-reduce) and went on from step 2.
    assert (result.micro_batch, result.gradient_accumulation_steps, result.oom_fallbacks) == (2, 2, 1)
    assert result.steps == 4 and result.micro_batch * result.gradient_accumulation_steps == config.batch_size
    assert [line["step"] for line in result.history if "loss" in line] == [3, 4]  # steps 1-2 were not trained again
