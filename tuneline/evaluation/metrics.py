"""Evaluation reports per task type, their plots, bad cases and sliced metrics.

classification: `classification_report`, `plot_confusion_matrix`, `worst_examples`, `sliced_metrics`;
regression: `regression_report`, `plot_predicted_vs_true`, `worst_regression_examples`, `sliced_regression_metrics`;
seq2seq and causal_lm: `generation_report`, `worst_generation_examples`, `sliced_generation_metrics`.

Every metric comes from sklearn, sacrebleu or rouge-score; none is written by hand.
"""

from __future__ import annotations
from tuneline.kinds import kind

import re
import unicodedata
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


def slice_keys(frame: pd.DataFrame, column: str | None) -> dict[str, pd.Series]:
    """The slicings every task reports: `length` (input words), and `column` when given; positions 0..n-1."""
    keys = {"length": length_bucket(frame["text"].reset_index(drop=True))}
    if column is not None:
        if column not in frame.columns:
            raise ValueError(f"evaluation.slice_column {column!r} is not a column of the data; it has {list(frame.columns)}")
        keys[column] = frame[column].astype(str).reset_index(drop=True)
    return keys


def sliced_metrics(frame: pd.DataFrame, probabilities: np.ndarray, labels: tuple[str, ...], column: str | None) -> pd.DataFrame:
    """Accuracy and macro-F1 per value of `column` and per text-length bucket, one row per slice."""
    from sklearn.metrics import accuracy_score, f1_score

    keys = slice_keys(frame, column)
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


