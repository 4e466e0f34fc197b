"""ONNX export of seq2seq and causal LMs with past key values, verified against PyTorch.

Graphs (float32, TorchScript exporter, dynamic batch / sequence / past axes):

seq2seq (T5, BERT-to-BERT `EncoderDecoderModel`), three graphs:
- `encoder_model.onnx`: `input_ids`, `attention_mask` (batch, sequence) -> `last_hidden_state`
  (batch, sequence + virtual tokens, hidden). A prompt-tuning adapter's virtual tokens are traced in here,
  in front of the input, as PEFT does; the runtime then prepends as many ones to the mask it gives the decoder.
- `cross_kv_model.onnx`: `encoder_hidden_states` -> `present.N.encoder.key` / `.value` (batch, heads,
  sequence, head_dim): every decoder layer's cross-attention keys and values, computed once per input
  instead of once per generated token. It is the decoder run on one start token with everything but the
  cross-attention projections pruned away, so it works for any architecture whose cache transformers fills.
- `decoder_model.onnx`: `input_ids` (batch, new), `encoder_attention_mask` (batch, sequence),
  `past_key_values.N.decoder.key` / `.value` (batch, heads, past, head_dim, past may be 0 on the first step),
  `past_key_values.N.encoder.key` / `.value` (from the cross-kv graph) -> `logits` (batch, new, vocab),
  `present.N.decoder.key` / `.value` (batch, heads, past + new, head_dim). One graph serves the first step
  and every later one, and each step feeds only the new token: generation is linear in its length, not
  quadratic. The cross-attention projections are not in this graph at all (the cache is marked filled).

causal_lm (GPT-2, Llama, ...), one graph:
- `decoder_model.onnx`: `input_ids` (batch, new), `attention_mask` (batch, past + new), `position_ids`
  (batch, new; when the model takes them), `past_key_values.N.key` / `.value` -> `logits`,
  `present.N.key` / `.value`. The prompt is the first step (past of length 0, left padding, positions
  from the mask as `generate` computes them); each later step feeds one token.
  A prefix- or prompt-tuning adapter becomes constant key/value states of its virtual tokens
  (`prefix_key_values.npz`) that the runtime puts in the past before the prompt.

Next to the graphs: `tokenizer.json` (the fast tokenizer exactly as transformers configured it),
`tokenizer_config.json`, and `generation_runtime.json`, which holds everything `OnnxGenerator` needs
(token ids, layer count, heads, head size, input and output names, the decoding cleanup flag), so serving
parses no transformers config.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneline.config import ExportConfig
from tuneline.kinds import GENERATIVE, kind
from tuneline.errors import ConfigError, ExportParityError
from tuneline.export.common import ExportResult, ParityReport, folder_bytes
from tuneline.export.quantization import quantizable_nodes, quantize_dynamic_int8, resolve_exclusions

log = logging.getLogger(__name__)

RUNTIME_FILE = "generation_runtime.json"
ENCODER_FILE = "encoder_model.onnx"
CROSS_KV_FILE = "cross_kv_model.onnx"
DECODER_FILE = "decoder_model.onnx"
PREFIX_FILE = "prefix_key_values.npz"
TOKENIZER_FILE = "tokenizer.json"
RUNTIME_FORMAT = 1
# Parity is checked on one row alone and on a padded batch of up to this many rows.
PARITY_BATCH = 8
# generate() settings the ONNX runtime does not implement; a model whose generation_config sets one is
# exported with a warning, because the two paths would then decode differently.
_UNSUPPORTED_DEFAULTS = {"no_repeat_ngram_size": (None, 0), "min_length": (None, 0), "min_new_tokens": (None, 0),
                         "bad_words_ids": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
                         "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "sequence_bias": (None,),
                         "encoder_repetition_penalty": (None, 1.0), "exponential_decay_length_penalty": (None,)}


@dataclass(frozen=True)
class GenerativeExport:
    task: str
    output_dir: Path  # the folder `OnnxGenerator` loads
    files: dict[str, Path]  # role -> path: encoder, cross_kv, decoder, prefix (adapters), runtime, tokenizer
    opset: int

    @property
    def onnx_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files.values() if path.suffix == ".onnx")


@dataclass(frozen=True)
class _Loaded:
    tokenizer: object
    model: object  # what PyTorch runs: the PEFT wrapper when there is a prompt adapter
    base: object  # the transformers model inside
    adapter: str | None  # PREFIX_TUNING / PROMPT_TUNING, or None
    virtual_tokens: int


def _load(model_dir: Path, task: str) -> _Loaded:
    from transformers import AutoTokenizer

    from tuneline.training.modeling import load_trained

    if not kind(task).generative:
        raise ConfigError(f"generative export covers {GENERATIVE}, not task {task!r}; "
                          "classifiers export with tuneline.export.export_onnx")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ConfigError(f"the tokenizer in {model_dir} is not a fast (tokenizers) tokenizer; the ONNX runtime "
                          "needs tokenizer.json")
    if tokenizer.pad_token is None:  # as generation.generate does: pad with the end token, masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    # Eager attention traces to plain MatMul/Softmax; LoRA/IA3 are merged already, prompt adapters applied here.
    model = load_trained(Path(model_dir), task, attn_implementation="eager")
    adapter, virtual_tokens, base = None, 0, model
    if hasattr(model, "active_peft_config"):
        config = model.active_peft_config
        adapter = str(getattr(config.peft_type, "value", config.peft_type))
        virtual_tokens, base = int(config.num_virtual_tokens), model.get_base_model()
        # a prefix's past key values have no place in the exported encoder-decoder graphs
        supported = ("PROMPT_TUNING",) if kind(task).encoder_decoder else ("PREFIX_TUNING", "PROMPT_TUNING")
        if adapter not in supported:
            raise ConfigError(f"a {task} model with a {adapter} adapter cannot be exported to ONNX yet "
                              f"(supported: {', '.join(supported)}); train it with full, lora or ia3, "
                              "or serve it with PyTorch")
    return _Loaded(tokenizer, model, base.eval(), adapter, virtual_tokens)


def _end_ids(tokenizer) -> tuple[int, int]:
    from tuneline.training.engine import end_token_id

    end = end_token_id(tokenizer)
    return end, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end


def _cleans_up_spaces(tokenizer) -> bool:
    """Whether `batch_decode` applies transformers' `clean_up_tokenization` (it skips it for BPE models)."""
    if not tokenizer.clean_up_tokenization_spaces:
        return False
    is_bpe = type(tokenizer.backend_tokenizer.model).__name__ == "BPE"
    forced = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
    return not is_bpe or bool(getattr(tokenizer, forced, False))


