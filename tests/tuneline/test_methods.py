"""Every method and task type trains two steps on a tiny model, saves, reloads and predicts (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneline.config import GenerationConfig, TrainConfig
from tuneline.errors import ConfigError
from tuneline.evaluation.generation import cut_at_stop, generate
from tuneline.training.modeling import load_trained
from tuneline.training.engine import _schedule, cross_validate, encode_rows, fine_tune, plot_curves, predict_proba

TWO_STEPS = dict(max_steps=2, batch_size=4, eval_batch_size=8, device="cpu", logging_steps=1, learning_rate=1e-3)


@pytest.mark.parametrize("method", ["full", "lora", "ia3", "prefix_tuning", "prompt_tuning"])
def test_each_method_trains_and_reloads_a_classifier(method, tiny_bert, reviews_splits, tmp_path):
    result = fine_tune(reviews_splits, TrainConfig(base_model=str(tiny_bert), method=method, **TWO_STEPS), tmp_path)
    assert result.steps == 2 and np.isfinite(result.train_loss)
    assert 0 < result.trainable_params <= result.total_params
    if method == "full":
        assert result.trainable_params == result.total_params
        assert not (result.model_dir / "adapter").exists()
    else:
        assert result.trainable_params < result.total_params / 2  # the base is frozen
        assert (result.model_dir / "adapter" / "adapter_config.json").is_file()  # the adapter on its own
    probabilities = predict_proba(result.model_dir, list(reviews_splits.test["text"]), 64, device="cpu")
    assert probabilities.shape == (len(reviews_splits.test), 2)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_the_merged_lora_model_matches_base_plus_adapter(tiny_bert, reviews_splits, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = TrainConfig(base_model=str(tiny_bert), method="lora", lora={"r": 4, "target_modules": "all-linear"},
                         **TWO_STEPS | {"learning_rate": 5e-2})
    result = fine_tune(reviews_splits, config, tmp_path)
    texts = list(reviews_splits.test["text"])
    batch = AutoTokenizer.from_pretrained(result.model_dir)(texts, padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    unmerged = PeftModel.from_pretrained(base, result.model_dir / "adapter").eval()
    merged = load_trained(result.model_dir)
    with torch.inference_mode():
        expected, got = unmerged(**batch).logits, merged(**batch).logits
    assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()
    adapter = json.loads((result.model_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4


def test_regression_predicts_one_value_per_text(tiny_bert, scored_splits, tmp_path):
    config = TrainConfig(base_model=str(tiny_bert), best_metric="mse", eval_steps=1, **TWO_STEPS)
    result = fine_tune(scored_splits, config, tmp_path, task="regression")
    assert set(result.validation_metrics) >= {"mse", "mae", "r2"}
    values = predict_proba(result.model_dir, list(scored_splits.test["text"]), 64, device="cpu", task="regression")
    assert values.shape == (len(scored_splits.test),) and np.isfinite(values).all()


@pytest.mark.parametrize("architecture, method", [("t5", "full"), ("t5", "lora"), ("t5", "prompt_tuning"), ("bert2bert", "full")])
def test_seq2seq_trains_and_generates(architecture, method, tiny_model, tiny_bert, pair_splits, tmp_path):
    source = tiny_bert if architecture == "bert2bert" else tiny_model(architecture)
    result = fine_tune(pair_splits, TrainConfig(base_model=str(source), method=method, **TWO_STEPS), tmp_path,
                       task="seq2seq")
    assert result.steps == 2 and np.isfinite(result.validation_loss)
    outputs = generate(result.model_dir, "seq2seq", list(pair_splits.test["text"]), GenerationConfig(max_new_tokens=5),
                       64, device="cpu")
    assert len(outputs) == len(pair_splits.test) and all(isinstance(o, str) for o in outputs)


@pytest.mark.parametrize("architecture, method", [("gpt2", "full"), ("gpt2", "lora"), ("llama", "lora"),
                                                  ("llama", "prefix_tuning"), ("llama", "ia3")])
def test_causal_lm_trains_and_generates(architecture, method, tiny_model, pair_splits, tmp_path):
    config = TrainConfig(base_model=str(tiny_model(architecture)), method=method, **TWO_STEPS)
    result = fine_tune(pair_splits, config, tmp_path, task="causal_lm")
    assert result.steps == 2 and np.isfinite(result.validation_loss)
    settings = GenerationConfig(max_new_tokens=4, do_sample=True, temperature=0.7, top_k=5, top_p=0.9)
    first = generate(result.model_dir, "causal_lm", list(pair_splits.test["text"]), settings, 64, device="cpu", seed=1)
    again = generate(result.model_dir, "causal_lm", list(pair_splits.test["text"]), settings, 64, device="cpu", seed=1)
    assert len(first) == len(pair_splits.test) and first == again  # sampling is seeded


def test_causal_lm_learns_only_the_response(tiny_model, pair_splits):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("gpt2"))
    row = encode_rows("causal_lm", pair_splits.train[:1], tokenizer, (), 64)[0]
    prompt_length = len(tokenizer(pair_splits.train["text"][0])["input_ids"])
    assert row["labels"][:prompt_length] == [-100] * prompt_length
    response = row["labels"][prompt_length:]
    assert tokenizer.decode(response, skip_special_tokens=True) == pair_splits.train["label"][0]
    assert response[-1] == tokenizer.sep_token_id  # the end token is learnt, so generation stops


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tiny_bert, reviews_splits, tmp_path):
    config = TrainConfig(base_model=str(tiny_bert), **TWO_STEPS | {"max_steps": 6, "save_steps": 2})

    class Crash(Exception):
        pass

    def crash_in_step_5(metrics, step):  # checkpoint-4 was written at the end of step 4
        if step == 5 and "loss" in metrics:
            raise Crash

    with pytest.raises(Crash):
        fine_tune(reviews_splits, config, tmp_path, on_log=crash_in_step_5)
    assert not (tmp_path / "checkpoints" / "checkpoint-6").exists()
    assert (tmp_path / "checkpoints" / "checkpoint-4").is_dir()
    steps_seen = []
    result = fine_tune(reviews_splits, config, tmp_path, on_log=lambda m, step: steps_seen.append(step))
    assert result.resumed_from_step == 4 and result.steps == 6
    assert min(steps_seen) == 5  # steps 1-4 were not trained again
    fresh = fine_tune(reviews_splits, config.model_copy(update={"resume": False}), tmp_path / "fresh")
    assert fresh.resumed_from_step is None


def test_early_stopping_stops_when_the_metric_stalls(tiny_bert, reviews_splits, tmp_path):
    # A learning rate far below float32 resolution leaves the weights, so the validation loss never improves.
    config = TrainConfig(base_model=str(tiny_bert), eval_steps=1, early_stopping_patience=2, dropout=0.0,
                         **TWO_STEPS | {"max_steps": 20, "learning_rate": 1e-12})
    result = fine_tune(reviews_splits, config, tmp_path)
    assert result.stopped_early and result.steps == 3  # the first evaluation, then two without improvement


def test_step_and_exponential_schedules_decay_after_warmup(tiny_bert, reviews_splits, tmp_path):
    step = _schedule("step", warmup=2, total=10, gamma=0.5, step_size=3)
    assert [step(s) for s in range(9)] == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    exponential = _schedule("exponential", warmup=0, total=10, gamma=0.1, step_size=1)
    assert exponential(0) == 1.0 and exponential(10) == pytest.approx(0.1)
    config = TrainConfig(base_model=str(tiny_bert), lr_scheduler="step", lr_step_size=2, lr_gamma=0.5,
                         warmup_ratio=0.0, optimizer="sgd", **TWO_STEPS | {"max_steps": 6, "learning_rate": 0.1})
    result = fine_tune(reviews_splits, config, tmp_path)
    rates = [h["learning_rate"] for h in result.history if "learning_rate" in h]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert plot_curves(result.history, tmp_path / "curves.png").stat().st_size > 1000


def test_dropout_override_and_gradient_checkpointing(tiny_bert, reviews_splits, tmp_path):
    from transformers import AutoConfig

    config = TrainConfig(base_model=str(tiny_bert), dropout=0.0, gradient_checkpointing=True,
                         gradient_accumulation_steps=2, max_grad_norm=0.5, **TWO_STEPS)
    result = fine_tune(reviews_splits, config, tmp_path)
    saved = AutoConfig.from_pretrained(result.model_dir)
    assert saved.hidden_dropout_prob == 0.0 and saved.attention_probs_dropout_prob == 0.0
    assert np.isfinite(result.train_loss)


def test_cross_validation_reports_each_fold(tiny_bert, reviews_splits, tmp_path):
    config = TrainConfig(base_model=str(tiny_bert), best_metric="accuracy", **TWO_STEPS)
    cv = cross_validate(reviews_splits, config, tmp_path, "classification", folds=3)
    assert cv.metric == "accuracy" and len(cv.folds) == 3
    assert all(0 <= value <= 1 for value in cv.folds) and cv.std >= 0


def test_qlora_on_cpu_is_refused_before_any_work(tiny_bert, reviews_splits, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = TrainConfig(base_model=str(tiny_bert), method="qlora", max_steps=2)  # device auto resolves to CPU here
    with pytest.raises(ConfigError, match="qlora needs CUDA"):
        fine_tune(reviews_splits, config, tmp_path)
    assert not (tmp_path / "hf_model").exists()


def test_stop_sequences_cut_the_output():
    assert cut_at_stop("red item. and more", [".", "and"]) == "red item"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["qlora", "lora", "full"])
def test_methods_on_cuda(method, tiny_model, pair_splits, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    config = TrainConfig(base_model=str(tiny_model("llama")), method=method,
                         **TWO_STEPS | {"device": "cuda", "max_steps": 4})
    result = fine_tune(pair_splits, config, tmp_path, task="causal_lm")
    assert result.device == "cuda" and result.precision in ("bf16", "fp16") and np.isfinite(result.train_loss)
    outputs = generate(result.model_dir, "causal_lm", list(pair_splits.test["text"]), GenerationConfig(max_new_tokens=4),
                       64, device="cuda")
    assert len(outputs) == len(pair_splits.test)