# Regression ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegressionReport:
    rows: int
    mse: float
    mae: float
    r2: float

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow and the gate: mse, mae, r2."""
        return {f"{prefix}mse": self.mse, f"{prefix}mae": self.mae, f"{prefix}r2": self.r2}


def _as_pairs(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, dtype=float).reshape(-1), np.asarray(y_pred, dtype=float).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_pred)} predictions for {len(y_true)} targets")
    if not len(y_true):
        raise ValueError("nothing to score: no targets")
    return y_true, y_pred


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> RegressionReport:
    """MSE, MAE and R² (sklearn) of predicted against true values.

    R² is 1 for perfect predictions, 0 for predicting the mean, negative for worse;
    sklearn's convention for a constant target (1 if predicted exactly, else 0) applies,
    and with a single row it is NaN (undefined).
    """
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true, y_pred = _as_pairs(y_true, y_pred)
    return RegressionReport(
        rows=len(y_true),
        mse=float(mean_squared_error(y_true, y_pred)),
        mae=float(mean_absolute_error(y_true, y_pred)),
        r2=float(r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
    )


def plot_predicted_vs_true(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str = "Test split") -> Path:
    """Save a predicted-against-true scatter, with the y = x line a perfect model would sit on, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    y_true, y_pred = _as_pairs(y_true, y_pred)
    report = regression_report(y_true, y_pred)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    margin = 0.05 * (high - low or 1.0)
    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.scatter(y_true, y_pred, s=12, alpha=0.6)
    axes.plot([low - margin, high + margin], [low - margin, high + margin], color="grey", linestyle="--", linewidth=1)
    axes.set_xlim(low - margin, high + margin)
    axes.set_ylim(low - margin, high + margin)
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    axes.set_title(f"{title}: R² {report.r2:.3f}, MAE {report.mae:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _targets(frame: pd.DataFrame, predictions) -> tuple[np.ndarray, np.ndarray]:
    from tuneline.data.loading import regression_targets

    return _as_pairs(regression_targets(frame), predictions)


def worst_regression_examples(frame: pd.DataFrame, predictions: np.ndarray, limit: int) -> pd.DataFrame:
    """The test rows with the largest absolute error, worst first."""
    truth, predicted = _targets(frame, predictions)
    table = pd.DataFrame(
        {
            "row": frame["row"].to_numpy(),
            "text": frame["text"].to_numpy(),
            "label": frame["label"].to_numpy(),
            "predicted": predicted.round(4),
            "error": (predicted - truth).round(4),
            "abs_error": np.abs(predicted - truth).round(4),
        }
    )
    return table.sort_values("abs_error", ascending=False, kind="stable").head(limit).reset_index(drop=True)


def sliced_regression_metrics(frame: pd.DataFrame, predictions: np.ndarray, column: str | None) -> pd.DataFrame:
    """MSE, MAE and R² per value of `column` and per text-length bucket, one row per slice (R² NaN for one row)."""
    truth, predicted = _targets(frame, predictions)
    rows = []
    for name, values in slice_keys(frame, column).items():
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            report = regression_report(truth[mask], predicted[mask])
            rows.append({"slice": name, "value": value, "rows": report.rows, "mse": round(report.mse, 4),
                         "mae": round(report.mae, 4), "r2": round(report.r2, 4)})
    return pd.DataFrame(rows)


# Generation (seq2seq, causal_lm) ---------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")


def _is_punctuation(ch: str) -> bool:
    # The same test BERT's basic tokenizer uses: every ASCII non-alphanumeric printable, and Unicode P*.
    code = ord(ch)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or (
        unicodedata.category(ch).startswith("P"))


def normalize_spacing(text: str, lowercase: bool = False) -> str:
    """One space around every punctuation mark, whitespace runs collapsed: the form both sides are scored in.

    A WordPiece tokenizer splits punctuation off words and its decoder does not
    always join it back ("issue: x, y" comes out as "issue : x, y", "don't" as
    "don ' t", "3.5" as "3. 5"); a reference and a prediction that differ only
    in that spacing must score as equal. Separating every mark on both sides
    makes that so, whatever the tokenizer. `lowercase` for uncased models, whose
    output has lost the reference's case.
    """
    spaced = "".join(f" {ch} " if _is_punctuation(ch) else ch for ch in text)
    spaced = _SPACES.sub(" ", spaced).strip()
    return spaced.lower() if lowercase else spaced


GENERATION_EXAMPLES = 5  # reference / prediction pairs kept in a GenerationReport


@dataclass(frozen=True)
class GenerationReport:
    rows: int
    bleu: float  # sacreBLEU corpus BLEU, 0-100
    rouge1: float  # mean F-measures (rouge-score), scaled 0-100 like BLEU
    rouge2: float
    rouge_l: float  # "rougeL" in metrics() and the gate
    mean_output_words: float
    examples: tuple[dict[str, str], ...] = ()  # the first few reference / prediction pairs, as given

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow and the gate: bleu, rouge1, rouge2, rougeL (all 0-100), mean_output_words."""
        return {f"{prefix}bleu": self.bleu, f"{prefix}rouge1": self.rouge1, f"{prefix}rouge2": self.rouge2,
                f"{prefix}rougeL": self.rouge_l, f"{prefix}mean_output_words": self.mean_output_words}


def _scorer():
    from rouge_score import rouge_scorer

    # rouge-score's tokenizer keeps only [a-z0-9] runs (lowercased): text in other scripts scores 0.
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _normalized_pairs(references: list[str], predictions: list[str], lowercase: bool) -> tuple[list[str], list[str]]:
    references, predictions = list(references), list(predictions)
    if len(references) != len(predictions) or not references:
        raise ValueError(f"need one prediction per reference, got {len(predictions)} predictions "
                         f"for {len(references)} references")
    return ([normalize_spacing(r, lowercase) for r in references], [normalize_spacing(p, lowercase) for p in predictions])


def generation_report(references: list[str], predictions: list[str], lowercase: bool = False,
                      example_count: int = GENERATION_EXAMPLES) -> GenerationReport:
    """Corpus BLEU (sacrebleu) and mean ROUGE-1/2/L F-measure (rouge-score) of predictions against references.

    Both sides go through `normalize_spacing` first. All four scores are 0-100;
    identical texts score 100, texts with no word in common 0.
    """
    import sacrebleu

    normalized_refs, normalized_preds = _normalized_pairs(references, predictions, lowercase)
    scorer = _scorer()
    scores = [scorer.score(r, p) for r, p in zip(normalized_refs, normalized_preds)]
    return GenerationReport(
        rows=len(normalized_refs),
        bleu=float(sacrebleu.corpus_bleu(normalized_preds, [normalized_refs]).score),
        rouge1=100 * float(np.mean([s["rouge1"].fmeasure for s in scores])),
        rouge2=100 * float(np.mean([s["rouge2"].fmeasure for s in scores])),
        rouge_l=100 * float(np.mean([s["rougeL"].fmeasure for s in scores])),
        mean_output_words=float(np.mean([len(p.split()) for p in predictions])),
        examples=tuple({"reference": r, "prediction": p} for r, p in list(zip(references, predictions))[:example_count]),
    )


def sentence_rouge_l(references: list[str], predictions: list[str], lowercase: bool = False) -> np.ndarray:
    """ROUGE-L F-measure (0-100) of each prediction against its reference, after `normalize_spacing`."""
    normalized_refs, normalized_preds = _normalized_pairs(references, predictions, lowercase)
    scorer = _scorer()
    return np.array([100 * scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(normalized_refs, normalized_preds)])


def worst_generation_examples(frame: pd.DataFrame, predictions: list[str], limit: int,
                              lowercase: bool = False) -> pd.DataFrame:
    """The test rows whose prediction has the lowest sentence ROUGE-L against the reference (`label`), worst first."""
    rouge_l = sentence_rouge_l(list(frame["label"]), list(predictions), lowercase)
    table = pd.DataFrame(
        {
            "row": frame["row"].to_numpy(),
            "text": frame["text"].to_numpy(),
            "label": frame["label"].to_numpy(),
            "predicted": list(predictions),
            "rougeL": rouge_l.round(2),
        }
    )
    return table.sort_values("rougeL", ascending=True, kind="stable").head(limit).reset_index(drop=True)


def sliced_generation_metrics(frame: pd.DataFrame, predictions: list[str], column: str | None,
                              lowercase: bool = False) -> pd.DataFrame:
    """Corpus BLEU and mean ROUGE-L per value of `column` and per input-length bucket, one row per slice."""
    references, predictions = list(frame["label"]), list(predictions)
    _normalized_pairs(references, predictions, lowercase)  # refuses a length mismatch before any slicing
    rows = []
    for name, values in slice_keys(frame, column).items():
        for value in sorted(values.unique()):
            picked = np.flatnonzero((values == value).to_numpy())
            report = generation_report([references[i] for i in picked], [predictions[i] for i in picked], lowercase, 0)
            rows.append({"slice": name, "value": value, "rows": report.rows, "bleu": round(report.bleu, 2),
                         "rougeL": round(report.rouge_l, 2)})
    return pd.DataFrame(rows)


# Per-row scores and paired tests ------------------------------------------------------------------------------------

# The per-row series a metric's paired test runs on: correctness for classification (McNemar), per-row errors for
# regression and sentence-level scores for generation (Wilcoxon signed-rank). R² ranks models on the same rows as
# MSE does, so both use squared errors; BLEU and ROUGE use their sentence-level scores (0-100).
PAIRED_SERIES = {"accuracy": "correct", "macro_f1": "correct", "mse": "squared_error", "r2": "squared_error",
                 "mae": "absolute_error", "bleu": "bleu", "rouge1": "rouge1", "rouge2": "rouge2", "rougeL": "rougeL"}
LOWER_SERIES = frozenset({"squared_error", "absolute_error"})  # lower is better; higher for the others


def row_scores(task: str, outputs, targets: list, labels: tuple[str, ...] = (),
               lowercase: bool = False) -> dict[str, tuple[float, ...]]:
    """Per-row scores of one model on the test rows, in row order: what its paired tests compare.

    `outputs`: class probabilities or logits (classification), predictions (regression), generated texts.
    classification: `correct` (1.0 / 0.0); regression: `squared_error`, `absolute_error`;
    generation: sentence `bleu` (sacrebleu) and `rouge1` / `rouge2` / `rougeL` F-measures (rouge-score), 0-100.
    """
    if kind(task).has_classes:
        label_ids = {name: i for i, name in enumerate(labels)}
        truth = np.array([label_ids[name] for name in targets])
        predicted = np.asarray(outputs).argmax(axis=1)
        return {"correct": tuple(float(v) for v in predicted == truth)}
    if kind(task).numeric:
        truth, predicted = _as_pairs(targets, outputs)
        return {"squared_error": tuple(float(v) for v in (predicted - truth) ** 2),
                "absolute_error": tuple(float(v) for v in np.abs(predicted - truth))}
    import sacrebleu

    references, predictions = _normalized_pairs(list(targets), list(outputs), lowercase)
    scorer = _scorer()
    scores = [scorer.score(r, p) for r, p in zip(references, predictions)]
    out = {"bleu": tuple(float(sacrebleu.sentence_bleu(p, [r]).score) for r, p in zip(references, predictions))}
    return out | {name: tuple(100 * float(s[name].fmeasure) for s in scores) for name in ("rouge1", "rouge2", "rougeL")}


@dataclass(frozen=True)
class PairedTest:
    """Two models compared row by row on the same rows: is the second one's difference more than chance?"""

    test: str  # "McNemar's exact test" or "Wilcoxon signed-rank test"
    series: str  # the per-row series compared (`PAIRED_SERIES`)
    rows: int  # rows compared
    worse: int  # rows the second model does worse on (classification: right only in the first)
    better: int  # rows the second model does better on (classification: right only in the second)
    p_value: float  # two-sided

    def significant(self, level: float) -> bool:
        """Whether the difference is significant at `level` (p <= level; a level of 1 makes every difference so)."""
        return self.p_value <= level

    def describe(self, first: str, second: str) -> str:
        """One line naming the test, the rows, the discordant counts and the p-value."""
        if self.series == "correct":
            counts = f"{self.worse} right only in {first}, {self.better} right only in {second}"
        else:
            counts = f"{second} worse on {self.worse}, better on {self.better} (per-row {self.series})"
        return f"{self.test} on {self.rows} paired rows: {counts}, p={self.p_value:.3g}"


def paired_test(series: str, first, second) -> PairedTest:
    """Compare `second` with `first` on the same rows (per-row scores of `series`, same order).

    `correct`: McNemar's exact test on the discordant rows (scipy's binomial test of the rows right only in
    one model; the same p-value as statsmodels' `mcnemar(..., exact=True)`). Other series: the Wilcoxon
    signed-rank test of the per-row differences (scipy), rows with no difference left out.
    """
    from scipy.stats import binomtest, wilcoxon

    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"a paired test needs the same rows for both models: got {len(first)} and {len(second)}")
    gain = (first - second) if series in LOWER_SERIES else (second - first)  # positive: the second is better
    worse, better = int((gain < 0).sum()), int((gain > 0).sum())
    if series == "correct":
        p_value = float(binomtest(worse, worse + better, 0.5).pvalue) if worse + better else 1.0
        return PairedTest("McNemar's exact test", series, len(first), worse, better, p_value)
    p_value = float(wilcoxon(second, first).pvalue) if worse + better else 1.0
    return PairedTest("Wilcoxon signed-rank test", series, len(first), worse, better, p_value)


