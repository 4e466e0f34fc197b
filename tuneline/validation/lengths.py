"""Token lengths and prompt templates: the checks that need the base model's tokenizer.

Used by the validation suite (`suite.py`) and the split checks; imports `tuneline.training.modeling` for the
tokenizer's source, never the training engine.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.kinds import kind
from tuneline.errors import ConfigError


# --- token lengths --------------------------------------------------------------------------------------------------


def load_tokenizer(base_model: str):
    """The real tokenizer of `train.base_model` (a built-in, a local folder or, online, a Hub id)."""
    from transformers import AutoTokenizer

    from tuneline.training.modeling import resolve_model_source

    source = resolve_model_source(base_model)
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # OSError offline, ValueError for a folder without tokenizer files
        raise ConfigError(f"cannot load the tokenizer of train.base_model {base_model!r} ({source}) for the "
                          f"token-length check: {exc}") from exc


def token_lengths(frame: pd.DataFrame, task: str, tokenizer) -> np.ndarray:
    """Tokens each row needs in training before any truncation, counted as the training encoder counts them.

    classification, regression: the input with special tokens; seq2seq: the longer of input
    and target; causal_lm: prompt + response + the end token.
    """
    if frame.empty:
        return np.zeros(0, dtype=int)
    texts = [t if isinstance(t, str) else "" for t in frame["text"]]
    with _quiet_length_warning():
        inputs = np.array([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]])
        if not kind(task).generative:
            return inputs
        targets = [t if isinstance(t, str) else "" for t in frame["label"]]
        if kind(task).encoder_decoder:
            encoded = tokenizer(text_target=targets, truncation=False)["input_ids"]
            return np.maximum(inputs, np.array([len(ids) for ids in encoded]))
        encoded = tokenizer(targets, add_special_tokens=False, truncation=False)["input_ids"]
        return inputs + np.array([len(ids) for ids in encoded]) + 1


@contextlib.contextmanager
def _quiet_length_warning():
    """Silence transformers' "sequence longer than the model maximum" warning: counting long rows is the point."""
    import transformers

    logger = transformers.logging.get_logger("transformers.tokenization_utils_base")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def length_histogram(lengths: np.ndarray, max_length: int, bins: int = 8) -> list[dict[str, object]]:
    """Rows per token-length bin: `bins` equal bins up to max_length, then the truncated rows in two bins."""
    edges = [int(round(max_length * i / bins)) for i in range(bins + 1)]
    table = []
    for low, high in zip(edges[:-1], edges[1:]):
        count = int(((lengths > low) & (lengths <= high)).sum()) + (int((lengths <= 0).sum()) if low == 0 else 0)
        table.append({"tokens": f"{low + 1}-{high}", "rows": count, "truncated": False})
    table.append({"tokens": f"{max_length + 1}-{2 * max_length}", "rows": int(((lengths > max_length) & (lengths <= 2 * max_length)).sum()),
                  "truncated": True})
    table.append({"tokens": f"> {2 * max_length}", "rows": int((lengths > 2 * max_length).sum()), "truncated": True})
    return table


def plot_length_histogram(lengths: np.ndarray, max_length: int, path: Path) -> Path:
    """A PNG of the token-length distribution with train.max_length marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    top = max(int(lengths.max()) if len(lengths) else 1, max_length)
    axis.hist(lengths, bins=min(60, max(10, top // 4)), range=(0, top), color="#4c72b0")
    axis.axvline(max_length, color="#c44e52", linestyle="--", label=f"train.max_length = {max_length}")
    truncated = float((lengths > max_length).mean()) if len(lengths) else 0.0
    axis.set(xlabel="tokens per row", ylabel="rows", title=f"Token lengths ({truncated:.1%} truncated)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# --- prompts --------------------------------------------------------------------------------------------------------

PROMPT_PLACEHOLDER = "{prompt}"
_SENTINEL = "\u2063TUNELINE-PROMPT\u2063"


def template_parts(template: str, tokenizer=None) -> tuple[str, str]:
    """(text before the prompt, text after it) of a chat template.

    `template` is either a string with one `{prompt}` (e.g. `<|user|>\\n{prompt}\\n<|assistant|>\\n`)
    or `tokenizer`: the base model's own chat template, rendered for one user turn with the
    generation prompt.
    """
    if template == "tokenizer":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("data.checks.chat_template=tokenizer, but the tokenizer of train.base_model has no chat "
                              "template; write the template out with {prompt}, or leave chat_template empty")
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                                 add_generation_prompt=True)
        before, _, after = rendered.partition(_SENTINEL)
        return before, after
    before, _, after = template.partition(PROMPT_PLACEHOLDER)
    return before, after


def template_regex(template: str, tokenizer=None) -> str:
    """A regex a prompt matches when it is the template with a non-empty prompt in place of `{prompt}`."""
    before, after = template_parts(template, tokenizer)
    return r"\A" + re.escape(before) + r"(?s:.*\S.*)" + re.escape(after) + r"\Z"
