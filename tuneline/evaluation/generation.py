"""Text generation from a saved seq2seq or causal LM, with the config's decoding settings (PyTorch)."""

from __future__ import annotations

import logging
from pathlib import Path

from tuneline.config import GenerationConfig
from tuneline.kinds import kind
from tuneline.runtime.generator import cut_at_stop  # one definition for PyTorch and the ONNX runtime

__all__ = ["TorchGenerator", "cut_at_stop", "decoding_kwargs", "generate", "lowercases"]

log = logging.getLogger(__name__)


def decoding_kwargs(settings: GenerationConfig) -> dict:
    """`generate()` keyword arguments; sampling knobs only when sampling (transformers warns otherwise)."""
    kwargs = {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams,
              "repetition_penalty": settings.repetition_penalty, "do_sample": settings.do_sample}
    if settings.do_sample:
        kwargs |= {"temperature": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p}
    return kwargs


class TorchGenerator:
    """A saved seq2seq or causal LM loaded once, generating with HF `generate` (the PyTorch reference)."""

    def __init__(self, model_dir: Path, task: str, device: str = "auto"):
        from transformers import AutoTokenizer

        from tuneline.training.modeling import load_trained
        from tuneline.training.engine import end_token_id, pick_device

        self.task, self.device = task, pick_device(device)
        self.encoder_decoder = kind(task).encoder_decoder
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.end = end_token_id(self.tokenizer)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.encoder_decoder:
            self.tokenizer.padding_side = "left"  # new tokens follow each prompt directly
        self.model = load_trained(Path(model_dir), task).to(self.device).eval()

    def generate(self, inputs: list[str], settings: GenerationConfig, max_length: int, batch_size: int = 32,
                 seed: int = 0) -> list[str]:
        """One generated text per input; a causal LM's output excludes the prompt."""
        import torch
        from transformers import set_seed

        set_seed(seed)  # sampling is reproducible for a given seed
        outputs: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                batch = self.tokenizer(list(inputs[start : start + batch_size]), truncation=True,
                                       max_length=max_length, padding=True, return_tensors="pt").to(self.device)
                batch.pop("token_type_ids", None)
                generated = self.model.generate(**batch, **decoding_kwargs(settings), eos_token_id=self.end,
                                                pad_token_id=self.tokenizer.pad_token_id)
                if not self.encoder_decoder:
                    generated = generated[:, batch["input_ids"].shape[1]:]
                texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
                outputs.extend(cut_at_stop(text, settings.stop_sequences) for text in texts)
        return outputs


def generate(model_dir: Path, task: str, inputs: list[str], settings: GenerationConfig, max_length: int,
             batch_size: int = 32, device: str = "auto", seed: int = 0) -> list[str]:
    """One generated text per input (PyTorch); a causal LM's output excludes the prompt."""
    return TorchGenerator(model_dir, task, device).generate(inputs, settings, max_length, batch_size, seed)


def lowercases(model_dir: Path) -> bool:
    """Whether the tokenizer lowercases (uncased BERT / MiniLM): references are then scored lowercased too,
    or every capital letter in a reference would count as a generation error."""
    import json

    settings = Path(model_dir) / "tokenizer_config.json"
    return bool(settings.is_file() and json.loads(settings.read_text()).get("do_lower_case", False))
