"""What a task kind declares: the answers every stage needs, in one frozen record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

# What a row's `label` holds once ingested: a class name, a number written as text, or a target text to generate.
Target = Literal["class", "number", "text"]


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    target: Target
    # data and validation
    suite: str  # the expectation suite under expectations/ run when data.expectation_suite is not set
    sample: str  # the shipped dataset a user can start from (data.path)
    sample_text_column: str  # its input column (data.text_column)
    sample_label_column: str  # its label column (data.label_column)
    # training
    model: Literal["sequence_classification", "seq2seq", "causal_lm"]  # the transformers auto class family
    validation_metrics: tuple[str, ...]  # what the Trainer reports on the validation split (train.best_metric)
    # evaluation and the gate
    test_metrics: tuple[str, ...]  # what evaluation reports on the test split; the gate may name any of them
    primary_metric: str
    guarded_metrics: tuple[str, ...]
    max_guarded_drop: float
    tune_objective: str  # what `tuneline tune` optimises unless objective.metric says (a validation metric)
    int8_metric: str  # the test metric INT8 must keep (export.max_accuracy_drop)
    peft_task_type: str  # peft's TaskType name for the adapter
    length_counted: str  # what the token-length check counts, in words
    card_use: str  # the model card's "intended use" line; {labels} is filled in
    # serving
    outputs: tuple[tuple[str, str], ...]  # (field, "string" or "double") of one prediction, in order

    @property
    def generative(self) -> bool:
        """The model writes text (seq2seq, causal LM): label is the target, export has past key values."""
        return self.target == "text"

    @property
    def has_classes(self) -> bool:
        """Labels are class names: data.labels applies, splits stratify on them, drift compares their shares."""
        return self.target == "class"

    @property
    def numeric(self) -> bool:
        """Labels are numbers: regression targets, binned to stratify."""
        return self.target == "number"

    @property
    def encoder_decoder(self) -> bool:
        """An encoder reads the input and a decoder writes the target (seq2seq); else one decoder continues the prompt."""
        return self.model == "seq2seq"

    @property
    def keeps_prompt_format(self) -> bool:
        """The input is a prompt whose newlines and markers are part of the format (causal LM): cleaning keeps them."""
        return self.model == "causal_lm"

    @property
    def checked_for_pii(self) -> tuple[str, ...]:
        """Columns whose text the model reads or writes: the target too when it is generated."""
        return ("text", "label") if self.generative else ("text",)

    # --- behaviour: what differs between kinds, as functions of numpy arrays and plain values. A kind with a
    # sequence-classification head (`model`) implements these; generative kinds have no head and decode text.

    def head(self, names: Sequence[str]) -> dict[str, Any]:
        """The settings of the model's head for `names` (the class names, in id order): `num_labels` and the like,
        passed to the base model's config."""
        raise NotImplementedError(f"task {self.name} has no classification head")

    def encode_targets(self, labels: Sequence[str], names: Sequence[str]) -> list:
        """What the Trainer's loss compares with for each row's canonical label."""
        raise NotImplementedError(f"task {self.name} has no classification head")

    def trainer_metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """The validation metrics the Trainer reports (train.best_metric chooses among them), from raw logits."""
        return {}

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Raw logits as what evaluation and serving read: probabilities per class, or the predicted values."""
        raise NotImplementedError(f"task {self.name} has no classification head")

    def answers(self, scores: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
        """One answer per row of `scores`, with the fields of `outputs`: what `POST /predict` returns for a text."""
        raise NotImplementedError(f"task {self.name} has no classification head")


# What every kind that writes text shares: no head, the generation suite and metrics, the same gate.
GENERATED_TEXT: dict[str, Any] = dict(
    target="text", suite="text_generation", validation_metrics=("loss",),
    test_metrics=("bleu", "rouge1", "rouge2", "rougeL"), primary_metric="rougeL", guarded_metrics=("bleu",),
    max_guarded_drop=1.0, tune_objective="loss", int8_metric="rougeL", outputs=(("generated", "string"),),
)