def _cache_tensors(cache) -> list:
    """[key_0, value_0, key_1, value_1, ...] of a DynamicCache."""
    return [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]


def _export(module, example: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict, opset: int) -> Path:
    import onnx
    import torch

    module.eval()  # export restores the wrapper's mode afterwards; a fresh wrapper would put the model in training
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about Python-side shape checks; the parity check catches any that matter.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    onnx.checker.check_model(str(path))
    found = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    if found != inputs:  # the exporter drops inputs the traced graph never read
        raise ExportParityError(f"{path.name} was traced with inputs {found}, expected {inputs}: the model "
                                "ignored some of them, so the runtime would feed it wrongly. Nothing was registered.")
    return path


def _write_tokenizer(loaded: _Loaded, model_dir: Path, output_dir: Path) -> Path:
    # The backend as transformers configured it (post-processor included), so ids match PyTorch's.
    path = output_dir / TOKENIZER_FILE
    loaded.tokenizer.backend_tokenizer.save(str(path))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # a complete tokenizer folder for other tools
        if (Path(model_dir) / name).is_file():
            shutil.copyfile(Path(model_dir) / name, output_dir / name)
    return path


def _ignored_settings(model) -> list[str]:
    settings = getattr(model, "generation_config", None)
    return sorted(name for name, defaults in _UNSUPPORTED_DEFAULTS.items()
                  if settings is not None and getattr(settings, name, None) not in defaults)


