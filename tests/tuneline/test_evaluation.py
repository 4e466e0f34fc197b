import numpy as np
import pandas as pd
import pytest

from tuneline.evaluation import (
    classification_report,
    generation_report,
    plot_confusion_matrix,
    regression_report,
    sliced_metrics,
    worst_examples,
)

LABELS = ("negative", "positive")


def test_report_matches_hand_counted_confusion():
    truth = ["negative", "negative", "positive", "positive", "positive"]
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    report = classification_report(truth, probabilities, LABELS)
    assert report.confusion == ((1, 1), (1, 2))
    assert report.accuracy == pytest.approx(3 / 5)
    assert report.per_class["positive"]["precision"] == pytest.approx(2 / 3)
    assert report.per_class["positive"]["recall"] == pytest.approx(2 / 3)
    assert report.per_class["negative"]["recall"] == pytest.approx(1 / 2)
    assert report.macro_f1 == pytest.approx((0.5 + 2 / 3) / 2)
    assert report.metrics("test_")["test_recall_negative"] == pytest.approx(0.5)


def test_a_label_never_predicted_still_gets_a_row():
    report = classification_report(["a", "b", "c"], np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]), ("a", "b", "c"))
    assert report.per_class["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert len(report.confusion) == 3


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        classification_report(["a"], np.array([[0.5, 0.5, 0.0]]), ("a", "b"))


def test_worst_examples_are_the_highest_loss_rows_first():
    frame = pd.DataFrame({"row": [10, 11, 12, 13], "text": ["w", "x", "y", "z"],
                          "label": ["negative", "positive", "positive", "negative"]})
    probabilities = np.array([[0.4, 0.6], [0.95, 0.05], [0.2, 0.8], [0.9, 0.1]])
    worst = worst_examples(frame, probabilities, LABELS, limit=3)
    assert list(worst["row"]) == [11, 10, 12]
    assert worst["loss"].iloc[0] == pytest.approx(-np.log(0.05), abs=1e-4)
    assert list(worst["predicted"][:2]) == ["negative", "positive"]


def test_binary_report_has_auc_weighted_f1_and_log_loss():
    truth = ["negative", "positive", "positive", "negative"]
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]])
    report = classification_report(truth, probabilities, LABELS)
    assert report.roc_auc == pytest.approx(1.0)  # every positive outranks every negative
    assert report.accuracy == pytest.approx(0.75)
    assert report.log_loss == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.4, 0.9])))
    assert "test_roc_auc" in report.metrics("test_")
    three = classification_report(["a", "b", "c"], np.eye(3), ("a", "b", "c"))
    assert three.roc_auc is None and three.weighted_f1 == pytest.approx(1.0)


def test_slices_by_column_and_length():
    frame = pd.DataFrame({"row": range(4), "label": ["negative", "positive", "positive", "negative"],
                          "text": ["bad", "good", " ".join(["fine"] * 15), "awful"], "domain": ["a", "a", "b", "b"]})
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.9, 0.1]])
    slices = sliced_metrics(frame, probabilities, LABELS, "domain").set_index(["slice", "value"])
    assert slices.loc[("domain", "a"), "accuracy"] == 1.0
    assert slices.loc[("domain", "b"), "accuracy"] == 0.5
    assert slices.loc[("length", "11-20 words"), "rows"] == 1
    assert slices.loc[("length", "1-10 words"), "accuracy"] == 1.0
    with pytest.raises(ValueError, match="slice_column 'source'"):
        sliced_metrics(frame, probabilities, LABELS, "source")


def test_regression_report_matches_sklearn_definitions():
    report = regression_report(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert (report.mse, report.mae) == (pytest.approx(4 / 3), pytest.approx(2 / 3))
    assert report.r2 == pytest.approx(1 - 4 / 2)
    with pytest.raises(ValueError, match="2 predictions for 3 targets"):
        regression_report(np.zeros(3), np.zeros(2))


def test_generation_report_rewards_overlap():
    references = ["the cat sat on the mat", "a quick brown fox jumps"]
    perfect = generation_report(references, references)
    assert perfect.bleu == pytest.approx(100.0) and perfect.rouge_l == pytest.approx(1.0)
    partial = generation_report(references, ["the cat sat", "a slow red fox"])
    assert 0 < partial.rouge1 < 1 and partial.bleu < perfect.bleu
    assert partial.mean_output_words == pytest.approx(3.5)


def test_confusion_plot_is_a_png(tmp_path):
    report = classification_report(["negative", "positive"], np.array([[0.9, 0.1], [0.1, 0.9]]), LABELS)
    path = plot_confusion_matrix(report, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
