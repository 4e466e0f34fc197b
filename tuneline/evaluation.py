"""Evaluation reports per task type, the confusion-matrix plot, bad cases and sliced metrics.

Every metric comes from sklearn, sacrebleu or rouge-score; none is written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ClassificationReport:
    labels: tuple[str, ...]
    rows: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    log_loss: float
    roc_auc: float | None  # binary tasks only
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    confusion: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow: accuracy, macro/weighted F1, log loss, ROC-AUC, per-class precision/recall."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1,
               f"{prefix}weighted_f1": self.weighted_f1, f"{prefix}log_loss": self.log_loss}
        if self.roc_auc is not None:
            out[f"{prefix}roc_auc"] = self.roc_auc
        for label, scores in self.per_class.items():
            out[f"{prefix}precision_{label}"] = scores["precision"]
            out[f"{prefix}recall_{label}"] = scores["recall"]
        return out


def classification_report(true_labels: list[str], probabilities: np.ndarray, labels: tuple[str, ...]) -> ClassificationReport:
    """Score predicted class probabilities (rows x len(labels)) against true label names."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    if probabilities.shape != (len(true_labels), len(labels)):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, expected ({len(true_labels)}, {len(labels)})"
        )
    ids = list(range(len(labels)))
    label_ids = {name: i for i, name in enumerate(labels)}
    y_true = np.array([label_ids[name] for name in true_labels])
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(labels)
    }
    # ROC-AUC needs both classes present; a tiny or one-sided test split has none.
    binary_auc = len(labels) == 2 and len(set(y_true)) == 2
    return ClassificationReport(
        labels=labels,
        rows=len(y_true),
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        weighted_f1=float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        log_loss=float(log_loss(y_true, probabilities, labels=ids)),
        roc_auc=float(roc_auc_score(y_true, probabilities[:, 1])) if binary_auc else None,
        per_class=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion_matrix(y_true, y_pred, labels=ids)),
    )


def plot_confusion_matrix(report: ClassificationReport, path: Path, title: str = "Test split") -> Path:
    """Save the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(figsize=(1.2 * len(report.labels) + 3, 1.2 * len(report.labels) + 2.5))
    ConfusionMatrixDisplay(np.array(report.confusion), display_labels=list(report.labels)).plot(
        ax=axes, cmap="Blues", colorbar=False
    )
    axes.set_title(f"{title}: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def worst_examples(frame: pd.DataFrame, probabilities: np.ndarray, labels: tuple[str, ...], limit: int) -> pd.DataFrame:
    """The test rows with the highest loss (-log p(true label)), worst first."""
    label_ids = {name: i for i, name in enumerate(labels)}
    true_ids = np.array([label_ids[name] for name in frame["label"]])
    p_true = probabilities[np.arange(len(true_ids)), true_ids]
    table = pd.DataFrame(
        {
            "row": frame["row"].to_numpy(),
            "text": frame["text"].to_numpy(),
            "label": frame["label"].to_numpy(),
            "predicted": [labels[i] for i in probabilities.argmax(axis=1)],
            "p_label": p_true.round(4),
            "loss": (-np.log(np.clip(p_true, 1e-12, 1.0))).round(4),
        }
    )
    return table.sort_values("loss", ascending=False, kind="stable").head(limit).reset_index(drop=True)


LENGTH_BUCKETS = (0, 10, 20, 40, np.inf)  # words


def length_bucket(texts: pd.Series) -> pd.Series:
    """`1-10 words`, `11-20 words`, ... for slicing by text length."""
    words = texts.str.split().str.len()
    names = [f"{int(lo) + 1}-{int(hi)} words" if np.isfinite(hi) else f">{int(lo)} words"
             for lo, hi in zip(LENGTH_BUCKETS[:-1], LENGTH_BUCKETS[1:])]
    return pd.cut(words, bins=list(LENGTH_BUCKETS), labels=names).astype(str)


def sliced_metrics(frame: pd.DataFrame, probabilities: np.ndarray, labels: tuple[str, ...], column: str | None) -> pd.DataFrame:
    """Accuracy and macro-F1 per value of `column` and per text-length bucket, one row per slice."""
    from sklearn.metrics import accuracy_score, f1_score

    keys = {"length": length_bucket(frame["text"].reset_index(drop=True))}
    if column is not None:
        if column not in frame.columns:
            raise ValueError(f"evaluation.slice_column {column!r} is not a column of the data; it has {list(frame.columns)}")
        keys[column] = frame[column].astype(str).reset_index(drop=True)
    predicted = pd.Series([labels[i] for i in probabilities.argmax(axis=1)])
    truth = frame["label"].reset_index(drop=True)
    rows = []
    for name, values in keys.items():
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            rows.append({
                "slice": name, "value": value, "rows": int(mask.sum()),
                "accuracy": round(float(accuracy_score(truth[mask], predicted[mask])), 4),
                "macro_f1": round(float(f1_score(truth[mask], predicted[mask], average="macro", zero_division=0)), 4),
            })
    return pd.DataFrame(rows)


def side_by_side(reports: dict[str, ClassificationReport]) -> list[dict[str, object]]:
    """One row per model variant: the table that shows what quantization cost."""
    return [
        {"model": name, "rows": r.rows, "accuracy": round(r.accuracy, 4), "macro_f1": round(r.macro_f1, 4),
         "weighted_f1": round(r.weighted_f1, 4), "roc_auc": None if r.roc_auc is None else round(r.roc_auc, 4),
         "log_loss": round(r.log_loss, 4)}
        for name, r in reports.items()
    ]


@dataclass(frozen=True)
class RegressionReport:
    rows: int
    mse: float
    mae: float
    r2: float


def regression_report(targets: np.ndarray, predictions: np.ndarray) -> RegressionReport:
    """MSE, MAE and R2 (sklearn) of predicted against true values."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    targets, predictions = np.asarray(targets, dtype=float), np.asarray(predictions, dtype=float)
    if targets.shape != predictions.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    return RegressionReport(
        rows=len(targets),
        mse=float(mean_squared_error(targets, predictions)),
        mae=float(mean_absolute_error(targets, predictions)),
        r2=float(r2_score(targets, predictions)),
    )


@dataclass(frozen=True)
class GenerationReport:
    rows: int
    bleu: float  # sacrebleu corpus BLEU, 0-100
    rouge1: float  # F-measures, 0-1
    rouge2: float
    rouge_l: float
    mean_output_words: float


def generation_report(references: list[str], outputs: list[str]) -> GenerationReport:
    """Corpus BLEU (sacrebleu) and mean ROUGE-1/2/L F1 (rouge-score) of generated against reference texts."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(references) != len(outputs) or not references:
        raise ValueError(f"need one output per reference, got {len(outputs)} outputs for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(reference, output) for reference, output in zip(references, outputs)]
    return GenerationReport(
        rows=len(references),
        bleu=float(sacrebleu.corpus_bleu(outputs, [references]).score),
        rouge1=float(np.mean([s["rouge1"].fmeasure for s in scores])),
        rouge2=float(np.mean([s["rouge2"].fmeasure for s in scores])),
        rouge_l=float(np.mean([s["rougeL"].fmeasure for s in scores])),
        mean_output_words=float(np.mean([len(o.split()) for o in outputs])),
    )
