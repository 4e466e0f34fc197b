"""Every export variant of one fine-tuned classifier: throughput at batch 1 and 32, file size, accuracy.

    python benchmarks/export_speed.py                        # fine-tune on an SST-2 subset, then measure
    python benchmarks/export_speed.py --smoke                # tiny: a check of the script, not figures
    python benchmarks/export_speed.py --model models:/NAME@champion --eval dev.tsv --text-column sentence

Fine-tuning runs the real retrain flow (so the model is what tuneline registers).
Each variant is then built from the registered Hugging Face folder by
`tuneline.export.export_and_quantize` with its own `ExportConfig`:

    PyTorch FP32                  the registered model.safetensors
    ONNX FP32                     quantization=none
    ONNX FP32 optimised           optimize=true, quantization=none
    ONNX INT8 dynamic             quantization=dynamic (per-channel)
    ONNX INT8 dynamic, optimised  optimize=true, quantization=dynamic
    ONNX INT8 static              quantization=static, each calibration method on SST-2 train rows;
                                  the best on other train rows (never dev) is the row, the others a footnote
    PyTorch INT8 dynamic          quantization=torch_dynamic (TorchScript)

Timing: the model call alone on two fixed pre-encoded batches (32 x 128 and
1 x 128 tokens, padded to exactly 128), intra-op threads fixed (2) for every
variant, in interleaved rounds whose order rotates; the machine is noisy, so
compare the ratios to PyTorch FP32, not the milliseconds. Accuracy: the whole
eval file through `tuneline.export.variants` runners (tokenization as serving does it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
TASK = "classification"
# The targets for the INT8 variants, against PyTorch FP32.
TARGET_SPEEDUP_BATCH32 = 5.0
TARGET_MAX_POINTS_LOST = 0.5
TARGET_MAX_SIZE_SHARE = 0.26


@dataclass
class Variant:
    name: str
    path: Path | None = None
    runner: Callable[[list[str]], np.ndarray] | None = None  # texts -> logits, for accuracy
    call: Callable[[dict], object] | None = None  # one model call on a pre-encoded batch, for timing
    build_seconds: float = 0.0
    parity: float | None = None
    error: str | None = None
    seconds: dict[int, list[float]] = field(default_factory=lambda: {})  # batch size -> seconds per call, per round
    accuracy: float | None = None
    quantized: bool = False


def read_tsv(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix == ".tsv" else ","
    return pd.read_csv(path, sep=sep, quoting=3 if sep == "\t" else 0, dtype=str, keep_default_na=False)


def fine_tune(subset: pd.DataFrame, epochs: float, home: Path, smoke: bool) -> str:
    """Run the retrain flow on the given rows of the training file; return the version's model URI."""
    os.environ["TUNELINE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tuneline.flows.retrain import retrain  # noqa: E402  (sets up the environment first)
    from tuneline.config import load_config

    path = home / "train_subset.csv"
    subset.to_csv(path, index=False)
    overrides = [f"data.path={path}", "data.text_column=sentence", "data.label_column=label",
                 f"train.epochs={epochs}", "train.max_length=128", "registry.model_name=sst2-bench"]
    if smoke:
        # A 4-step model is a coin flip: the flow's own INT8 accuracy check would refuse it at random.
        overrides += ["train.max_steps=4", "export.max_accuracy_drop=1.0"]
    summary = retrain(config=load_config(overrides=overrides))
    return f"models:/{summary.model_name}/{summary.version}"


def load_average() -> str:
    return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, of this process) so far; None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    own = os.times()
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_cores(before: tuple[float, float] | None, after: tuple[float, float] | None, seconds: float) -> str:
    """Cores other processes kept busy between two `cpu_seconds` readings: the load average counts this run too."""
    if before is None or after is None:
        return "unknown"
    return f"{((after[0] - before[0]) - (after[1] - before[1])) / seconds:.2f}"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="models:/NAME@alias or models:/NAME/VERSION; omit to fine-tune first")
    parser.add_argument("--train", type=Path, default=SHARED / "train.tsv",
                        help="fine-tuning rows, and the rows static quantization is calibrated on")
    parser.add_argument("--train-rows", type=int, default=10000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--eval", type=Path, default=SHARED / "dev.tsv")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--batch", type=int, default=32, help="rows of the large timed batch (the other is 1 row)")
    parser.add_argument("--sequence", type=int, default=128, help="tokens every timed row is padded to")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every variant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5, help="large batches per variant per round")
    parser.add_argument("--latency-calls", type=int, default=20, help="1-row calls per variant per round")
    parser.add_argument("--calibration-rows", type=int, default=128,
                        help="train rows for static calibration (entropy and percentile hold every activation)")
    parser.add_argument("--calibration-methods", default="minmax,entropy,percentile")
    parser.add_argument("--selection-rows", type=int, default=500,
                        help="train rows, outside the fine-tuning subset, that pick the static calibration method")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run (few rows, 4 steps, 1 round) to check the script; its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.train_rows, args.rounds, args.iterations, args.latency_calls = 400, 1, 1, 2
        args.calibration_rows, args.selection_rows = 16, 32

    load_at_start = load_average()
    home = Path(tempfile.mkdtemp(prefix="tuneline-bench-"))
    started = time.perf_counter()
    train = read_tsv(args.train)
    subset = train.sample(n=min(args.train_rows, len(train)), random_state=0)
    model_uri = args.model or fine_tune(subset, args.epochs, home, args.smoke)
    tune_seconds = time.perf_counter() - started

    import onnxruntime as ort
    import torch

    from tuneline.config import ExportConfig
    from tuneline.export.encoder import export_and_quantize
    from tuneline.training.modeling import load_trained
    from tuneline.registry.store import download_model
    from tuneline.export.variants import onnx_runner, score, torch_runner, torchscript_runner

    torch.set_num_threads(args.threads)
    files = download_model(model_uri, home / "model")
    hf_dir = files / "hf_model"

    eval_frame = read_tsv(args.eval)
    texts = [t.strip() for t in eval_frame[args.text_column]]
    targets = list(eval_frame[args.label_column])
    if args.smoke:
        texts, targets = texts[:64], targets[:64]
    # Calibration, parity and selection rows: SST-2 train rows the fine-tuning never saw (when it ran here), disjoint.
    pool = (train if args.model else train.drop(index=subset.index)).sample(frac=1.0, random_state=1)
    pool_texts = [t.strip() for t in pool[args.text_column]]
    calibration_texts = pool_texts[: args.calibration_rows]
    parity_texts = pool_texts[args.calibration_rows : args.calibration_rows + 64]
    start = args.calibration_rows + 64
    selection_texts = pool_texts[start : start + args.selection_rows]
    selection_targets = list(pool[args.label_column])[start : start + args.selection_rows]

    model = load_trained(hf_dir, TASK)
    label_names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))

    def session(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def onnx_call(path: Path):
        s = session(path)
        names = [i.name for i in s.get_inputs()]
        return lambda feeds: s.run(["logits"], {n: feeds[n] for n in names})[0]

    def torchscript_call(path: Path):
        extra = {"input_names.json": ""}
        module = torch.jit.load(str(path), _extra_files=extra).eval()
        names = json.loads(extra["input_names.json"])

        def call(feeds):
            with torch.inference_mode():
                return module(*(torch.from_numpy(feeds[n]) for n in names)).numpy()

        return call

    def torch_call(feeds):
        with torch.inference_mode():
            return model(**{n: torch.from_numpy(v) for n, v in feeds.items()}).logits.numpy()

    variants = [Variant("PyTorch FP32", hf_dir / "model.safetensors", torch_runner(hf_dir, TASK, args.sequence),
                        torch_call)]

    def build(name: str, folder: str, config, use_int8: bool) -> Variant:
        """One variant from tuneline's own export; an exception is recorded, not worked around."""
        variant = Variant(name, quantized=use_int8)
        tick = time.perf_counter()
        try:
            result = export_and_quantize(hf_dir, home / "variants" / folder, config, args.sequence,
                                         parity_texts=parity_texts, calibration_texts=calibration_texts, task=TASK)
            variant.path = result.int8_path if use_int8 else result.onnx_path
            variant.parity = result.parity.max_abs_diff
            if variant.path.suffix == ".pt":
                variant.runner = torchscript_runner(variant.path, hf_dir, args.sequence)
                variant.call = torchscript_call(variant.path)
            else:
                variant.runner = onnx_runner(variant.path, hf_dir, args.sequence)
                variant.call = onnx_call(variant.path)
        except Exception as error:  # noqa: BLE001  (reported in the table, with the traceback on stderr)
            traceback.print_exc()
            variant.error = f"{type(error).__name__}: {error}"
        variant.build_seconds = time.perf_counter() - tick
        print(f"built {name} in {variant.build_seconds:.0f} s (peak RSS {peak_rss_gib():.1f} GiB)"
              + (f": FAILED {variant.error}" if variant.error else ""), flush=True)
        return variant

    def accuracy(variant: Variant, rows: list[str], rows_targets: list, batch_size: int = 32) -> float:
        logits = np.concatenate([variant.runner(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)])
        return score(TASK, logits, rows_targets, label_names)["accuracy"]

    variants.append(build("ONNX FP32", "fp32", ExportConfig(quantization="none"), False))
    variants.append(build("ONNX FP32 optimised", "fp32-optimised", ExportConfig(optimize=True, quantization="none"), False))
    variants.append(build("ONNX INT8 dynamic", "int8-dynamic", ExportConfig(quantization="dynamic"), True))
    variants.append(build("ONNX INT8 dynamic, optimised", "int8-dynamic-optimised",
                          ExportConfig(optimize=True, quantization="dynamic"), True))
    statics = []
    for method in args.calibration_methods.split(","):
        config = ExportConfig(quantization="static", calibration_method=method, calibration_rows=args.calibration_rows)
        statics.append(build(f"ONNX INT8 static ({method})", f"int8-static-{method}", config, True))
    # The calibration method is chosen on train rows outside the fine-tuning subset, so dev stays untouched.
    selection = {v.name: accuracy(v, selection_texts, selection_targets) for v in statics if not v.error}
    for name, value in selection.items():
        print(f"{name}: {100 * value:.2f}% on {len(selection_texts)} selection rows (SST-2 train, unseen)")
    best = max((v for v in statics if not v.error), key=lambda v: selection[v.name], default=statics[0])
    variants.append(best)
    variants.append(build("PyTorch INT8 dynamic", "int8-torch-dynamic", ExportConfig(quantization="torch_dynamic"), True))
    working = [v for v in variants if not v.error]

    # The timed inputs: real dev sentences padded to exactly `sequence` tokens, encoded once, outside the clock.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    batches = {}
    for size in (1, args.batch):
        encoded = tokenizer(texts[:size], padding="max_length", truncation=True, max_length=args.sequence,
                            return_tensors="np")
        batches[size] = {n: encoded[n].astype(np.int64) for n in tokenizer.model_input_names}
    reference = {size: torch_call(feeds) for size, feeds in batches.items()}
    drift = {}
    for variant in working:  # warm-up (first calls allocate and pick kernels), and a check of the timed outputs
        for size, feeds in batches.items():
            variant.call(feeds)
            variant.seconds[size] = []
        drift[variant.name] = float(np.abs(variant.call(batches[args.batch]) - reference[args.batch]).max())
    load_at_timing, cpu_at_timing, timing_started = load_average(), cpu_seconds(), time.perf_counter()
    calls = {1: args.latency_calls, args.batch: args.iterations}
    for round_index in range(args.rounds):
        order = working[round_index % len(working):] + working[: round_index % len(working)]
        for variant in order:
            for size, feeds in batches.items():
                tick = time.perf_counter()
                for _ in range(calls[size]):
                    variant.call(feeds)
                variant.seconds[size].append((time.perf_counter() - tick) / calls[size])
    load_at_end, cpu_at_end = load_average(), cpu_seconds()
    others = others_cores(cpu_at_timing, cpu_at_end, time.perf_counter() - timing_started)

    for variant in working:
        variant.accuracy = accuracy(variant, texts, targets)
    for variant in statics:
        if variant is not best and not variant.error:
            variant.accuracy = accuracy(variant, texts, targets)

    base = variants[0]
    base_size = base.path.stat().st_size
    base_ms = {size: statistics.median(base.seconds[size]) for size in batches}
    print(f"\n{date.today()} | {platform.processor() or platform.machine()}, {os.cpu_count()} cores | {args.threads} "
          f"threads | torch {torch.__version__} | onnxruntime {ort.__version__}")
    print(f"{load_at_start} before this run; {load_at_timing} when timing began, {load_at_end} when it ended (this "
          f"run's own {args.threads} threads included); other processes used {others} cores while it timed")
    print(f"model {model_uri} ({'fine-tuned here in %.0f s' % tune_seconds if not args.model else 'given'}); "
          f"timed: 1 x {args.sequence} ({args.latency_calls} calls) and {args.batch} x {args.sequence} "
          f"({args.iterations} calls) per variant per round, {args.rounds} rounds, median")
    print(f"accuracy on {args.eval.name} ({len(texts)} rows); static calibration on {len(calibration_texts)} SST-2 "
          f"train rows{' (smoke: figures mean nothing)' if args.smoke else ''}\n")
    print(f"| variant | file MB | % of FP32 size | batch-1 ms | batch-{args.batch} rows/s | vs PyTorch FP32, batch 1 "
          f"| vs PyTorch FP32, batch {args.batch} | dev accuracy (%) | vs PyTorch FP32 (points) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant in variants:
        if variant.error:
            print(f"| {variant.name} | build failed: {variant.error} | | | | | | | |")
            continue
        size = variant.path.stat().st_size
        ms = {s: statistics.median(variant.seconds[s]) for s in batches}
        print(f"| {variant.name} | {size / 1e6:.1f} | {100 * size / base_size:.0f}% | {1000 * ms[1]:.1f} "
              f"| {args.batch / ms[args.batch]:.1f} | {base_ms[1] / ms[1]:.2f}x | {base_ms[args.batch] / ms[args.batch]:.2f}x "
              f"| {100 * variant.accuracy:.2f} | {100 * (variant.accuracy - base.accuracy):+.2f} |")

    print(f"\ntargets (INT8 vs PyTorch FP32): >= {TARGET_SPEEDUP_BATCH32:.0f}x at batch {args.batch}, <= "
          f"{TARGET_MAX_POINTS_LOST} points lost, file <= {100 * TARGET_MAX_SIZE_SHARE:.0f}% of FP32")
    for variant in working:
        if not variant.quantized:
            continue
        speedup = base_ms[args.batch] / statistics.median(variant.seconds[args.batch])
        lost = 100 * (base.accuracy - variant.accuracy)
        share = variant.path.stat().st_size / base_size
        verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
        print(f"- {variant.name}: speed {speedup:.2f}x {verdict(speedup >= TARGET_SPEEDUP_BATCH32)}; accuracy "
              f"{-lost:+.2f} points {verdict(lost <= TARGET_MAX_POINTS_LOST)}; size {100 * share:.1f}% "
              f"{verdict(share <= TARGET_MAX_SIZE_SHARE)}")
    print("\nstatic calibration methods (selection: SST-2 train rows; dev shown for the record):")
    for variant in statics:
        if variant.error:
            print(f"- {variant.name}: build failed: {variant.error}")
        else:
            print(f"- {variant.name}: selection {100 * selection[variant.name]:.2f}%, dev {100 * variant.accuracy:.2f}% "
                  f"({100 * (variant.accuracy - base.accuracy):+.2f} points), built in {variant.build_seconds:.0f} s"
                  + (" <- kept" if variant is best else ""))
    print("\nbuild seconds, parity (max |ONNX FP32 - PyTorch|, the graph before INT8), max |logits - PyTorch FP32| on "
          f"the timed {args.batch} x {args.sequence} batch:")
    for variant in variants[1:]:
        if not variant.error:
            print(f"- {variant.name}: {variant.build_seconds:.0f} s, parity {variant.parity:.1e}, "
                  f"timed-batch difference {drift[variant.name]:.3f}")
    print(f"\npeak RSS {peak_rss_gib():.1f} GiB; whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
