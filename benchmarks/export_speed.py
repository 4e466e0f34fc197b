"""PyTorch FP32 vs ONNX FP32 vs ONNX INT8: throughput, size and accuracy of one fine-tuned model.

    python benchmarks/export_speed.py                        # fine-tune on an SST-2 subset, then measure
    python benchmarks/export_speed.py --model models:/NAME@champion --eval dev.tsv --text-column sentence

Fine-tuning runs the real retrain flow (so the model is what tuneline registers).
The three variants are timed side by side in interleaved rounds on the same
fixed batch (32 x 128 tokens by default) with the same thread count, and the
ratios to PyTorch FP32 are printed: the machine is noisy, ratios are what hold.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def fine_tune(train_file: Path, rows: int, epochs: float, home: Path) -> str:
    """Run the retrain flow on a seeded subset of the training file; return the version's model URI."""
    os.environ["TUNELINE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from flows.retrain import retrain  # noqa: E402  (sets up the environment first)
    from tuneline.config import load_config

    frame = pd.read_csv(train_file, sep="\t", quoting=3, dtype=str, keep_default_na=False)
    subset = home / "train_subset.csv"
    frame.sample(n=min(rows, len(frame)), random_state=0).to_csv(subset, index=False)
    config = load_config(overrides=[
        f"data.path={subset}", "data.text_column=sentence", "data.label_column=label",
        f"train.epochs={epochs}", "train.max_length=128", "registry.model_name=sst2-bench",
    ])
    summary = retrain(config=config)
    return f"models:/{summary.model_name}/{summary.version}"


def load_eval(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    sep = "\t" if path.suffix == ".tsv" else ","
    frame = pd.read_csv(path, sep=sep, quoting=3 if sep == "\t" else 0, dtype=str, keep_default_na=False)
    return [t.strip() for t in frame[text_column]], list(frame[label_column])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="models:/NAME@alias or models:/NAME/VERSION; omit to fine-tune first")
    parser.add_argument("--train", type=Path, default=SHARED / "train.tsv")
    parser.add_argument("--train-rows", type=int, default=10000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--eval", type=Path, default=SHARED / "dev.tsv")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5, help="batches per variant per round")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tuneline-bench-"))
    started = time.perf_counter()
    model_uri = args.model or fine_tune(args.train, args.train_rows, args.epochs, home)
    tune_seconds = time.perf_counter() - started

    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneline.evaluation import classification_report
    from tuneline.onnx_classifier import OnnxClassifier
    from tuneline.registry import download_model
    from tuneline.training import predict_proba

    files = download_model(model_uri, home / "model")
    hf_dir, fp32, int8 = files / "hf_model", files / "model.onnx", files / "model.int8.onnx"
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    texts, labels = load_eval(args.eval, args.text_column, args.label_column)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    names = tokenizer.model_input_names
    # A fixed batch of real sentences, padded to exactly `sequence` tokens: the shape under test.
    batch = tokenizer(texts[: args.batch], padding="max_length", truncation=True, max_length=args.sequence, return_tensors="np")
    feeds = {n: batch[n].astype(np.int64) for n in names}
    torch_feeds = {n: torch.from_numpy(v) for n, v in feeds.items()}
    model = AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in (("ONNX FP32", fp32), ("ONNX INT8", int8))}

    def run_torch():
        with torch.inference_mode():
            model(**torch_feeds)

    runners = {"PyTorch FP32": run_torch} | {
        name: (lambda s=session: s.run(["logits"], feeds)) for name, session in sessions.items()
    }
    for run in runners.values():  # warm-up: first calls allocate and pick kernels
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            tick = time.perf_counter()
            for _ in range(args.iterations):
                run()
            seconds[name].append((time.perf_counter() - tick) / args.iterations)

    label_names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    accuracy = {
        "PyTorch FP32": classification_report(labels, predict_proba(hf_dir, texts, args.sequence, 64, "cpu"), label_names).accuracy,
        "ONNX FP32": classification_report(labels, OnnxClassifier(fp32, hf_dir, args.sequence).predict_proba(texts), label_names).accuracy,
        "ONNX INT8": classification_report(labels, OnnxClassifier(int8, hf_dir, args.sequence).predict_proba(texts), label_names).accuracy,
    }
    sizes = {"PyTorch FP32": (hf_dir / "model.safetensors").stat().st_size, "ONNX FP32": fp32.stat().st_size,
             "ONNX INT8": int8.stat().st_size}

    base = statistics.median(seconds["PyTorch FP32"])
    print(f"\n{date.today()} | {platform.processor() or platform.machine()} | {threads} threads | torch {torch.__version__} "
          f"| onnxruntime {ort.__version__}")
    print(f"model {model_uri} ({'fine-tuned here in %.0f s' % tune_seconds if not args.model else 'given'}); "
          f"batch {args.batch} x {args.sequence} tokens, {args.rounds} rounds x {args.iterations} batches, median")
    print(f"accuracy on {args.eval.name} ({len(texts)} rows)\n")
    print("| variant | ms / batch | sequences / s | speed-up vs PyTorch | size (MB) | accuracy (%) | vs PyTorch (points) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in runners:
        median = statistics.median(seconds[name])
        print(f"| {name} | {1000 * median:.1f} | {args.batch / median:.1f} | {base / median:.2f}x "
              f"| {sizes[name] / 1e6:.1f} | {100 * accuracy[name]:.2f} | {100 * (accuracy[name] - accuracy['PyTorch FP32']):+.2f} |")


if __name__ == "__main__":
    main()
