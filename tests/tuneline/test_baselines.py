"""The gate's floor (trivial baselines scored where the data is) and the paired tests, with plain values."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from tests.conftest import make_reviews
from tuneline.config import PromotionConfig
from tuneline.evaluation.metrics import Baselines, paired_test, row_scores, score_baselines
from tuneline.promotion.policy import ModelMetrics, decide

LABELS = ("negative", "positive")


def frame(texts, labels) -> pd.DataFrame:
    return pd.DataFrame({"text": list(texts), "label": list(labels)})


def test_majority_class_comes_from_the_train_split_and_is_scored_on_the_test_split():
    train = frame([f"row {i}" for i in range(10)], ["positive"] * 6 + ["negative"] * 4)
    test = frame([f"other {i}" for i in range(10)], ["positive"] * 5 + ["negative"] * 5)
    baselines = score_baselines("classification", train, test, LABELS, test_hash="h")
    assert baselines.trivial.name == "majority class" and "'positive'" in baselines.trivial.detail
    assert baselines.trivial.metrics == pytest.approx({"accuracy": 0.5, "macro_f1": (2 / 3) / 2})
    assert (baselines.rows, baselines.test_hash) == (10, "h")


def test_the_bag_of_words_baseline_learns_words_from_train_and_scores_the_test_split():
    data = make_reviews(30)  # "item 3 is superb and I am happy" / "item 3 is horrible and I am upset"
    baselines = score_baselines("classification", data[:40], data[40:], LABELS)
    assert baselines.bag_of_words is not None and "fitted on 40 train rows" in baselines.bag_of_words.detail
    assert baselines.bag_of_words.metrics["accuracy"] == 1.0 > baselines.trivial.metrics["accuracy"]
    # one class in train: a logistic regression cannot be fitted, the majority class still can
    one_class = score_baselines("classification", data[data["label"] == "positive"], data, LABELS)
    assert one_class.bag_of_words is None and one_class.trivial.metrics["accuracy"] == 0.5


def test_a_model_that_predicts_one_class_on_a_balanced_split_is_refused():
    data = make_reviews(30)
    train, test = data[:40], data[40:].reset_index(drop=True)
    baselines = score_baselines("classification", train, test, LABELS)
    always_negative = np.tile([0.9, 0.1], (len(test), 1))
    correct = row_scores("classification", always_negative, list(test["label"]), LABELS)["correct"]
    candidate = ModelMetrics({"accuracy": float(np.mean(correct)), "macro_f1": 1 / 3})
    assert candidate.get("accuracy") == 0.5 == baselines.trivial.metrics["accuracy"]
    decision = decide(candidate, None, PromotionConfig(require_beat_bow=False), baselines)
    assert not decision.promote and "majority class baseline 0.5000" in decision.reasons[0]


def test_regression_baseline_is_the_train_mean():
    train = frame(["a", "b", "c"], ["1", "2", "3"])
    test = frame(["d", "e"], ["2", "4"])
    baselines = score_baselines("regression", train, test)
    assert baselines.trivial.name == "train mean" and "always 2" in baselines.trivial.detail
    # errors 0 and 2: mse 2, mae 1; R² 1 - 4 / 2 = -1 on this test split
    assert baselines.trivial.metrics == pytest.approx({"mse": 2.0, "mae": 1.0, "r2": -1.0})
    assert baselines.bag_of_words is None


def test_generation_baseline_copies_the_input():
    same = frame(["blue kettle arrived broken"] * 3, ["blue kettle arrived broken"] * 3)
    assert score_baselines("seq2seq", same, same).trivial.metrics["rougeL"] == pytest.approx(100.0)
    other = frame(["please send a new blue kettle", "where is my order"], ["return: blue kettle", "order status"])
    copied = score_baselines("causal_lm", other, other).trivial
    assert copied.name == "copy input" and 0 < copied.metrics["rougeL"] < 100 and set(copied.metrics) == {
        "bleu", "rouge1", "rouge2", "rougeL"}


def test_baselines_round_trip_through_their_json():
    data = make_reviews(10)
    baselines = score_baselines("classification", data[:14], data[14:], LABELS, test_hash="h")
    assert Baselines.from_dict(baselines.to_dict()) == baselines


def test_mcnemar_counts_the_discordant_rows_and_matches_the_exact_binomial():
    first = [1.0] * 20 + [0.0] * 10
    second = [1.0] * 17 + [0.0] * 3 + [1.0] * 2 + [0.0] * 8  # 3 right only in first, 2 only in second
    test = paired_test("correct", first, second)
    assert (test.test, test.rows, test.worse, test.better) == ("McNemar's exact test", 30, 3, 2)
    assert test.p_value == pytest.approx(min(1.0, 2 * binom.cdf(2, 5, 0.5)))  # statsmodels' exact mcnemar formula
    assert not test.significant(0.05) and test.significant(1.0)
    assert paired_test("correct", first, first).p_value == 1.0  # no discordant rows
    assert test.describe("FP32", "INT8") == ("McNemar's exact test on 30 paired rows: 3 right only in FP32, "
                                             "2 right only in INT8, p=1")


def test_wilcoxon_reads_errors_as_lower_is_better():
    errors = [0.1 * (i % 7) for i in range(50)]
    larger = [e + 0.05 for e in errors]
    test = paired_test("squared_error", errors, larger)
    assert test.test == "Wilcoxon signed-rank test" and (test.worse, test.better) == (50, 0) and test.p_value < 1e-6
    scores = paired_test("rougeL", errors, larger)  # a score: higher is better
    assert (scores.worse, scores.better) == (0, 50)
    assert paired_test("absolute_error", errors, errors).p_value == 1.0
    with pytest.raises(ValueError, match="same rows"):
        paired_test("squared_error", errors, errors[:-1])


def test_row_scores_per_task():
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert row_scores("classification", probabilities, ["negative", "negative", "negative"], LABELS) == {
        "correct": (1.0, 0.0, 1.0)}
    regression = row_scores("regression", np.array([[1.0], [3.0]]), [2.0, 3.0])
    assert regression == {"squared_error": (1.0, 0.0), "absolute_error": (1.0, 0.0)}
    generation = row_scores("seq2seq", ["blue kettle", "red"], ["blue kettle", "green mug"])
    assert generation["rougeL"] == (100.0, 0.0) and set(generation) == {"bleu", "rouge1", "rouge2", "rougeL"}
