"""Classification: one class per text, softmax over the classes; accuracy and macro-F1."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneline.kinds.base import Kind


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Classification(Kind):
    def head(self, names: Sequence[str]) -> dict[str, Any]:
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}}

    def encode_targets(self, labels: Sequence[str], names: Sequence[str]) -> list[int]:
        ids = {name: i for i, name in enumerate(names)}
        return [ids[label] for label in labels]

    def trainer_metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        predicted = np.argmax(logits, axis=-1)
        return {"accuracy": float(accuracy_score(targets, predicted)),
                "macro_f1": float(f1_score(targets, predicted, average="macro"))}

    def scores(self, logits: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(logits, dtype=np.float32))

    def answers(self, scores: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
        best = scores.argmax(axis=1)
        return [{"label": names[i], "score": float(row[i])} for row, i in zip(scores, best)]


CLASSIFICATION = Classification(
    name="classification",
    description="one class per text (sentiment, topic, intent)",
    target="class",
    suite="text_classification",
    sample="builtin:sample-reviews",
    sample_text_column="text",
    sample_label_column="label",
    model="sequence_classification",
    validation_metrics=("loss", "accuracy", "macro_f1"),
    test_metrics=("accuracy", "macro_f1"),
    primary_metric="accuracy",
    guarded_metrics=("macro_f1",),
    max_guarded_drop=0.01,
    tune_objective="accuracy",
    int8_metric="accuracy",
    peft_task_type="SEQ_CLS",
    length_counted="input",
    card_use="Text classification into {labels}",
    outputs=(("label", "string"), ("score", "double")),
)
