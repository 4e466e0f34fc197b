import pytest

from tuneline.config import TrainConfig
from tuneline.errors import ConfigError
from tuneline.training.engine import fine_tune, predict_proba
from tuneline.training.modeling import resolve_model_source


def test_builtin_model_resolves_to_the_packaged_folder():
    folder = resolve_model_source("builtin:minilm-l6")
    assert folder.endswith("model")
    assert resolve_model_source("bert-base-uncased") == "bert-base-uncased"  # Hub ids pass through untouched
    with pytest.raises(ConfigError, match="unknown built-in model"):
        resolve_model_source("builtin:gpt-7")


def test_fine_tune_lowers_the_loss_and_saves_a_loadable_model(tiny_bert, reviews_splits, tmp_path):
    logged = []
    config = TrainConfig(base_model=str(tiny_bert), max_steps=30, batch_size=8, learning_rate=2e-3,
                         warmup_ratio=0.0, logging_steps=5, device="cpu")
    result = fine_tune(reviews_splits, config, tmp_path, on_log=lambda metrics, step: logged.append((step, metrics)))
    losses = [m["loss"] for _, m in logged if "loss" in m]
    assert result.steps == 30 and len(losses) == 6
    assert losses[-1] < losses[0]
    assert (result.model_dir / "model.safetensors").is_file()
    assert (result.model_dir / "tokenizer.json").is_file()
    probabilities = predict_proba(result.model_dir, list(reviews_splits.test["text"]), 64, device="cpu")
    assert probabilities.shape == (len(reviews_splits.test), 2)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(result.model_dir).id2label == {0: "negative", 1: "positive"}


def test_same_seed_same_model(tiny_bert, reviews_splits, tmp_path):
    config = TrainConfig(base_model=str(tiny_bert), max_steps=3, batch_size=8, device="cpu")
    first = fine_tune(reviews_splits, config, tmp_path / "a")
    second = fine_tune(reviews_splits, config, tmp_path / "b")
    assert first.train_loss == second.train_loss


@pytest.mark.gpu
def test_fine_tune_on_cuda_in_bf16(tiny_bert, reviews_splits, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    logged = []
    config = TrainConfig(base_model=str(tiny_bert), max_steps=30, batch_size=8, learning_rate=2e-3,
                         warmup_ratio=0.0, logging_steps=5, device="cuda")
    result = fine_tune(reviews_splits, config, tmp_path, on_log=lambda metrics, step: logged.append(metrics))
    losses = [m["loss"] for m in logged if "loss" in m]
    assert result.device == "cuda" and losses[-1] < losses[0]
    probabilities = predict_proba(result.model_dir, list(reviews_splits.test["text"]), 64, device="cuda")
    assert probabilities.shape == (len(reviews_splits.test), 2)


def test_asking_for_cuda_without_one_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from tuneline.training.engine import pick_device

    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")


class OutOfMemoryAbove:
    """A TrainerCallback that raises a real `torch.OutOfMemoryError` before an optimizer step, from step `from_step`
    on, while the micro-batch is above `micro_batch`: what CUDA does when a batch does not fit. It injects the fault;
    the fallback under test is the real one."""

    def __new__(cls, micro_batch: int, from_step: int = 0):
        import torch
        from transformers import TrainerCallback

        class Fault(TrainerCallback):
            def __init__(self):
                self.raised: list[tuple[int, int]] = []  # (micro-batch, completed steps) at each fault

            def on_step_begin(self, args, state, control, **kwargs):
                if args.per_device_train_batch_size > micro_batch and state.global_step >= from_step:
                    self.raised.append((args.per_device_train_batch_size, state.global_step))
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

        return Fault()


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_optimisation(tiny_bert, reviews_splits, tmp_path, caplog):
    # No dropout: the fallback run and the plain one then differ only by float rounding (micro-batches of 2 summed
    # instead of one batch of 8), so the same effective batch must give the same model, not just the same steps.
    config = TrainConfig(base_model=str(tiny_bert), max_steps=8, batch_size=8, save_steps=3, logging_steps=1,
                         learning_rate=1e-3, warmup_ratio=0.0, dropout=0.0, max_length=32, device="cpu")
    fault = OutOfMemoryAbove(micro_batch=2, from_step=4)
    with caplog.at_level("WARNING", logger="tuneline"):
        result = fine_tune(reviews_splits, config, tmp_path / "fallback", callbacks=[fault])
    plain = fine_tune(reviews_splits, config, tmp_path / "plain")

    # Step 5 did not fit at 8, then not at 4; each time training went on from checkpoint-3 with half the micro-batch.
    assert fault.raised == [(8, 4), (4, 4)]
    assert (result.micro_batch, result.gradient_accumulation_steps, result.oom_fallbacks) == (2, 4, 2)
    assert (plain.micro_batch, plain.gradient_accumulation_steps, plain.oom_fallbacks) == (8, 1, 0)
    assert result.micro_batch * result.gradient_accumulation_steps == config.batch_size
    assert result.steps == plain.steps == 8
    assert [line["step"] for line in result.history if "loss" in line] == list(range(1, 9))  # no step twice
    # Same data order, same effective batch, no dropout: the same model up to float summation order (measured:
    # equal to 1e-7). Before the accumulation fix the gradient was 4x too large and the loss 4e-4 off.
    assert result.validation_loss == pytest.approx(plain.validation_loss, abs=1e-5)
    assert result.train_loss == pytest.approx(plain.train_loss, abs=1e-5)  # the mean over all 8 steps, not 5
    fallbacks = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(fallbacks) == 2 and "micro-batch 2 x 4 accumulation steps" in fallbacks[1]
    assert "from checkpoint-3" in fallbacks[1]


def test_out_of_memory_at_micro_batch_one_says_what_to_try(tiny_bert, reviews_splits, tmp_path):
    from tuneline.errors import TrainingError, is_transient

    config = TrainConfig(base_model=str(tiny_bert), max_steps=2, batch_size=2, max_length=32, device="cpu")
    fault = OutOfMemoryAbove(micro_batch=0)
    with pytest.raises(TrainingError, match="micro-batch 1 after 1 fallback") as caught:
        fine_tune(reviews_splits, config, tmp_path / "a", callbacks=[fault])
    assert "train.max_length" in str(caught.value) and "train.method=lora" in str(caught.value)
    assert fault.raised == [(2, 0), (1, 0)]
    assert not is_transient(caught.value)  # a Prefect retry would fail the same way

    fault = OutOfMemoryAbove(micro_batch=0)
    with pytest.raises(TrainingError, match="oom_fallback=false"):
        fine_tune(reviews_splits, config.model_copy(update={"oom_fallback": False}), tmp_path / "b", callbacks=[fault])
    assert fault.raised == [(2, 0)]  # no fallback was tried


@pytest.mark.parametrize(("micro_batch", "smaller"), [(8, 4), (12, 6), (6, 3), (9, 3), (7, 1), (2, 1)])
def test_the_smaller_micro_batch_divides_the_batch(micro_batch, smaller):
    from tuneline.training.engine import smaller_micro_batch

    assert smaller_micro_batch(micro_batch) == smaller


@pytest.mark.gpu
def test_a_batch_that_cannot_fit_on_the_gpu_trains_through_the_fallback(tmp_path):
    """A real CUDA out-of-memory: MiniLM (22.7M parameters) on 4096 rows x 512 tokens per micro-batch needs some
    hundreds of GB of activations; halving until it fits keeps the effective batch of 4096."""
    import pandas as pd
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from tuneline.data.splitting import SplitResult

    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]

    def rows(n: int, offset: int) -> pd.DataFrame:  # ~600 words each: every row fills max_length 512
        return pd.DataFrame([{"text": " ".join(words[(i + j) % 8] for j in range(600)),
                              "label": "positive" if i % 2 else "negative"} for i in range(offset, offset + n)])

    splits = SplitResult(train=rows(4096, 0), validation=rows(32, 4096), test=rows(32, 4128),
                         labels=("negative", "positive"))
    config = TrainConfig(max_steps=2, batch_size=4096, eval_batch_size=32, max_length=512, device="cuda",
                         logging_steps=1)
    result = fine_tune(splits, config, tmp_path)
    assert result.oom_fallbacks >= 1 and result.micro_batch < 4096
    assert result.micro_batch * result.gradient_accumulation_steps == 4096
    assert result.steps == 2 and result.device == "cuda"
    assert all(torch.isfinite(torch.tensor(line["loss"])) for line in result.history if "loss" in line)


