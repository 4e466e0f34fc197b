"""Regression: a number per text (a rating, a score), one linear output; MSE, MAE and R²."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneline.kinds.base import Kind


class Regression(Kind):
    def head(self, names: Sequence[str]) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def encode_targets(self, labels: Sequence[str], names: Sequence[str]) -> list[float]:
        return [float(label) for label in labels]

    def trainer_metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        predicted = np.asarray(logits).reshape(-1)
        return {"mse": float(mean_squared_error(targets, predicted)), "mae": float(mean_absolute_error(targets, predicted)),
                "r2": float(r2_score(targets, predicted))}

    def scores(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float32)[:, 0]

    def answers(self, scores: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
        return [{"value": float(value)} for value in scores]


REGRESSION = Regression(
    name="regression",
    description="a number per text (a rating, a score)",
    target="number",
    suite="text_regression",
    sample="builtin:sample-ratings",
    sample_text_column="text",
    sample_label_column="rating",
    model="sequence_classification",
    validation_metrics=("loss", "mse", "mae", "r2"),
    test_metrics=("mse", "mae", "r2"),
    primary_metric="mse",
    guarded_metrics=("r2",),
    max_guarded_drop=0.01,
    tune_objective="mse",
    int8_metric="r2",
    peft_task_type="SEQ_CLS",
    length_counted="input",
    card_use="Predicting a number from text",
    outputs=(("value", "double"),),
)
