"""Fine-tune with the transformers Trainer: every task type, every method, every control the config names."""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.kinds import kind
from tuneline.training.checkpoints import (
    checkpoint_key,
    checkpoint_step,
    latest_checkpoint,
    record_finished,
    take_finished,
)
from tuneline.config import LOWER_IS_BETTER, TrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.errors import ConfigError, TrainingError
from tuneline.training.modeling import resolve_model_source

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    task: str
    method: str
    base_model: str  # what the config named
    base_model_source: str  # the folder or Hub id it resolved to
    base_model_hash: str  # sha256 of the weights it started from, or the Hub commit
    device: str
    precision: str
    steps: int
    train_loss: float
    validation_loss: float
    validation_metrics: dict[str, float]  # eval_* of the final model, without the prefix
    trainable_params: int
    total_params: int
    resumed_from_step: int | None  # the checkpoint step a retried run continued from
    stopped_early: bool
    seconds: float
    history: tuple[dict[str, float], ...]  # the Trainer's log lines: loss, learning rate, step
    micro_batch: int  # rows per forward pass and device: train.batch_size, or less after out-of-memory fallbacks
    gradient_accumulation_steps: int  # micro-batches per optimizer step; micro_batch x this = the configured batch
    oom_fallbacks: int  # times CUDA ran out of memory and training went on with half the micro-batch
    checkpoint_dir: Path  # where the Trainer's checkpoints went (the caller deletes it once nothing may resume)

    @property
    def validation_accuracy(self) -> float | None:
        return self.validation_metrics.get("accuracy")

    def to_json(self) -> str:
        """The result as JSON, for another process (data-parallel rank 0) or a later run (a finished job)."""
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> TrainResult:
        fields = json.loads(text)
        fields["model_dir"], fields["checkpoint_dir"] = Path(fields["model_dir"]), Path(fields["checkpoint_dir"])
        fields["history"] = tuple(fields["history"])
        return cls(**fields)


def model_fingerprint(source: str, model=None) -> str:
    """sha256 over a local checkpoint's config and weight files; for a Hub model, `hub:<id>@<commit>`."""
    import hashlib

    folder = Path(source)
    if folder.is_dir():
        digest = hashlib.sha256()
        for path in sorted(folder.iterdir()):
            if path.name == "config.json" or path.suffix in (".safetensors", ".bin"):
                digest.update(path.name.encode())
                with path.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        return "sha256:" + digest.hexdigest()
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return f"hub:{source}@{commit or 'unknown'}"