def test_gradient_accumulation_trains_the_model_one_big_batch_trains(tiny_bert, reviews_splits, tmp_path):
    # The Trainer skipped dividing a classifier's loss by the accumulation steps (see fine_tune): 4 micro-batches
    # of 2 then stepped with 4x the gradient of one batch of 8.
    config = TrainConfig(base_model=str(tiny_bert), max_steps=4, batch_size=8, learning_rate=1e-3, warmup_ratio=0.0,
                         dropout=0.0, max_length=32, device="cpu", logging_steps=1)
    whole = fine_tune(reviews_splits, config, tmp_path / "whole")
    accumulated = fine_tune(reviews_splits, config.model_copy(update={"batch_size": 2, "gradient_accumulation_steps": 4}),
                            tmp_path / "accumulated")
    assert accumulated.validation_loss == pytest.approx(whole.validation_loss, abs=1e-5)
    losses = [[line["loss"] for line in result.history if "loss" in line] for result in (whole, accumulated)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)  # the logged loss is the batch mean, not 4x it


def test_a_finished_job_is_taken_as_it_is_not_trained_again(tiny_bert, reviews_splits, tmp_path):
    # 8 steps of 6 an epoch: the Trainer resumed from checkpoint-8 would train a 9th step.
    config = TrainConfig(base_model=str(tiny_bert), max_steps=8, batch_size=8, save_steps=4, lr_scheduler="constant",
                         max_length=32, device="cpu", logging_steps=1)
    shared = tmp_path / "checkpoints-of-the-job"
    first = fine_tune(reviews_splits, config, tmp_path / "first", checkpoint_dir=shared)
    assert not list(shared.glob("checkpoint-*"))  # the finished model replaced them
    again = fine_tune(reviews_splits, config, tmp_path / "again", checkpoint_dir=shared)
    assert (again.steps, again.resumed_from_step) == (8, 8)
    assert (again.validation_loss, again.train_loss) == (first.validation_loss, first.train_loss)
    weights = "model.safetensors"
    assert (again.model_dir / weights).read_bytes() == (first.model_dir / weights).read_bytes()
    # Another job in the same folder is trained, not handed the first one's model.
    other = fine_tune(reviews_splits, config.model_copy(update={"seed": 7}), tmp_path / "other", checkpoint_dir=shared)
    assert other.resumed_from_step is None and other.validation_loss != first.validation_loss