def _runtime_json(loaded: _Loaded, task: str, max_length: int, files: dict[str, str], layers: int, heads: int,
                  head_dim: int, names: dict, extra: dict) -> dict:
    end, pad = _end_ids(loaded.tokenizer)
    ignored = _ignored_settings(loaded.base)
    if ignored:
        log.warning("the model's generation_config sets %s, which the ONNX runtime does not apply: "
                    "its outputs will differ from PyTorch generate()", ", ".join(ignored))
    return {
        "format": RUNTIME_FORMAT, "task": task, "files": files, "max_length": max_length,
        "eos_token_id": end, "pad_token_id": pad, "num_layers": layers, "num_heads": heads, "head_dim": head_dim,
        "adapter": loaded.adapter, "tokenizer": {
            "file": TOKENIZER_FILE, "clean_up_tokenization_spaces": _cleans_up_spaces(loaded.tokenizer),
            "truncation_side": loaded.tokenizer.truncation_side,
        },
        "ignored_generation_settings": ignored, **names, **extra,
    }


def _finish(task: str, output_dir: Path, files: dict[str, Path], runtime: dict, opset: int) -> GenerativeExport:
    path = output_dir / RUNTIME_FILE
    path.write_text(json.dumps(runtime, indent=2))
    return GenerativeExport(task=task, output_dir=output_dir, files=files | {"runtime": path}, opset=opset)


