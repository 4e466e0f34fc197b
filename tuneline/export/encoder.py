"""ONNX export of classifiers and regressors, with a parity check; then optimisation and quantization.

Seq2seq and causal LM export (graphs with past key values) live in `tuneline.export.generative`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from tuneline.config import ExportConfig
from tuneline.errors import ConfigError, ExportParityError
from tuneline.export.common import ExportResult, ParityReport
from tuneline.export.quantization import quantize_dynamic_int8, quantize_static_int8, quantize_torch_dynamic

log = logging.getLogger(__name__)

# Parity is checked on batches of these sizes (capped by the rows given), so
# dynamic batch and sequence axes are exercised, not just the traced shape.
PARITY_BATCH_SIZES = (1, 7, 32)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
BERT_FAMILY = frozenset({"bert", "roberta", "distilbert", "electra", "xlm-roberta", "camembert", "mpnet"})


def _load_for_export(model_dir: Path, task: str = "classification"):
    import torch
    from transformers import AutoTokenizer

    from tuneline.training.modeling import load_trained

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Eager attention traces to plain MatMul/Softmax, which every ORT build and the quantizer handle.
    # LoRA / IA3 are merged already; a prompt or prefix adapter is applied here and traced into the graph.
    model = load_trained(model_dir, task, attn_implementation="eager")

    class Logits(torch.nn.Module):
        """Positional inputs in, logits out: the graph signature serving relies on."""

        def __init__(self, inner, names):
            super().__init__()
            self.inner, self.names = inner, names

        def forward(self, *tensors):
            return self.inner(**dict(zip(self.names, tensors))).logits

    names = [n for n in INPUT_NAMES if n in tokenizer.model_input_names]
    # eval(): torch.onnx.export restores the wrapper's mode afterwards, and a new Module starts in training mode.
    return tokenizer, Logits(model, names).eval(), names


def export_onnx(model_dir: Path, output_path: Path, opset: int, max_length: int, task: str = "classification") -> Path:
    """Export a saved classifier or regressor to ONNX with dynamic batch and sequence axes (output `logits`)."""
    import torch

    tokenizer, wrapped, names = _load_for_export(model_dir, task)
    example = tokenizer(["an example to trace", "a second, longer example to trace the graph"], padding=True,
                        truncation=True, max_length=max_length, return_tensors="pt")
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracing warns about Python-side shape checks that are constant for this graph; parity catches real breaks.
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo one needs onnxscript and is slower for encoders this size.
        torch.onnx.export(
            wrapped,
            tuple(example[n] for n in names),
            str(output_path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    import onnx

    model = onnx.load(str(output_path))
    for node in model.graph.node:
        # "/inner/bert/encoder/..." -> "/bert/encoder/...": node names read like the model's module paths,
        # which is what export.keep_fp32 patterns are written against.
        node.name = node.name.replace("/inner/", "/", 1)
    onnx.checker.check_model(model)
    onnx.save(model, str(output_path))
    return output_path


def check_parity(model_dir: Path, onnx_path: Path, texts: list[str], max_length: int, atol: float,
                 task: str = "classification", rtol: float = 0.0) -> ParityReport:
    """Compare ONNX and PyTorch logits on the same encoded texts, in batches of several shapes.

    Raises `ExportParityError` naming the output and the error when any
    element differs by more than `atol + rtol * |pytorch|` (numpy's allclose rule).
    """
    import onnxruntime as ort
    import torch

    if not texts:
        raise ValueError("parity check needs at least one text")
    tokenizer, wrapped, names = _load_for_export(model_dir, task)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst_abs, worst_rel, worst_excess, shapes, start = 0.0, 0.0, 0.0, [], 0
    sizes = [s for s in PARITY_BATCH_SIZES if s <= len(texts)] or [len(texts)]
    while start < len(texts):
        size = sizes[len(shapes) % len(sizes)]
        batch = tokenizer(list(texts[start : start + size]), padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        start += size
        with torch.inference_mode():
            expected = wrapped(*(batch[n] for n in names)).numpy()
        actual = session.run(["logits"], {n: batch[n].numpy() for n in names})[0]
        difference = np.abs(actual - expected)
        worst_abs = max(worst_abs, float(difference.max()))
        worst_rel = max(worst_rel, float((difference / np.maximum(np.abs(expected), 1e-6)).max()))
        worst_excess = max(worst_excess, float((difference - atol - rtol * np.abs(expected)).max()))
        shapes.append(tuple(batch["input_ids"].shape))
    report = ParityReport(worst_abs, worst_rel, len(texts), tuple(shapes), atol, rtol)
    if worst_excess > 0:
        raise ExportParityError(
            f"ONNX output 'logits' of {onnx_path.name} differs from PyTorch by up to {worst_abs:.2e} "
            f"(relative {worst_rel:.2e}) on {len(texts)} validation rows, batches {shapes}; the tolerance is "
            f"export.parity_atol {atol:.1e} + export.parity_rtol {rtol:.1e} x |PyTorch|. Nothing was registered."
        )
    log.info("parity ok: max |onnx - torch| = %.2e over %d rows (tolerance %.1e)", worst_abs, len(texts), atol)
    return report


def optimize_onnx(onnx_path: Path, output_path: Path, model_dir: Path) -> Path:
    """onnxruntime's transformer optimiser: fused Attention, SkipLayerNormalization, BiasGelu where it finds them.

    Offered for BERT-family encoders (BERT, MiniLM, RoBERTa, DistilBERT, ELECTRA, XLM-R), whose fusions
    onnxruntime maintains; the result is parity-checked by the caller like any export.
    """
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type not in BERT_FAMILY:
        raise ConfigError(f"export.optimize supports BERT-family encoders {sorted(BERT_FAMILY)}; {model_dir.name} is "
                          f"a {config.model_type!r} model: set export.optimize=false")
    # num_heads / hidden_size 0: read from the graph; opt_level 0 keeps the graph portable across ORT builds
    # (level 1+ bakes in provider-specific nodes).
    optimized = optimize_model(str(onnx_path), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    optimized.save_model_to_file(str(output_path))
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    log.info("optimised %s: fused %s", onnx_path.name, fused or "nothing")
    return output_path


def calibration_batches(model_dir: Path, texts: list[str], max_length: int, batch_size: int = 8) -> list[dict]:
    """Training rows encoded as the graph's inputs, for static quantization.

    Every batch has the same shape (rows padded to the longest calibration row, a trailing partial batch
    dropped): the entropy and percentile calibrators stack activations across batches.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = [n for n in INPUT_NAMES if n in tokenizer.model_input_names]
    texts = list(texts)
    batch_size = min(batch_size, len(texts))
    longest = max((len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]), default=0)
    batches = []
    for start in range(0, len(texts) - batch_size + 1, batch_size):
        encoded = tokenizer(texts[start : start + batch_size], padding="max_length", truncation=True,
                            max_length=longest, return_tensors="np")
        batches.append({name: encoded[name].astype(np.int64) for name in names})
    return batches


