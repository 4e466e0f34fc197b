"""Generate text with an exported seq2seq or causal LM, on onnxruntime and tokenizers only.

This is the serving path: it must not import torch, transformers or Prefect. It loads one folder
written by `tuneline.export.generative` (graphs, `generation_runtime.json`, `tokenizer.json`) and
decodes as `tuneline.evaluation.generation.generate` (transformers' `generate`) does: greedy or sampling with
temperature, top-k, top-p and repetition penalty, stopping each row at the end token, past key values
carried between steps so each step feeds only the new token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuneline.kinds import kind

if TYPE_CHECKING:
    from tuneline.config import GenerationConfig

RUNTIME_FILE = "generation_runtime.json"
RUNTIME_FORMAT = 1


def cut_at_stop(text: str, stop_sequences: list[str]) -> str:
    """The text up to the first stop sequence (exclusive), stripped."""
    cut = min((text.find(stop) for stop in stop_sequences if stop and stop in text), default=-1)
    return (text[:cut] if cut >= 0 else text).strip()


def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization`, applied when the tokenizer's config asks for it."""
    return (text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",").replace(" ' ", "'")
            .replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s").replace(" 've", "'ve")
            .replace(" 're", "'re"))


@dataclass
class Decoding:
    """One batch in flight: the past key values and what the next step must be fed with."""

    past: dict[str, np.ndarray]
    encoder_attention_mask: np.ndarray | None = None  # seq2seq
    encoder_hidden_states: np.ndarray | None = None  # seq2seq, kept for the parity check
    cross: dict[str, np.ndarray] = field(default_factory=dict)  # seq2seq cross-attention K/V, fixed per batch
    attention_mask: np.ndarray | None = None  # causal_lm: prefix + every token fed so far
    real_mask: np.ndarray | None = None  # causal_lm: the same without the prefix columns
    seen: int = 0  # tokens fed so far per row (pads included)


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def penalize_repetition(scores: np.ndarray, history: np.ndarray, ignore: np.ndarray, penalty: float) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor: each token already in a row (its left padding
    excepted) has its score divided by `penalty` when positive, multiplied when negative, once."""
    scores = scores.copy()
    vocabulary = scores.shape[-1]
    for row in range(scores.shape[0]):
        tokens = np.unique(history[row, ignore[row]:])
        tokens = tokens[tokens < vocabulary]
        picked = scores[row, tokens]
        scores[row, tokens] = np.where(picked < 0, picked * np.float32(penalty), picked / np.float32(penalty))
    return scores


def warp(scores: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Temperature, then top-k, then top-p, as transformers orders its sampling warpers; removed tokens get -inf."""
    scores = scores / np.float32(temperature) if temperature != 1.0 else scores.copy()
    if top_k:
        k = min(max(top_k, 1), scores.shape[-1])
        kth = np.partition(scores, -k, axis=-1)[:, -k, None]
        scores[scores < kth] = -np.inf  # ties with the k-th score stay, as in transformers
    if top_p < 1.0:
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending, like the warper
        cumulative = np.cumsum(_softmax(np.take_along_axis(scores, order, axis=-1)), axis=-1)
        remove = cumulative <= (1 - top_p)
        remove[:, -1] = False  # the most likely token always stays
        mask = np.empty_like(remove)
        np.put_along_axis(mask, order, remove, axis=-1)
        scores[mask] = -np.inf
    return scores