def export_seq2seq(model_dir: Path, output_dir: Path, opset: int, max_length: int) -> GenerativeExport:
    """Export a saved seq2seq model as encoder, cross-attention K/V and decoder-with-past graphs (see module doc)."""
    import torch
    from transformers import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import BaseModelOutput

    loaded = _load(Path(model_dir), "seq2seq")
    base, tokenizer = loaded.base, loaded.tokenizer
    start = base.config.decoder_start_token_id
    if start is None:
        raise ConfigError(f"{model_dir}/config.json has no decoder_start_token_id; the decoder cannot start")
    prompt = loaded.model if loaded.adapter == "PROMPT_TUNING" else None
    virtual = loaded.virtual_tokens

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base, self.prompt = base, prompt

        def forward(self, input_ids, attention_mask):
            encoder = self.base.get_encoder()
            if self.prompt is None:
                return encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            # As PeftModelForSeq2SeqLM.generate: the virtual tokens go before the input, always attended to.
            embeds = self.prompt.word_embeddings(input_ids)
            prompts = self.prompt.get_prompt(batch_size=input_ids.shape[0])[:, :virtual].to(embeds.dtype)
            mask = torch.cat([torch.ones_like(attention_mask[:, :1]).expand(-1, virtual), attention_mask], dim=1)
            return encoder(inputs_embeds=torch.cat([prompts, embeds], dim=1), attention_mask=mask).last_hidden_state

    class CrossKeyValues(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base

        def forward(self, encoder_hidden_states):
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            first = torch.full_like(encoder_hidden_states[:, :1, 0], start, dtype=torch.long)
            self.base(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_states),
                      decoder_input_ids=first, past_key_values=cache, use_cache=True)
            return tuple(_cache_tensors(cache.cross_attention_cache))  # the logits are pruned from the graph

    class Decoder(torch.nn.Module):
        def __init__(self, layers: int, hidden: int):
            super().__init__()
            self.base, self.layers, self.hidden = base, layers, hidden

        def forward(self, input_ids, encoder_attention_mask, *past):
            own = [(past[4 * i], past[4 * i + 1]) for i in range(self.layers)]
            cross = [(past[4 * i + 2], past[4 * i + 3]) for i in range(self.layers)]
            cache = EncoderDecoderCache(DynamicCache(own), DynamicCache(cross))
            for i in range(self.layers):
                cache.is_updated[i] = True  # cross-attention reads the cached K/V, never the encoder states
            # The model needs encoder states to take its cross-attention branch; only their shape is used.
            key = cross[0][0]
            placeholder = key.new_zeros((key.shape[0], key.shape[2], self.hidden))
            out = self.base(encoder_outputs=BaseModelOutput(last_hidden_state=placeholder),
                            attention_mask=encoder_attention_mask, decoder_input_ids=input_ids,
                            past_key_values=cache, use_cache=True)
            return (out.logits, *_cache_tensors(cache.self_attention_cache))

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    example = tokenizer(["an example to trace", "a second, longer example to trace the graphs with"],
                        padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = example["input_ids"], example["attention_mask"]
    with torch.no_grad():
        hidden_states = Encoder().eval()(ids, mask)
        # A real past of 3 decoder tokens to trace with: a non-empty past keeps its length a traced shape.
        a, b = (int(t) for t in ids[0, 1:3])  # tokens of this vocabulary
        decoder_ids = torch.tensor([[start, a, b], [start, b, a]])
        full = base(encoder_outputs=BaseModelOutput(last_hidden_state=hidden_states),
                    attention_mask=torch.cat([torch.ones_like(mask[:, :1]).expand(-1, virtual), mask], dim=1),
                    decoder_input_ids=decoder_ids, use_cache=True).past_key_values
    own, cross = _cache_tensors(full.self_attention_cache), _cache_tensors(full.cross_attention_cache)
    layers, (_, heads, _, head_dim) = len(own) // 2, tuple(own[0].shape)
    hidden = hidden_states.shape[-1]
    encoder_mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, virtual), mask], dim=1)

    batch_sequence = {0: "batch", 1: "sequence"}
    encoder_axes = {"input_ids": batch_sequence, "attention_mask": batch_sequence,
                    "last_hidden_state": {0: "batch", 1: "encoder_sequence"}}  # longer by any virtual tokens
    files = {"encoder": _export(Encoder(), (ids, mask), output_dir / ENCODER_FILE, ["input_ids", "attention_mask"],
                                ["last_hidden_state"], encoder_axes, opset)}
    cross_names = [f"present.{i}.encoder.{kind}" for i in range(layers) for kind in ("key", "value")]
    cross_axes = {"encoder_hidden_states": {0: "batch", 1: "encoder_sequence"}}
    cross_axes |= {n: {0: "batch", 2: "encoder_sequence"} for n in cross_names}
    files["cross_kv"] = _export(CrossKeyValues(), (hidden_states,), output_dir / CROSS_KV_FILE,
                                ["encoder_hidden_states"], cross_names, cross_axes, opset)
    past_names = [f"past_key_values.{i}.{part}.{kind}" for i in range(layers) for part in ("decoder", "encoder")
                  for kind in ("key", "value")]
    present_names = [f"present.{i}.decoder.{kind}" for i in range(layers) for kind in ("key", "value")]
    past = [t for i in range(layers) for t in (own[2 * i], own[2 * i + 1], cross[2 * i], cross[2 * i + 1])]
    axes = {"input_ids": {0: "batch", 1: "decoder_sequence"}, "logits": {0: "batch", 1: "decoder_sequence"},
            "encoder_attention_mask": {0: "batch", 1: "encoder_sequence"}}
    axes |= {n: {0: "batch", 2: "past_sequence" if ".decoder." in n else "encoder_sequence"} for n in past_names}
    axes |= {n: {0: "batch", 2: "total_sequence"} for n in present_names}
    files["decoder"] = _export(Decoder(layers, hidden), (torch.tensor([[a, b], [b, a]]), encoder_mask, *past),
                               output_dir / DECODER_FILE, ["input_ids", "encoder_attention_mask", *past_names],
                               ["logits", *present_names], axes, opset)
    files["tokenizer"] = _write_tokenizer(loaded, Path(model_dir), output_dir)
    cross_heads, cross_dim = cross[0].shape[1], cross[0].shape[3]
    names = {"encoder_inputs": ["input_ids", "attention_mask"], "cross_kv_outputs": cross_names,
             "decoder_inputs": ["input_ids", "encoder_attention_mask", *past_names],
             "decoder_outputs": ["logits", *present_names]}
    runtime = _runtime_json(loaded, "seq2seq", max_length, {role: path.name for role, path in files.items()
                                                            if role != "tokenizer"},
                            layers, heads, head_dim, names,
                            {"decoder_start_token_id": int(start), "encoder_virtual_tokens": virtual,
                             "cross_num_heads": int(cross_heads), "cross_head_dim": int(cross_dim)})
    return _finish("seq2seq", output_dir, files, runtime, opset)


