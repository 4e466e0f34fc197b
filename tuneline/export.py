"""ONNX export with a parity check, and INT8 dynamic quantization with onnxruntime."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneline.errors import ExportParityError

log = logging.getLogger(__name__)

# Parity is checked on batches of these sizes (capped by the rows given), so
# dynamic batch and sequence axes are exercised, not just the traced shape.
PARITY_BATCH_SIZES = (1, 7, 32)


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: float
    max_rel_diff: float
    rows: int
    shapes: tuple[tuple[int, int], ...]  # (batch, sequence) of each batch compared
    atol: float


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    int8_path: Path | None
    onnx_bytes: int
    int8_bytes: int | None
    opset: int
    parity: ParityReport


def _load_for_export(model_dir: Path):
    import torch
    from transformers import AutoTokenizer

    from tuneline.modeling import load_trained

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Eager attention traces to plain MatMul/Softmax, which every ORT build and the quantizer handle.
    # LoRA / IA3 are merged already; a prompt or prefix adapter is applied here and traced into the graph.
    model = load_trained(model_dir, attn_implementation="eager")

    class Logits(torch.nn.Module):
        """Positional inputs in, logits out: the graph signature serving relies on."""

        def __init__(self, inner, names):
            super().__init__()
            self.inner, self.names = inner, names

        def forward(self, *tensors):
            return self.inner(**dict(zip(self.names, tensors))).logits

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    return tokenizer, Logits(model, names), names


def export_onnx(model_dir: Path, output_path: Path, opset: int, max_length: int) -> Path:
    """Export a saved classifier to ONNX with dynamic batch and sequence axes (output `logits`)."""
    import torch

    tokenizer, wrapped, names = _load_for_export(model_dir)
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

    onnx.checker.check_model(str(output_path))
    return output_path


def check_parity(model_dir: Path, onnx_path: Path, texts: list[str], max_length: int, atol: float) -> ParityReport:
    """Compare ONNX and PyTorch logits on the same encoded texts, in batches of several shapes.

    Raises `ExportParityError` naming the output and the error when the
    largest absolute difference exceeds `atol`.
    """
    import onnxruntime as ort
    import torch

    if not texts:
        raise ValueError("parity check needs at least one text")
    tokenizer, wrapped, names = _load_for_export(model_dir)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst_abs, worst_rel, shapes, start = 0.0, 0.0, [], 0
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
        shapes.append(tuple(batch["input_ids"].shape))
    report = ParityReport(worst_abs, worst_rel, len(texts), tuple(shapes), atol)
    if worst_abs > atol:
        raise ExportParityError(
            f"ONNX output 'logits' of {onnx_path.name} differs from PyTorch by up to {worst_abs:.2e} "
            f"(relative {worst_rel:.2e}) on {len(texts)} validation rows, batches {shapes}; "
            f"the tolerance export.parity_atol is {atol:.1e}. Nothing was registered."
        )
    log.info("parity ok: max |onnx - torch| = %.2e over %d rows (tolerance %.1e)", worst_abs, len(texts), atol)
    return report


def quantize_int8(onnx_path: Path, output_path: Path, per_channel: bool = True) -> Path:
    """Dynamic INT8 quantization (weights INT8, activations quantized at run time).

    Per-channel weight scales kept SST-2 dev accuracy at the FP32 level where
    one scale per tensor lost 0.9 points (benchmarks/README.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(output_path), weight_type=QuantType.QInt8, per_channel=per_channel)
    return output_path


def count_ops(onnx_path: Path) -> dict[str, int]:
    """How many nodes of each operator type the graph holds."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def export_and_quantize(
    model_dir: Path, output_dir: Path, parity_texts: list[str], max_length: int, opset: int,
    atol: float, quantization: str, per_channel: bool = True,
) -> ExportResult:
    """Export, verify parity, then quantize: nothing comes back unverified."""
    onnx_path = export_onnx(model_dir, output_dir / "model.onnx", opset, max_length)
    parity = check_parity(model_dir, onnx_path, parity_texts, max_length, atol)
    int8_path = quantize_int8(onnx_path, output_dir / "model.int8.onnx", per_channel) if quantization == "dynamic" else None
    return ExportResult(
        onnx_path=onnx_path,
        int8_path=int8_path,
        onnx_bytes=onnx_path.stat().st_size,
        int8_bytes=int8_path.stat().st_size if int8_path else None,
        opset=opset,
        parity=parity,
    )