def sample(scores: np.ndarray, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """One token per row drawn from softmax(scores), row i with `rngs[i]`; a token with probability 0 is never
    drawn."""
    cumulative = np.cumsum(_softmax(scores.astype(np.float64)), axis=-1)
    draw = np.array([rng.random() for rng in rngs])[:, None] * cumulative[:, -1:]
    return np.argmax(cumulative > draw, axis=-1)


class OnnxGenerator:
    """An exported generative model loaded from its folder: `generate(texts, settings)` -> texts.

    The folder is what `tuneline.export_generative.export_seq2seq` / `export_causal_lm` wrote: the graphs,
    `generation_runtime.json` and the tokenizer files (the exporter copies them there).
    """

    def __init__(self, model_dir: Path | str, threads: int | None = None, spinning: bool = True):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        path = self.model_dir / RUNTIME_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {self.model_dir} is not a generative ONNX export "
                                    "(tuneline.export.generative writes it)")
        self.runtime = json.loads(path.read_text())
        if self.runtime.get("format") != RUNTIME_FORMAT:
            raise ValueError(f"{path} has format {self.runtime.get('format')}, this runtime reads {RUNTIME_FORMAT}; "
                             "export the model again")
        self.task = self.runtime["task"]
        self.encoder_decoder = kind(self.task).encoder_decoder
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:  # idle threads sleep instead of busy-waiting: for a process that shares its cores (a server)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {role: ort.InferenceSession(str(self.model_dir / name), options,
                                                    providers=["CPUExecutionProvider"])
                         for role, name in self.runtime["files"].items() if name.endswith(".onnx")}
        prefix = self.runtime["files"].get("prefix")
        self.prefix = dict(np.load(self.model_dir / prefix)) if prefix else {}
        settings = self.runtime["tokenizer"]
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / settings["file"]))
        self.tokenizer.no_padding()  # padding is ours: left for causal LMs, right for seq2seq
        self.tokenizer.enable_truncation(max_length=self.runtime["max_length"], direction=settings["truncation_side"])
        self.eos, self.pad = self.runtime["eos_token_id"], self.runtime["pad_token_id"]

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Token ids and attention mask, padded to the longest text: on the left for causal LMs, so new
        tokens follow each prompt directly, on the right for seq2seq (as transformers pads)."""
        rows = [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]
        longest = max(len(row) for row in rows)
        ids = np.full((len(rows), longest), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            span = slice(0, len(row)) if self.encoder_decoder else slice(longest - len(row), longest)
            ids[i, span], mask[i, span] = row, 1
        return {"input_ids": ids, "attention_mask": mask}

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Decoding:
        """Set up decoding for an encoded batch; seq2seq runs the encoder and the cross-attention K/V here."""
        batch, layers = input_ids.shape[0], self.runtime["num_layers"]
        empty = np.zeros((batch, self.runtime["num_heads"], 0, self.runtime["head_dim"]), dtype=np.float32)
        if self.encoder_decoder:
            hidden = self.sessions["encoder"].run(["last_hidden_state"], {"input_ids": input_ids,
                                                                          "attention_mask": attention_mask})[0]
            outputs = self.runtime["cross_kv_outputs"]
            cross = dict(zip([n.replace("present.", "past_key_values.") for n in outputs],
                             self.sessions["cross_kv"].run(outputs, {"encoder_hidden_states": hidden})))
            virtual = self.runtime["encoder_virtual_tokens"]  # a prompt adapter's tokens, always attended to
            encoder_mask = np.concatenate([np.ones((batch, virtual), dtype=np.int64), attention_mask], axis=1)
            past = {f"past_key_values.{i}.decoder.{kind}": empty for i in range(layers) for kind in ("key", "value")}
            return Decoding(past=past, encoder_attention_mask=encoder_mask, encoder_hidden_states=hidden, cross=cross)
        past = {f"past_key_values.{i}.{kind}": empty for i in range(layers) for kind in ("key", "value")}
        past |= {name: np.repeat(states, batch, axis=0) for name, states in self.prefix.items()}
        prefix_mask = np.ones((batch, self.runtime["prefix_tokens"]), dtype=np.int64)
        return Decoding(past=past, attention_mask=prefix_mask, real_mask=np.zeros((batch, 0), dtype=np.int64))

    def step(self, state: Decoding, tokens: np.ndarray, token_mask: np.ndarray | None = None) -> np.ndarray:
        """Feed `tokens` (batch, new) on top of the past, advance it, return the logits (batch, new, vocab).

        `token_mask` marks padding among the tokens (a causal LM's left-padded prompt); ones otherwise.
        """
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        names = self.runtime["decoder_outputs"]
        if self.encoder_decoder:
            feeds = {"input_ids": tokens, "encoder_attention_mask": state.encoder_attention_mask}
            feeds |= state.past | state.cross
        else:
            new = np.ones_like(tokens) if token_mask is None else token_mask.astype(np.int64)
            state.real_mask = np.concatenate([state.real_mask, new], axis=1)
            state.attention_mask = np.concatenate([state.attention_mask, new], axis=1)
            feeds = {"input_ids": tokens, "attention_mask": state.attention_mask} | state.past
            if "position_ids" in self.runtime["decoder_inputs"]:
                feeds["position_ids"] = self._positions(state, tokens.shape[1])
        outputs = self.sessions["decoder"].run(names, feeds)
        state.seen += tokens.shape[1]
        for name, value in zip(names[1:], outputs[1:]):
            state.past[name.replace("present.", "past_key_values.")] = value
        return outputs[0]

    def _positions(self, state: Decoding, new: int) -> np.ndarray:
        offset = self.runtime["prefix_tokens"]
        if self.runtime["positions"] == "from_count":  # PEFT prompt tuning: every token counts, pads included
            return np.broadcast_to(offset + state.seen + np.arange(new), (state.real_mask.shape[0], new)).copy()
        # As generate: count of real tokens before each one, pads at 0; a prefix shifts them all.
        return np.maximum(np.cumsum(state.real_mask, axis=1) - 1, 0)[:, -new:] + offset

    def decode(self, rows: list[list[int]]) -> list[str]:
        """Texts of token id rows as transformers' `batch_decode(skip_special_tokens=True)` gives them."""
        texts = self.tokenizer.decode_batch(rows, skip_special_tokens=True)
        if self.runtime["tokenizer"]["clean_up_tokenization_spaces"]:
            texts = [clean_up_tokenization(text) for text in texts]
        return texts

    def generate(self, inputs: list[str], settings: GenerationConfig, seed: int | Sequence[Sequence[int]] = 0,
                 batch_size: int = 16) -> list[str]:
        """One generated text per input (a causal LM's excludes the prompt), cut at the first stop sequence.

        Greedy unless `settings.do_sample`. Sampling draws each row from its own numpy Generator: row i of
        `inputs` is seeded with `(seed, i)`, or with `seed[i]` when `seed` is a list of entropy tuples. A
        row's draws do not depend on the rows beside it, so a server can batch sampled requests, each with
        its own seed, and the same seed and input give the same text alone or in any batch.
        """
        rows = self.generate_tokens(inputs, settings, seed, batch_size)
        return [cut_at_stop(text, settings.stop_sequences) for text in self.decode(rows)]

    def generate_tokens(self, inputs: list[str], settings: GenerationConfig,
                        seed: int | Sequence[Sequence[int]] = 0, batch_size: int = 16) -> list[list[int]]:
        """The token ids `generate` decodes, row by row as transformers returns them: a seq2seq row starts
        with the decoder start token, a causal LM row holds only new tokens; the end token is kept, and
        rows that ended early are padded to the batch's length."""
        if settings.num_beams > 1:
            raise ValueError(f"num_beams={settings.num_beams}: beam search is PyTorch-only for now; use "
                             "tuneline.evaluation.generation.generate, or num_beams=1 (greedy or sampling) with ONNX")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        entropy = [(seed, i) for i in range(len(inputs))] if isinstance(seed, int) else list(seed)
        if len(entropy) != len(inputs):
            raise ValueError(f"{len(entropy)} seeds for {len(inputs)} inputs: give one per input, or one int")
        rngs = [np.random.default_rng(row) for row in entropy] if settings.do_sample else []
        rows: list[list[int]] = []
        for first in range(0, len(inputs), batch_size):
            rows.extend(self._generate_batch(list(inputs[first : first + batch_size]), settings,
                                             rngs[first : first + batch_size]))
        return rows

    def _generate_batch(self, texts: list[str], settings: GenerationConfig,
                        rngs: Sequence[np.random.Generator]) -> list[list[int]]:
        encoded = self.encode(texts)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        state = self.start(ids, mask)
        batch = len(texts)
        if self.encoder_decoder:
            history = np.full((batch, 1), self.runtime["decoder_start_token_id"], dtype=np.int64)
            tokens, token_mask = history, None
            ignore = np.zeros(batch, dtype=np.int64)
        else:
            history, tokens, token_mask = ids, ids, mask
            ignore = mask.argmax(axis=1)  # left padding is not penalized as repetition (transformers 5)
        finished = np.zeros(batch, dtype=bool)
        generated: list[np.ndarray] = []
        for _ in range(settings.max_new_tokens):
            scores = self.step(state, tokens, token_mask)[:, -1, :]
            if settings.repetition_penalty != 1.0:
                scores = penalize_repetition(scores, history, ignore, settings.repetition_penalty)
            if settings.do_sample:
                picked = sample(warp(scores, settings.temperature, settings.top_k, settings.top_p), rngs)
            else:
                picked = scores.argmax(axis=-1)
            picked = np.where(finished, self.pad, picked).astype(np.int64)  # finished rows get padding, as in generate
            generated.append(picked)
            history = np.concatenate([history, picked[:, None]], axis=1)
            finished |= picked == self.eos
            if finished.all():
                break
            tokens, token_mask = picked[:, None], None
        new = np.stack(generated, axis=1) if generated else np.zeros((batch, 0), dtype=np.int64)
        # transformers decodes seq2seq outputs with their start token (skipped when it is special).
        rows = history[:, :1].tolist() if self.encoder_decoder else [[] for _ in range(batch)]
        return [row + list(map(int, tokens_of_row)) for row, tokens_of_row in zip(rows, new)]