def _positions_from_mask(mask):
    """Position ids as `generate` derives them for left padding: count of real tokens so far, pads at 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _prefix_states(loaded: _Loaded) -> list:
    """Key/value states of a prompt adapter's virtual tokens (batch 1), the same for every input.

    Prefix tuning stores them; prompt tuning's virtual token embeddings run through the model once
    (they come first and attend only to each other, so their states never depend on the input).
    """
    import torch

    with torch.no_grad():
        if loaded.adapter == "PREFIX_TUNING":
            return [t.detach().clone() for t in _cache_tensors(loaded.model.get_prompt(batch_size=1))]
        prompts = loaded.model.get_prompt(batch_size=1)[:, : loaded.virtual_tokens]
        return _cache_tensors(loaded.base(inputs_embeds=prompts, use_cache=True).past_key_values)


def export_causal_lm(model_dir: Path, output_dir: Path, opset: int, max_length: int) -> GenerativeExport:
    """Export a saved causal LM as one decoder-with-past graph (see module doc)."""
    import torch
    from transformers import DynamicCache

    loaded = _load(Path(model_dir), "causal_lm")
    base, tokenizer = loaded.base, loaded.tokenizer
    takes_positions = "position_ids" in inspect.signature(base.forward).parameters

    class Decoder(torch.nn.Module):
        def __init__(self, layers: int):
            super().__init__()
            self.base, self.layers = base, layers

        def forward(self, input_ids, attention_mask, *rest):
            position_ids, past = (rest[0], rest[1:]) if takes_positions else (None, rest)
            cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
            extra = {"position_ids": position_ids} if takes_positions else {}
            out = self.base(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                            use_cache=True, **extra)
            return (out.logits, *_cache_tensors(out.past_key_values))

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # A real past of 3 tokens, the first row left-padded, then 2 new tokens: padding and a non-empty past
    # keep the mask and the past length traced, not folded to constants.
    a, b = tokenizer("an example", add_special_tokens=False)["input_ids"][:2]  # tokens of this vocabulary
    pad = _end_ids(tokenizer)[1]
    ids = torch.tensor([[pad, a, b, a, b], [b, a, b, a, b]])
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = _positions_from_mask(mask)
    with torch.no_grad():
        probe = base(input_ids=ids[:, :3], attention_mask=mask[:, :3], use_cache=True,
                     **({"position_ids": positions[:, :3]} if takes_positions else {})).past_key_values
    past = _cache_tensors(probe)
    layers, (_, heads, _, head_dim) = len(past) // 2, tuple(past[0].shape)
    past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    inputs = ["input_ids", "attention_mask"] + (["position_ids"] if takes_positions else []) + past_names
    example = (ids[:, 3:], mask) + ((positions[:, 3:],) if takes_positions else ()) + tuple(past)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes |= {n: {0: "batch", 2: "past_sequence"} for n in past_names}
    axes |= {n: {0: "batch", 2: "total_sequence"} for n in present_names}
    axes = {name: dims for name, dims in axes.items() if name in inputs or name in ("logits", *present_names)}
    files = {"decoder": _export(Decoder(layers), example, output_dir / DECODER_FILE, inputs, ["logits", *present_names],
                                axes, opset)}
    prefix = {"prefix_tokens": 0, "positions": "from_mask"}
    if loaded.adapter:
        states = _prefix_states(loaded)
        if len(states) != 2 * layers or tuple(states[0].shape[1:]) != (heads, loaded.virtual_tokens, head_dim):
            raise ConfigError(f"the {loaded.adapter} adapter's key/value states have shape {tuple(states[0].shape)}, "
                              f"not (1, {heads}, {loaded.virtual_tokens}, {head_dim}); it cannot be exported")
        files["prefix"] = output_dir / PREFIX_FILE
        np.savez(files["prefix"], **{name: t.numpy() for name, t in zip(past_names, states)})
        # PEFT shifts positions past the virtual tokens; prompt tuning also drops the padding-aware positions
        # (the model counts every token, pads included), prefix tuning keeps them.
        prefix = {"prefix_tokens": loaded.virtual_tokens,
                  "positions": "from_mask" if loaded.adapter == "PREFIX_TUNING" else "from_count"}
    files["tokenizer"] = _write_tokenizer(loaded, Path(model_dir), output_dir)
    names = {"decoder_inputs": inputs, "decoder_outputs": ["logits", *present_names]}
    runtime = _runtime_json(loaded, "causal_lm", max_length, {role: path.name for role, path in files.items()
                                                              if role != "tokenizer"},
                            layers, heads, head_dim, names, prefix)
    return _finish("causal_lm", output_dir, files, runtime, opset)


class _Worst:
    """The largest difference seen per (file, output); the first to exceed the tolerance raises."""

    def __init__(self, atol: float):
        self.atol, self.abs, self.rel = atol, 0.0, 0.0

    def compare(self, actual: np.ndarray, expected: np.ndarray, file: str, output: str, where: str,
                keep: np.ndarray | None = None) -> None:
        if actual.shape != expected.shape:
            raise ExportParityError(f"{file} output '{output}' has shape {actual.shape}, PyTorch {expected.shape} "
                                    f"({where}). Nothing was registered.")
        difference = np.abs(actual - expected)
        if keep is not None:  # positions PyTorch computes but nothing reads (padding)
            difference = difference[keep]
            expected = expected[keep]
        worst = float(difference.max()) if difference.size else 0.0
        relative = float((difference / np.maximum(np.abs(expected), 1e-6)).max()) if difference.size else 0.0
        self.abs, self.rel = max(self.abs, worst), max(self.rel, relative)
        if worst > self.atol:
            raise ExportParityError(
                f"{file} output '{output}' differs from PyTorch by up to {worst:.2e} (relative {relative:.2e}) "
                f"{where}; the tolerance export.parity_atol is {self.atol:.1e}. Nothing was registered."
            )


def check_generative_parity(model_dir: Path, task: str, export: GenerativeExport, texts: list[str], max_length: int,
                            atol: float) -> ParityReport:
    """Compare the exported graphs, run as `OnnxGenerator` runs them, with PyTorch on the same token ids.

    For one row alone and a padded batch of up to `PARITY_BATCH` rows: the encoder states and the
    cross-attention K/V (seq2seq), the logits of the first decoding step (empty past) and of a step of
    two tokens on top of that past. PyTorch's side is the plain forward of the whole sequence without a
    cache (PEFT's forward for prompt adapters), so the cache plumbing is checked too. Raises
    `ExportParityError` naming the graph file and the output that differ by more than `atol`.
    """
    import torch

    from tuneline.runtime.generator import OnnxGenerator

    if not texts:
        raise ValueError("parity check needs at least one text")
    loaded = _load(Path(model_dir), task)
    generator = OnnxGenerator(export.output_dir)
    side = generator.runtime["tokenizer"]["truncation_side"]
    generator.tokenizer.enable_truncation(max_length=max_length, direction=side)
    worst, shapes = _Worst(atol), []
    batches = [texts[:1]] + ([texts[: PARITY_BATCH]] if len(texts) > 1 else [])
    for batch in batches:
        encoded = generator.encode(list(batch))
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        shapes.append(tuple(ids.shape))
        where = f"on a batch of {ids.shape[0]} x {ids.shape[1]} tokens"
        with torch.no_grad():
            if kind(task).encoder_decoder:
                _seq2seq_parity(loaded, generator, ids, mask, worst, where)
            else:
                _causal_parity(loaded, generator, ids, mask, worst, where)
    report = ParityReport(max_abs_diff=worst.abs, max_rel_diff=worst.rel, rows=len(batches[-1]), shapes=tuple(shapes),
                          atol=atol)
    log.info("generative parity ok: max |onnx - torch| = %.2e on batches %s (tolerance %.1e)", worst.abs, shapes, atol)
    return report


def _next_tokens(logits: np.ndarray) -> np.ndarray:
    """Two tokens per row to feed as the step after the first: the greedy pick, then the runner-up."""
    order = np.argsort(-logits[:, -1], axis=-1)
    return order[:, :2].astype(np.int64)


def _seq2seq_parity(loaded: _Loaded, generator, ids, mask, worst: _Worst, where: str) -> None:
    import torch

    start = generator.runtime["decoder_start_token_id"]
    state = generator.start(ids, mask)
    first = np.full((ids.shape[0], 1), start, dtype=np.int64)
    reference = loaded.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                             decoder_input_ids=torch.from_numpy(first), use_cache=True)
    worst.compare(state.encoder_hidden_states, reference.encoder_last_hidden_state.numpy(), ENCODER_FILE,
                  "last_hidden_state", where)
    expected_cross = _cache_tensors(reference.past_key_values.cross_attention_cache)
    for name, expected in zip(generator.runtime["cross_kv_outputs"], expected_cross):
        worst.compare(state.cross[name.replace("present.", "past_key_values.")], expected.numpy(), CROSS_KV_FILE,
                      name, where)
    logits = generator.step(state, first)
    worst.compare(logits, reference.logits.numpy(), DECODER_FILE, "logits", f"{where}, first step (empty past)")
    more = _next_tokens(logits)
    logits = generator.step(state, more)
    full = loaded.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        decoder_input_ids=torch.from_numpy(np.concatenate([first, more], axis=1))).logits.numpy()
    worst.compare(logits, full[:, 1:], DECODER_FILE, "logits", f"{where}, 2 new tokens after a past of 1")


def _causal_parity(loaded: _Loaded, generator, ids, mask, worst: _Worst, where: str) -> None:
    import torch

    def reference(all_ids: np.ndarray, all_mask: np.ndarray) -> np.ndarray:
        tensors = {"input_ids": torch.from_numpy(all_ids), "attention_mask": torch.from_numpy(all_mask)}
        if loaded.adapter != "PROMPT_TUNING":  # PEFT ignores position ids for prompt tuning (and warns)
            tensors["position_ids"] = _positions_from_mask(tensors["attention_mask"])
        logits = loaded.model(**tensors).logits.numpy()
        return logits[:, -all_ids.shape[1]:]  # prompt tuning returns the virtual tokens' logits too

    state = generator.start(ids, mask)
    logits = generator.step(state, ids, mask)
    real = mask.astype(bool)  # padded positions compute garbage in both, read by nothing
    worst.compare(logits, reference(ids, mask), DECODER_FILE, "logits", f"{where}, first step (the prompt, empty past)",
                  keep=real)
    more = _next_tokens(logits)
    logits = generator.step(state, more)
    all_ids, all_mask = np.concatenate([ids, more], axis=1), np.concatenate([mask, np.ones_like(more)], axis=1)
    worst.compare(logits, reference(all_ids, all_mask)[:, -2:], DECODER_FILE, "logits",
                  f"{where}, 2 new tokens after the prompt's past")


def export_generative(model_dir: Path, output_dir: Path, task: str, opset: int, max_length: int,
                      parity_texts: list[str], atol: float) -> tuple[GenerativeExport, ParityReport]:
    """Export a seq2seq or causal LM and verify it against PyTorch: nothing comes back unverified."""
    if not kind(task).generative:
        raise ConfigError(f"generative export covers {GENERATIVE}, not task {task!r}")
    exporter = export_seq2seq if kind(task).encoder_decoder else export_causal_lm
    export = exporter(Path(model_dir), Path(output_dir), opset, max_length)
    return export, check_generative_parity(Path(model_dir), task, export, parity_texts, max_length, atol)


def export_generative_and_quantize(model_dir: Path, output_dir: Path, config: ExportConfig, max_length: int,
                                   parity_texts: list[str], task: str) -> ExportResult:
    """A seq2seq or causal LM as a `generator/` folder (graphs with past key values, parity-checked), and its
    dynamic INT8 copy `generator.int8/` (every graph quantized, the runtime files copied as they are)."""
    generative, parity = export_generative(model_dir, output_dir / "generator", task, config.opset, max_length,
                                           parity_texts, config.parity_atol)
    int8_dir = None
    if config.quantization == "dynamic":
        int8_dir = output_dir / "generator.int8"
        shutil.copytree(generative.output_dir, int8_dir, dirs_exist_ok=True)
        graphs = sorted(generative.output_dir.glob("*.onnx"))
        for pattern in config.keep_fp32:  # a pattern must match in some graph, not in each
            if not any(resolve_exclusions(g, [pattern], strict=False) for g in graphs):
                names = [n for g in graphs for n in quantizable_nodes(g)]
                raise ConfigError(f"export.keep_fp32 pattern {pattern!r} matches no quantizable node of "
                                  f"{[g.name for g in graphs]}; node names look like: {', '.join(names[:4])}")
        for graph in graphs:
            quantize_dynamic_int8(graph, int8_dir / graph.name, config.per_channel, config.keep_fp32, strict=False)
    return ExportResult(
        onnx_path=generative.output_dir, int8_path=int8_dir, quantization=config.quantization, optimized=False,
        onnx_bytes=generative.onnx_bytes, int8_bytes=folder_bytes(int8_dir) if int8_dir else None,
        opset=config.opset, parity=parity,
    )