# Trivial baselines ---------------------------------------------------------------------------------------------------

# Bag-of-words baseline: TF-IDF of words (scikit-learn's defaults: unigrams, lowercased) and a logistic regression.
# Fixed on purpose: it is a yardstick, comparable across runs, not a model anyone tunes.
BAG_OF_WORDS_MAX_ITER = 1000


@dataclass(frozen=True)
class Baseline:
    name: str  # the column it gets beside champion and candidate: "majority class", "bag-of-words", ...
    detail: str  # what it predicts: "always 'negative' (the train split's most frequent label)"
    metrics: dict[str, float]  # the task's test metrics on the candidate's test split


@dataclass(frozen=True)
class Baselines:
    """Trivial models scored on a run's test split, which a candidate must beat (the gate's floor).

    `trivial`: the majority class (classification), the train mean (regression), or the input copied as
    the output (seq2seq, causal_lm). `bag_of_words`: a TF-IDF logistic regression fitted on the train
    split (classification only).
    """

    trivial: Baseline
    bag_of_words: Baseline | None = None
    rows: int = 0  # test rows they were scored on
    test_hash: str | None = None  # content hash of that test split

    def all(self) -> tuple[Baseline, ...]:
        return (self.trivial,) + ((self.bag_of_words,) if self.bag_of_words is not None else ())

    def to_dict(self) -> dict:
        """JSON-ready, as `evaluation/baselines.json` holds it; `from_dict` reads it back."""
        return {"rows": self.rows, "test_hash": self.test_hash,
                "baselines": [{"kind": kind, "name": b.name, "detail": b.detail, "metrics": b.metrics}
                              for kind, b in (("trivial", self.trivial), ("bag_of_words", self.bag_of_words)) if b]}

    @classmethod
    def from_dict(cls, data: dict) -> Baselines:
        found = {item["kind"]: Baseline(item["name"], item["detail"], dict(item["metrics"])) for item in data["baselines"]}
        return cls(found["trivial"], found.get("bag_of_words"), int(data.get("rows", 0)), data.get("test_hash"))


