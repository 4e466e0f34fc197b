"""Text generation from a saved seq2seq or causal LM, with the config's decoding settings (PyTorch)."""

from __future__ import annotations

import logging
from pathlib import Path

from tuneline.config import GenerationConfig

log = logging.getLogger(__name__)


def cut_at_stop(text: str, stop_sequences: list[str]) -> str:
    """The text up to the first stop sequence (exclusive), stripped."""
    cut = min((text.find(stop) for stop in stop_sequences if stop and stop in text), default=-1)
    return (text[:cut] if cut >= 0 else text).strip()


def decoding_kwargs(settings: GenerationConfig) -> dict:
    """`generate()` keyword arguments; sampling knobs only when sampling (transformers warns otherwise)."""
    kwargs = {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams,
              "repetition_penalty": settings.repetition_penalty, "do_sample": settings.do_sample}
    if settings.do_sample:
        kwargs |= {"temperature": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p}
    return kwargs


def generate(model_dir: Path, task: str, inputs: list[str], settings: GenerationConfig, max_length: int,
             batch_size: int = 32, device: str = "auto", seed: int = 0) -> list[str]:
    """One generated text per input; a causal LM's output excludes the prompt."""
    import torch
    from transformers import AutoTokenizer, set_seed

    from tuneline.modeling import load_trained
    from tuneline.training import end_token_id, pick_device

    device = pick_device(device)
    set_seed(seed)  # sampling is reproducible for a given seed
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    end = end_token_id(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if task == "causal_lm":
        tokenizer.padding_side = "left"  # new tokens follow each prompt directly
    model = load_trained(Path(model_dir), task).to(device)
    outputs: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = tokenizer(list(inputs[start : start + batch_size]), truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt").to(device)
            batch.pop("token_type_ids", None)
            generated = model.generate(**batch, **decoding_kwargs(settings), eos_token_id=end,
                                       pad_token_id=tokenizer.pad_token_id)
            if task == "causal_lm":
                generated = generated[:, batch["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
            outputs.extend(cut_at_stop(text, settings.stop_sequences) for text in texts)
    return outputs
