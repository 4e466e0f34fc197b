import pytest

from tuneline.config import TrainConfig
from tuneline.errors import ConfigError
from tuneline.training import fine_tune, predict_proba, resolve_model_source


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
    from tuneline.training import pick_device

    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")