def pick_device(preference: str) -> str:
    """`auto` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use auto or cpu")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def resolve_precision(preference: str, device: str) -> str:
    """`auto`: bf16 on CUDA that supports it, fp16 on older CUDA, fp32 on CPU."""
    import torch

    if device != "cuda":
        if preference in ("bf16", "fp16"):
            raise ConfigError(f"train.precision={preference} needs CUDA; this run is on {device}")
        return "fp32"
    if preference == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if preference == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision=bf16 but this GPU does not support bf16; use fp16 or auto")
    return preference


def _ids(encoded, key: str = "input_ids") -> list[list[int]]:
    return [list(row) for row in encoded[key]]


def encode_rows(task: str, frame: pd.DataFrame, tokenizer, labels: tuple[str, ...], max_length: int) -> list[dict]:
    """One dict of token ids per row; the collator pads each batch to its longest row.

    classification: class ids; regression: floats; seq2seq: target ids as
    labels; causal_lm: prompt + response + end token, the prompt masked out of
    the loss (label -100), so only the response is learnt.
    """
    texts = list(frame["text"])
    if not kind(task).generative:
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        targets = kind(task).encode_targets(list(frame["label"]), labels)
        return [{key: values[i] for key, values in encoded.items()} | {"labels": targets[i]} for i in range(len(texts))]
    if kind(task).encoder_decoder:
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        targets = _ids(tokenizer(text_target=list(frame["label"]), truncation=True, max_length=max_length))
        if tokenizer.cls_token_id is not None:  # BERT-style targets start with [CLS], which is the decoder's start token
            targets = [t[1:] if t and t[0] == tokenizer.cls_token_id else t for t in targets]
        return [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i], "labels": targets[i]}
                for i in range(len(texts))]
    if kind(task).model == "causal_lm":
        end = end_token_id(tokenizer)
        prompts = _ids(tokenizer(texts, truncation=True, max_length=max_length))
        responses = _ids(tokenizer(list(frame["label"]), add_special_tokens=False, truncation=True, max_length=max_length))
        rows = []
        for prompt, response in zip(prompts, responses):
            response = response[: max_length // 2 - 1] + [end]  # the response keeps at least half the window
            prompt = prompt[: max_length - len(response)]
            ids = prompt + response
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt) + response})
        return rows
    raise ConfigError(f"unknown task {task!r}")


def end_token_id(tokenizer) -> int:
    """The token that ends a response: EOS, or [SEP] for BERT-style tokenizers."""
    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if token is None:
        raise ConfigError("the tokenizer has neither an EOS nor a SEP token to end responses with")
    return token


def _collator(task: str, tokenizer):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if not kind(task).generative:
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)  # labels padded with -100, ignored by the loss


def _metric_function(task: str):
    """Validation metrics the Trainer reports during training (the kind's); generation tasks report loss only."""
    if kind(task).generative:
        return None
    return lambda prediction: kind(task).trainer_metrics(prediction.predictions, prediction.label_ids)


def _schedule(name: str, warmup: int, total: int, gamma: float, step_size: int):
    """LR factor per step for the schedules transformers lacks: `step` and `exponential`, after linear warm-up."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        after = step - warmup
        if name == "step":
            return gamma ** (after // step_size)
        return gamma ** (after / max(1, total - warmup))  # exponential: reaches gamma at the last step

    return factor


def _trainer_class():
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import Trainer

    class TunelineTrainer(Trainer):
        """The Trainer, plus the `step` and `exponential` schedules."""

        schedule: tuple[str, float, int] | None = None

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.schedule is None or self.lr_scheduler is not None:
                return super().create_scheduler(num_training_steps, optimizer)
            name, gamma, step_size = self.schedule
            warmup = self.args.get_warmup_steps(num_training_steps)
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer,
                                         _schedule(name, warmup, num_training_steps, gamma, step_size))
            self._created_lr_scheduler = True
            return self.lr_scheduler

    return TunelineTrainer


def _checkpointing(config: TrainConfig) -> dict:
    """Activation checkpointing arguments, under whichever name this transformers uses (renamed in 5.x)."""
    if not config.gradient_checkpointing or config.method == "qlora":  # qlora: switched on by peft
        return {}
    from transformers import TrainingArguments

    name = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def training_arguments(config: TrainConfig, task: str, output_dir: Path, device: str, precision: str,
                       checkpoint_dir: Path | None = None):
    """TrainingArguments for the config: every control the config names, nothing implicit.

    Checkpoints go to `checkpoint_dir`, by default `<output_dir>/checkpoints`.
    """
    from transformers import TrainingArguments

    evaluate_during = bool(config.eval_steps or config.early_stopping_patience
                           or (config.max_steps is None and config.epochs > 1))
    checkpoints = bool(config.save_steps or evaluate_during)
    eval_strategy = ("steps" if config.eval_steps else "epoch") if evaluate_during else "no"
    save_strategy = ("steps" if config.save_steps or config.eval_steps else "epoch") if checkpoints else "no"
    return TrainingArguments(
        output_dir=str(checkpoint_dir or output_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        # Fused AdamW on CUDA: the Trainer's own default there, one kernel per step instead of one per tensor.
        optim="sgd" if config.optimizer == "sgd" else ("adamw_torch_fused" if device == "cuda" else "adamw_torch"),
        optim_args=f"momentum={config.momentum}" if config.optimizer == "sgd" else None,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of all steps in transformers 5
        lr_scheduler_type={"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}.get(
            config.lr_scheduler, "linear"),  # step / exponential: TunelineTrainer.create_scheduler
        max_grad_norm=config.max_grad_norm or 0.0,  # 0 turns clipping off
        **_checkpointing(config),
        logging_steps=config.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=config.eval_steps,
        save_strategy=save_strategy,
        save_steps=config.save_steps or config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=eval_strategy != "no" and save_strategy != "no",
        metric_for_best_model=config.best_metric,
        greater_is_better=config.best_metric not in LOWER_IS_BETTER,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_num_workers=0,
        disable_tqdm=True,  # progress goes to the task log (see _Progress), not a bar on stderr
    )


# Trainer log keys -> the metric names the MLflow run shows.
_METRIC_NAMES = {"loss": "train_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}


def mlflow_logger(run_id: str) -> Callable[[dict[str, float], int], None]:
    """An `on_log` for `fine_tune` that streams loss, learning rate and validation metrics to an MLflow run."""
    from tuneline.registry import store as registry

    def forward(logs: dict[str, float], step: int) -> None:
        metrics = {_METRIC_NAMES[k]: v for k, v in logs.items() if k in _METRIC_NAMES}
        metrics |= {f"validation_{k[5:]}": v for k, v in logs.items()
                    if k.startswith("eval_") and "runtime" not in k and "per_second" not in k}
        if metrics:
            registry.log_metrics(run_id, metrics, step=step)

    return forward


def _checkpoint_ledger():
    """A TrainerCallback that keeps what a resumed run needs beyond the Trainer's own checkpoint: the last
    checkpoint this call saved (where an out-of-memory fallback goes on from) and the training loss summed over the
    steps logged so far. The Trainer's `training_loss` covers only the steps of one `train()` call, so a resumed
    run's mean would forget the steps before its checkpoint; the tally is saved inside each checkpoint's
    trainer_state.json (as an ExportableState), written in the same file as the step it belongs to."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class CheckpointLedger(TrainerCallback, ExportableState):
        def __init__(self):
            self.saved: Path | None = None
            self.loss_sum = 0.0
            self.loss_steps = 0
            self._last_logged = 0

        def state(self) -> dict:
            return {"args": {}, "attributes": {"loss_sum": self.loss_sum, "loss_steps": self.loss_steps}}

        def restore(self, checkpoint: Path | None) -> tuple[float, int]:
            """Start the tally from what `checkpoint` recorded (zero without one); return it as (sum, steps)."""
            tally = {}
            if checkpoint is not None:
                saved = json.loads((checkpoint / "trainer_state.json").read_text()).get("stateful_callbacks", {})
                tally = saved.get(type(self).__name__, {}).get("attributes", {})
            self.loss_sum, self.loss_steps = float(tally.get("loss_sum", 0.0)), int(tally.get("loss_steps", 0))
            return self.loss_sum, self.loss_steps

        def on_train_begin(self, args, state, control, **kwargs):
            self._last_logged = state.global_step
            # A checkpoint saved without the ledger (older code) lacks its entry, which the Trainer's next save needs.
            state.stateful_callbacks.setdefault(type(self).__name__, self.state())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and state.global_step > self._last_logged:
                # "loss" is the mean over the steps since the previous log line
                self.loss_sum += float(logs["loss"]) * (state.global_step - self._last_logged)
                self.loss_steps += state.global_step - self._last_logged
                self._last_logged = state.global_step

        def on_save(self, args, state, control, **kwargs):
            self.saved = Path(args.output_dir) / f"checkpoint-{state.global_step}"

    return CheckpointLedger()


def whole_run_mean_loss(prior: tuple[float, int], this_call_mean: float, this_call_steps: int) -> float:
    """Mean training loss over the whole run: the (sum, steps) a resumed checkpoint recorded, plus this call's mean
    over its steps. Exact when save_steps is a multiple of logging_steps (otherwise the unlogged steps just before
    the resumed checkpoint are left out of the mean)."""
    prior_sum, prior_steps = prior
    steps = prior_steps + this_call_steps
    return (prior_sum + this_call_mean * this_call_steps) / steps if steps else this_call_mean


def smaller_micro_batch(micro_batch: int) -> int:
    """The largest micro-batch below `micro_batch` that divides it: half when even, so the effective batch (micro x
    accumulation) stays exactly the configured one. 1 when it is prime."""
    for factor in range(2, math.isqrt(micro_batch) + 1):
        if micro_batch % factor == 0:
            return micro_batch // factor
    return 1


def _release_accelerator_memory() -> None:
    """Give the failed attempt's tensors back to CUDA, so the next, smaller attempt has the memory it needs."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _oom_advice(config: TrainConfig) -> str:
    advice = [f"lower train.max_length (now {config.max_length})"]
    if not config.gradient_checkpointing:
        advice.append("set train.gradient_checkpointing=true")
    if config.method == "full":
        advice.append("train an adapter (train.method=lora, or qlora for a 4-bit base)")
    elif config.method == "lora":
        advice.append("use train.method=qlora (4-bit base)")
    return "; ".join(advice)


def fine_tune(
    splits: SplitResult,
    config: TrainConfig,
    output_dir: Path,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    task: str = "classification",
    callbacks: list | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Fine-tune `config.base_model` on the train split for `task` with `config.method`; save to `<output_dir>/hf_model`.

    `on_log(metrics, step)` receives each Trainer log line (loss, learning
    rate, validation metrics), e.g. to forward them to MLflow. Checkpoints go
    to `checkpoint_dir` (default `<output_dir>/checkpoints`); when
    `config.resume` is set and it holds a complete checkpoint, training
    continues from the latest one (a retried task, or a re-run after the
    process was killed, does not start over); when that job's training already
    finished there (tuneline.checkpoints.record_finished), its model and result
    are taken as they are. On CUDA out-of-memory with
    `config.oom_fallback`, training goes on with half the micro-batch and twice
    the gradient accumulation (the same effective batch, so the same optimizer
    steps) from the latest checkpoint, down to micro-batch 1.
    `callbacks` are extra `TrainerCallback`s (the tune flow's pruning reporter).
    """
    import torch
    from transformers import AutoTokenizer, EarlyStoppingCallback, PrinterCallback, TrainerCallback, set_seed

    from tuneline.training.modeling import apply_method, load_base, parameter_counts, save_trained

    started = time.perf_counter()
    device = pick_device(config.device)
    if config.method == "qlora" and device != "cuda":
        raise ConfigError("train.method=qlora needs CUDA (bitsandbytes 4-bit kernels); this run is on CPU")
    precision = resolve_precision(config.precision, device)
    checkpoint_dir = checkpoint_dir or output_dir / "checkpoints"
    model_dir = output_dir / "hf_model"
    source = resolve_model_source(config.base_model)
    job = checkpoint_key(splits, config, task, source)
    finished = take_finished(checkpoint_dir, job, model_dir) if config.resume else None
    if finished is not None:
        result = TrainResult.from_json(finished)
        log.info("this training job finished before (%d steps, %s): taking its model instead of training again",
                 result.steps, checkpoint_dir)
        return replace(result, model_dir=model_dir, checkpoint_dir=checkpoint_dir, resumed_from_step=result.steps,
                       seconds=time.perf_counter() - started)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers: pad with the end token, masked out anyway
        tokenizer.pad_token = tokenizer.eos_token

    def build_model():
        set_seed(config.seed)  # before the model exists: the new head's initialisation depends on it
        base = load_base(task, source, config, splits.labels, tokenizer)
        return base, apply_method(base, task, config, source)

    base, model = build_model()
    base_hash = model_fingerprint(source, base)
    del base
    trainable, total = parameter_counts(model)
    train_set = encode_rows(task, splits.train, tokenizer, splits.labels, config.max_length)
    validation_set = encode_rows(task, splits.validation, tokenizer, splits.labels, config.max_length)
    checkpoint = latest_checkpoint(checkpoint_dir) if config.resume else None
    resumed = checkpoint_step(checkpoint) if checkpoint else None

    history: list[dict[str, float]] = []

    class _Progress(TrainerCallback):
        """Each log line to the task log (with an ETA) and to `on_log`."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            history.append(numbers | {"step": state.global_step})
            if "loss" in numbers:
                elapsed = time.perf_counter() - started
                done = max(1, state.global_step - (resumed or 0))
                eta = elapsed / done * (state.max_steps - state.global_step)
                log.info("step %d/%d  loss %.4f  lr %.2e  eta %.0fs", state.global_step, state.max_steps,
                         numbers["loss"], numbers.get("learning_rate", 0.0), eta)
            elif "eval_loss" in numbers:
                log.info("step %d  validation %s", state.global_step, "  ".join(
                    f"{k[5:]} {v:.4f}" for k, v in numbers.items() if k.startswith("eval_") and "runtime" not in k
                    and "per_second" not in k))
            if on_log is not None:
                on_log(numbers, state.global_step)

    ledger = _checkpoint_ledger()
    trainer_callbacks = [_Progress(), ledger, *(callbacks or [])]
    if config.early_stopping_patience:
        trainer_callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    log.info("fine-tuning %s (%s) for %s with %s on %d rows, device %s, %s; trainable parameters %s of %s (%.2f%%)%s",
             config.base_model, source, task, config.method, len(train_set), device, precision,
             f"{trainable:,}", f"{total:,}", 100 * trainable / max(1, total),
             f"; resuming from step {resumed} ({checkpoint_dir})" if resumed else "")
    micro, accumulation, fallbacks = config.batch_size, config.gradient_accumulation_steps, 0
    attempt = config
    while True:
        args = training_arguments(attempt, task, output_dir, device, precision, checkpoint_dir)
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=train_set, eval_dataset=validation_set,
            data_collator=_collator(task, tokenizer), compute_metrics=_metric_function(task), callbacks=trainer_callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts when tqdm is off; _Progress logs instead
        if config.lr_scheduler in ("step", "exponential"):
            trainer.schedule = (config.lr_scheduler, config.lr_gamma, config.lr_step_size)
        if kind(task).model != "causal_lm":
            # The Trainer takes any forward with **kwargs to normalise its loss by the tokens of the whole accumulated
            # batch and so skips dividing by gradient_accumulation_steps; sequence-classification heads, T5 and
            # EncoderDecoderModel take the kwargs but return a plain per-micro-batch mean, so their gradient came out
            # accumulation-times too large (transformers 5.23). Causal LM heads do normalise (loss_function).
            trainer.model_accepts_loss_kwargs = False
        prior = ledger.restore(checkpoint)
        try:
            outcome = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            break
        except torch.OutOfMemoryError as error:
            if not config.oom_fallback:
                raise TrainingError(f"CUDA ran out of memory at micro-batch {micro} (train.batch_size "
                                    f"{config.batch_size}) with train.oom_fallback=false; set it to true to go on with "
                                    f"smaller micro-batches, lower train.batch_size, or {_oom_advice(config)}") from error
            if trainer.args.world_size > 1:
                raise  # data-parallel: one rank must not shrink alone; fine_tune_parallel relaunches all of them
            if micro == 1:
                raise TrainingError(f"CUDA ran out of memory at micro-batch 1 after {fallbacks} fallback(s) from "
                                    f"train.batch_size {config.batch_size}: the model does not fit on this device as "
                                    f"configured; {_oom_advice(config)}") from error
            cause = (str(error).strip().splitlines() or ["CUDA out of memory"])[0]
        # After the except block: its traceback no longer pins the failed attempt's activations.
        trainer.accelerator.free_memory()
        trainer = model = None
        _release_accelerator_memory()
        smaller = smaller_micro_batch(micro)
        accumulation, micro, fallbacks = accumulation * (micro // smaller), smaller, fallbacks + 1
        # Evaluation may be what ran out of memory; its batch size changes no result, so it shrinks too.
        attempt = config.model_copy(update={"batch_size": micro, "gradient_accumulation_steps": accumulation,
                                            "eval_batch_size": max(1, attempt.eval_batch_size // 2)})
        checkpoint = ledger.saved or checkpoint  # this call's latest save, else where it started
        redone_after = checkpoint_step(checkpoint) if checkpoint else 0
        history[:] = [line for line in history if line["step"] <= redone_after]  # those steps are trained again
        log.warning("out of memory (%s): going on with micro-batch %d x %d accumulation steps (effective batch %d, "
                    "unchanged)%s", cause, micro, accumulation, micro * accumulation,
                    f" from {checkpoint.name}" if checkpoint else " from the start")
        _, model = build_model()
    final = trainer.evaluate()
    stopped_early = bool(config.early_stopping_patience) and trainer.state.global_step < trainer.state.max_steps
    steps_this_call = int(outcome.global_step) - (checkpoint_step(checkpoint) if checkpoint else 0)
    if trainer.is_world_process_zero():  # data-parallel workers (tuneline.training.distributed): one writer
        save_trained(trainer.model, tokenizer, task, config, source, model_dir)
    trainer.accelerator.wait_for_everyone()
    result = TrainResult(
        model_dir=model_dir,
        task=task,
        method=config.method,
        base_model=config.base_model,
        base_model_source=source,
        base_model_hash=base_hash,
        device=device,
        precision=precision,
        steps=int(outcome.global_step),
        train_loss=whole_run_mean_loss(prior, float(outcome.training_loss), steps_this_call),
        validation_loss=float(final["eval_loss"]),
        validation_metrics={k[5:]: float(v) for k, v in final.items()
                            if k.startswith("eval_") and "runtime" not in k and "per_second" not in k},
        trainable_params=trainable,
        total_params=total,
        resumed_from_step=resumed,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - started,
        history=tuple(history),
        micro_batch=micro,
        gradient_accumulation_steps=accumulation,
        oom_fallbacks=fallbacks,
        checkpoint_dir=checkpoint_dir,
    )
    if trainer.is_world_process_zero():
        record_finished(checkpoint_dir, job, model_dir, result.to_json())
    return result


def plot_curves(history: tuple[dict[str, float], ...], path: Path) -> Path:
    """Training loss, validation loss and learning rate against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, lr_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("loss", "train"), ("eval_loss", "validation")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            loss_axis.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
    loss_axis.set(xlabel="step", ylabel="loss", title="Loss")
    loss_axis.legend()
    points = [(h["step"], h["learning_rate"]) for h in history if "learning_rate" in h]
    if points:
        lr_axis.plot(*zip(*points))
    lr_axis.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


@dataclass(frozen=True)
class CrossValidation:
    metric: str
    folds: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    @property
    def std(self) -> float:
        return float(np.std(self.folds, ddof=1)) if len(self.folds) > 1 else 0.0


def cross_validate(splits: SplitResult, config: TrainConfig, output_dir: Path, task: str, folds: int,
                   on_fold: Callable[[int, TrainResult], None] | None = None) -> CrossValidation:
    """k-fold cross-validation on train + validation (the test split stays unseen): the best_metric of each fold.

    Folds are stratified for classification, seeded like the split.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    pool = pd.concat([splits.train, splits.validation], ignore_index=True)
    if kind(task).has_classes:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed).split(pool, pool["label"])
    else:
        splitter = KFold(folds, shuffle=True, random_state=config.seed).split(pool)
    scores = []
    fold_config = config.model_copy(update={"early_stopping_patience": None, "save_steps": None, "eval_steps": None})
    for index, (train_rows, validation_rows) in enumerate(splitter):
        fold = replace(splits, train=pool.iloc[train_rows].reset_index(drop=True),
                       validation=pool.iloc[validation_rows].reset_index(drop=True))
        result = fine_tune(fold, fold_config, output_dir / f"fold-{index}", task=task)
        value = result.validation_loss if config.best_metric == "loss" else result.validation_metrics[config.best_metric]
        scores.append(value)
        log.info("fold %d/%d: validation %s %.4f", index + 1, folds, config.best_metric, value)
        if on_fold is not None:
            on_fold(index, result)
    return CrossValidation(config.best_metric, tuple(scores))


def predict_proba(model_dir: Path, texts: list[str], max_length: int, batch_size: int = 64, device: str = "auto",
                  task: str = "classification") -> np.ndarray:
    """Class probabilities of a saved classifier, one row per text (PyTorch, no grad).

    For a regression model: the predicted values, one per text.
    """
    import torch
    from transformers import AutoTokenizer

    from tuneline.training.modeling import load_trained

    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_trained(model_dir, task).to(device)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True, max_length=max_length, padding=True, return_tensors="pt",
            ).to(device)
            parts.append(model(**batch).logits.float().cpu().numpy())
    return kind(task).scores(np.concatenate(parts) if parts else np.zeros((0, model.config.num_labels), np.float32))