def _label_metrics(truth: list[str], predicted, labels: tuple[str, ...]) -> dict[str, float]:
    # Scored as classification_report scores the model: macro-F1 over every label, absent ones included.
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, labels=list(labels), average="macro", zero_division=0))}


def score_baselines(task: str, train: pd.DataFrame, test: pd.DataFrame, labels: tuple[str, ...] = (),
                    lowercase: bool = False, test_hash: str | None = None) -> Baselines:
    """Fit the trivial baselines on `train` (texts in `text`, targets in `label`) and score them on `test`.

    Scored like the model: the same metrics, the same labels; `lowercase` as the model's generations are scored.
    """
    if test.empty:
        raise ValueError("the test split is empty: there is nothing to score the baselines on")
    if kind(task).has_classes:
        from sklearn.dummy import DummyClassifier

        truth = list(test["label"])
        majority = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train), 1)), list(train["label"]))
        label = str(majority.predict(np.zeros((1, 1)))[0])
        trivial = Baseline("majority class", f"always {label!r}, the train split's most frequent label",
                           _label_metrics(truth, [label] * len(test), labels))
        bag_of_words = None
        if train["label"].nunique() > 1:  # a logistic regression needs two classes to fit
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline

            model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=BAG_OF_WORDS_MAX_ITER))
            model.fit(list(train["text"]), list(train["label"]))
            bag_of_words = Baseline("bag-of-words", f"TF-IDF + logistic regression fitted on {len(train)} train rows",
                                    _label_metrics(truth, model.predict(list(test["text"])), labels))
        return Baselines(trivial, bag_of_words, len(test), test_hash)
    if kind(task).numeric:
        from sklearn.dummy import DummyRegressor

        from tuneline.data.loading import regression_targets

        mean = DummyRegressor(strategy="mean").fit(np.zeros((len(train), 1)), regression_targets(train))
        value = float(mean.constant_.reshape(-1)[0])
        report = regression_report(regression_targets(test), np.full(len(test), value))
        return Baselines(Baseline("train mean", f"always {value:.4g}, the train split's mean", report.metrics()),
                         None, len(test), test_hash)
    report = generation_report(list(test["label"]), list(test["text"]), lowercase, 0)
    metrics = {name: value for name, value in report.metrics().items() if name != "mean_output_words"}
    return Baselines(Baseline("copy input", "the input text returned as the output", metrics), None, len(test), test_hash)
