"""Every exported variant of a classifier or regressor, measured side by side on this machine.

PyTorch FP32, ONNX FP32 and the INT8 file are each run over the test split:
file size, batch-1 latency, throughput at the evaluation batch size, and the
task's metrics. `check_quantized` refuses an INT8 file that lost too much: more
than the point bound, and significantly so by a paired test on the same rows.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuneline.kinds import kind
from tuneline.errors import QuantizationAccuracyError
from tuneline.export.common import folder_bytes

log = logging.getLogger(__name__)

LATENCY_ROWS = 16  # single-row calls timed for the batch-1 latency (after one warm-up)
# The scale of the checked metric (the kind's int8_metric, higher is better) to a fraction.
_TO_FRACTION = {"rougeL": 0.01}


@dataclass(frozen=True)
class VariantResult:
    name: str  # "PyTorch FP32", "ONNX FP32", "ONNX INT8 (dynamic)", ...
    file: str
    bytes: int
    latency_ms: float  # median of single-row calls
    rows_per_second: float  # the whole test split at the evaluation batch size, tokenization included
    metrics: dict[str, float] = field(default_factory=dict)
    # Per-row scores on the test split, in row order (`tuneline.evaluation.metrics.row_scores`): the paired test's input
    per_row: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def row(self, task: str, reference: VariantResult | None = None) -> dict[str, object]:
        """One line of the variants table; `reference` (PyTorch FP32) gives the change column."""
        checked = kind(task).int8_metric
        out: dict[str, object] = {
            "variant": self.name, "file": self.file, "size_mb": round(self.bytes / 1e6, 2),
            "latency_ms_batch1": round(self.latency_ms, 2), "rows_per_s": round(self.rows_per_second, 1),
        }
        out |= {name: round(value, 4) for name, value in self.metrics.items()}
        if reference is not None:
            out[f"{checked}_change"] = round(self.metrics[checked] - reference.metrics[checked], 4)
        return out


class _Encoder:
    """tokenizer.json -> padded int64 arrays named as the graph's inputs (no transformers)."""

    def __init__(self, tokenizer_dir: Path, max_length: int, names: list[str]):
        from tuneline.runtime.classifier import OnnxClassifier

        self.encode_texts = OnnxClassifier.text_encoder(tokenizer_dir, max_length)
        self.names = names

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        arrays = self.encode_texts(texts)
        return {name: arrays[name] for name in self.names}


def torch_runner(model_dir: Path, task: str, max_length: int) -> Callable[[list[str]], np.ndarray]:
    """The fine-tuned PyTorch model: texts in, logits out."""
    import torch
    from transformers import AutoTokenizer

    from tuneline.training.modeling import load_trained

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_trained(model_dir, task).eval()

    def run(texts: list[str]) -> np.ndarray:
        batch = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            return model(**batch).logits.float().numpy()

    return run


def torchscript_runner(path: Path, tokenizer_dir: Path, max_length: int) -> Callable[[list[str]], np.ndarray]:
    """A TorchScript file written by `quantize_torch_dynamic` (input names travel inside it)."""
    import torch

    extra = {"input_names.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra).eval()
    encode = _Encoder(tokenizer_dir, max_length, json.loads(extra["input_names.json"]))

    def run(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(a) for a in encode(texts).values())).float().numpy()

    return run


def onnx_runner(path: Path, tokenizer_dir: Path, max_length: int) -> Callable[[list[str]], np.ndarray]:
    """An ONNX file run the way serving runs it (onnxruntime + tokenizers)."""
    from tuneline.runtime.classifier import OnnxClassifier

    classifier = OnnxClassifier(path, tokenizer_dir, max_length)
    return lambda texts: classifier.logits(classifier.encode(list(texts)))


def score(task: str, outputs, targets: list, labels: tuple[str, ...], lowercase: bool = False) -> dict[str, float]:
    """The task's test metrics from raw model outputs (logits; generated texts for generative tasks)."""
    from tuneline.evaluation.metrics import classification_report, generation_report, regression_report
    from tuneline.kinds.classification import softmax

    if kind(task).generative:
        report = generation_report(list(targets), list(outputs), lowercase)
        return {"bleu": report.bleu, "rouge1": report.rouge1, "rouge2": report.rouge2, "rougeL": report.rouge_l}

    if kind(task).has_classes:
        report = classification_report(list(targets), softmax(outputs), labels)
        return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}
    if kind(task).numeric:
        report = regression_report(np.asarray(targets, dtype=float), outputs[:, 0])
        return {"mse": report.mse, "mae": report.mae, "r2": report.r2}
    raise ValueError(f"unknown task {task!r}")


def measure(name: str, path: Path, run: Callable[[list[str]], np.ndarray | list[str]], texts: list[str],
            targets: list, task: str, labels: tuple[str, ...], batch_size: int, lowercase: bool = False) -> VariantResult:
    """Time one variant over the test split and score its outputs."""
    run(texts[:1])  # warm-up: first-call allocation and kernel selection
    latencies = []
    for text in texts[:LATENCY_ROWS]:
        start = time.perf_counter()
        run([text])
        latencies.append(time.perf_counter() - start)
    start, parts = time.perf_counter(), []
    for offset in range(0, len(texts), batch_size):
        parts.append(run(texts[offset : offset + batch_size]))
    seconds = time.perf_counter() - start
    outputs = [text for part in parts for text in part] if kind(task).generative else np.concatenate(parts)
    from tuneline.evaluation.metrics import row_scores

    result = VariantResult(name, path.name, folder_bytes(path), 1000 * statistics.median(latencies),
                           len(texts) / seconds, score(task, outputs, targets, labels, lowercase),
                           row_scores(task, outputs, targets, labels, lowercase))
    log.info("%s: %.1f MB, %.1f ms at batch 1, %.0f rows/s, %s", name, result.bytes / 1e6, result.latency_ms,
             result.rows_per_second, {k: round(v, 4) for k, v in result.metrics.items()})
    return result