def export_and_quantize(model_dir: Path, output_dir: Path, config: ExportConfig, max_length: int,
                        parity_texts: list[str], calibration_texts: list[str] = (), task: str = "classification") -> ExportResult:
    """Export, verify parity, optionally optimise (and verify again), then quantize: nothing comes back unverified.

    Files: `model.onnx` (FP32, the optimised graph when `config.optimize`), and `model.int8.onnx`
    (dynamic / static) or `model.int8.pt` (torch_dynamic). Whether the INT8 file kept its accuracy is
    checked on the test split by `tuneline.export.variants`.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    plain = output_dir / ("model.plain.onnx" if config.optimize else "model.onnx")
    export_onnx(model_dir, plain, config.opset, max_length, task)
    parity = check_parity(model_dir, plain, parity_texts, max_length, config.parity_atol, task, config.parity_rtol)
    onnx_path = plain
    if config.optimize:
        onnx_path = optimize_onnx(plain, output_dir / "model.onnx", model_dir)
        parity = check_parity(model_dir, onnx_path, parity_texts, max_length, config.parity_atol, task, config.parity_rtol)
        plain.unlink()
    int8_path = None
    if config.quantization == "dynamic":
        int8_path = quantize_dynamic_int8(onnx_path, output_dir / "model.int8.onnx", config.per_channel, config.keep_fp32)
    elif config.quantization == "static":
        calibration = calibration_batches(model_dir, list(calibration_texts)[: config.calibration_rows], max_length)
        int8_path = quantize_static_int8(onnx_path, output_dir / "model.int8.onnx", calibration,
                                         config.calibration_method, config.per_channel, config.keep_fp32)
    elif config.quantization == "torch_dynamic":
        tokenizer, wrapped, names = _load_for_export(model_dir, task)
        example = tokenizer(["an example to trace"], return_tensors="pt")
        int8_path = quantize_torch_dynamic(wrapped, tuple(example[n] for n in names), output_dir / "model.int8.pt",
                                           names)
    return ExportResult(
        onnx_path=onnx_path,
        int8_path=int8_path,
        quantization=config.quantization,
        optimized=config.optimize,
        onnx_bytes=onnx_path.stat().st_size,
        int8_bytes=int8_path.stat().st_size if int8_path else None,
        opset=config.opset,
        parity=parity,
    )