def compare_variants(task: str, model_dir: Path, onnx_path: Path, int8_path: Path | None, quantization: str,
                     texts: list[str], targets: list, labels: tuple[str, ...], max_length: int,
                     batch_size: int) -> list[VariantResult]:
    """PyTorch FP32 first (the reference), then ONNX FP32, then the INT8 file when there is one."""
    if not texts:
        raise ValueError("the test split is empty: nothing to measure the exported models on")
    weights = next(iter(sorted(model_dir.glob("*.safetensors"))), model_dir)
    variants = [
        measure("PyTorch FP32", weights, torch_runner(model_dir, task, max_length), texts, targets, task, labels, batch_size),
        measure("ONNX FP32", onnx_path, onnx_runner(onnx_path, model_dir, max_length), texts, targets, task, labels, batch_size),
    ]
    if int8_path is not None:
        if int8_path.suffix == ".pt":
            run, name = torchscript_runner(int8_path, model_dir, max_length), "PyTorch INT8 (dynamic)"
        else:
            run, name = onnx_runner(int8_path, model_dir, max_length), f"ONNX INT8 ({quantization})"
        variants.append(measure(name, int8_path, run, texts, targets, task, labels, batch_size))
    return variants


def compare_generative_variants(task: str, model_dir: Path, generator_dir: Path, int8_dir: Path | None,
                                texts: list[str], targets: list[str], settings, max_length: int,
                                batch_size: int) -> list[VariantResult]:
    """PyTorch `generate`, then the ONNX runtime (FP32, then INT8) with the same decoding settings and seed."""
    from tuneline.evaluation.generation import TorchGenerator, lowercases
    from tuneline.runtime.generator import OnnxGenerator

    if not texts:
        raise ValueError("the test split is empty: nothing to measure the exported models on")
    lowercase = lowercases(model_dir)
    reference = TorchGenerator(model_dir, task, "cpu")
    weights = next(iter(sorted(model_dir.glob("*.safetensors"))), model_dir)
    runs = [("PyTorch FP32", weights, lambda batch: reference.generate(batch, settings, max_length, len(batch)))]
    for name, folder in (("ONNX FP32", generator_dir), ("ONNX INT8 (dynamic)", int8_dir)):
        if folder is not None:
            onnx = OnnxGenerator(folder)
            runs.append((name, folder, lambda batch, onnx=onnx: onnx.generate(batch, settings, batch_size=len(batch))))
    return [measure(name, path, run, texts, targets, task, (), batch_size, lowercase) for name, path, run in runs]


def check_quantized(task: str, variants: list[VariantResult], max_drop: float, quantization: str,
                    significance: float = 0.05) -> str:
    """Raise `QuantizationAccuracyError` when the INT8 variant lost more than `max_drop` against PyTorch FP32
    and a paired test on the same test rows finds the loss significant (p-value at most `significance`).

    The test: McNemar's exact test on per-row correctness (classification), the Wilcoxon signed-rank test on
    per-row squared errors (regression) or sentence ROUGE-L (generation). Variants without per-row scores are
    judged by the point bound alone. Returns the line that goes on record when it passes.
    """
    from tuneline.evaluation.metrics import PAIRED_SERIES, paired_test

    if len(variants) < 3:
        return "no quantized variant"
    metric, reference, quantized = kind(task).int8_metric, variants[0], variants[-1]
    drop = (reference.metrics[metric] - quantized.metrics[metric]) * _TO_FRACTION.get(metric, 1.0)
    line = (f"{quantized.name} {metric} {quantized.metrics[metric]:.4f} vs PyTorch FP32 {reference.metrics[metric]:.4f}: "
            f"loss {drop:+.4f}, allowed export.max_accuracy_drop {max_drop:.4f}")
    series = PAIRED_SERIES[metric]
    ours, theirs = reference.per_row.get(series), quantized.per_row.get(series)
    significant = True
    if ours is not None and theirs is not None and len(ours) == len(theirs):
        test = paired_test(series, ours, theirs)
        significant = test.significant(significance)
        line += (f"; {test.describe(reference.name, quantized.name)}: "
                 f"{'significant' if significant else 'not significant'} at export.significance {significance:g}")
    else:
        line += " (no per-row scores for a paired test: the point bound decides)"
    if drop > max_drop + 1e-12 and significant:
        advice = {
            "dynamic": "try quantization=static (calibrated activation ranges), keep sensitive layers in FP32 with "
                       "export.keep_fp32 (e.g. ['/classifier/*', '*/layer.0/*']), or quantization=none",
            "static": "try calibration_method=percentile or entropy, more calibration_rows, quantization=dynamic, "
                      "or keep sensitive layers in FP32 with export.keep_fp32 (e.g. ['/classifier/*'])",
            "torch_dynamic": "try ONNX quantization (dynamic or static, which can keep layers in FP32), or none",
        }[quantization]
        raise QuantizationAccuracyError(f"the quantized model lost too much on the test split: {line}. Nothing was "
                                        f"registered; {advice}.")
    return line
