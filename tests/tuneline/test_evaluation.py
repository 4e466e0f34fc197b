import numpy as np
import pandas as pd
import pytest

from tuneline.errors import DataValidationError
from tuneline.evaluation.metrics import (
    classification_report,
    generation_report,
    normalize_spacing,
    plot_confusion_matrix,
    plot_predicted_vs_true,
    regression_report,
    sentence_rouge_l,
    sliced_generation_metrics,
    sliced_metrics,
    sliced_regression_metrics,
    worst_examples,
    worst_generation_examples,
    worst_regression_examples,
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
    assert perfect.bleu == pytest.approx(100.0) and perfect.rouge_l == pytest.approx(100.0)
    partial = generation_report(references, ["the cat sat", "a slow red fox"])
    assert 0 < partial.rouge1 < 100 and partial.bleu < perfect.bleu
    assert partial.mean_output_words == pytest.approx(3.5)


def test_confusion_plot_is_a_png(tmp_path):
    report = classification_report(["negative", "positive"], np.array([[0.9, 0.1], [0.1, 0.9]]), LABELS)
    path = plot_confusion_matrix(report, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Regression ------------------------------------------------------------------------------------------------------

SCORED = pd.DataFrame({"row": [20, 21, 22, 23], "text": ["ok", "fine phone", " ".join(["long"] * 15), "bad"],
                       "label": ["3.0", "4.0", "5.0", "1.0"], "domain": ["a", "a", "b", "b"]})


def test_regression_report_of_perfect_and_of_mean_predictions():
    truth = np.array([1.0, 2.0, 4.0, 9.0])
    perfect = regression_report(truth, truth)
    assert (perfect.mse, perfect.mae, perfect.r2) == (0.0, 0.0, 1.0)
    assert regression_report(truth, np.full(4, truth.mean())).r2 == pytest.approx(0.0)
    assert regression_report(truth, truth + 1).metrics("test_") == {"test_mse": 1.0, "test_mae": 1.0,
                                                                    "test_r2": pytest.approx(1 - 4 / 38)}
    assert np.isnan(regression_report([2.0], [3.0]).r2)  # undefined for one row, not a fake 0
    with pytest.raises(ValueError, match="no targets"):
        regression_report([], [])


def test_worst_regression_examples_are_the_largest_errors_first():
    worst = worst_regression_examples(SCORED, np.array([3.1, 2.0, 5.0, 4.5]), limit=2)
    assert list(worst["row"]) == [23, 21]
    assert list(worst["error"]) == [3.5, -2.0]
    assert list(worst["abs_error"]) == [3.5, 2.0]
    with pytest.raises(DataValidationError, match="row=22, label='high'"):
        worst_regression_examples(SCORED.assign(label=["3.0", "4.0", "high", "1.0"]), np.zeros(4), limit=2)


def test_regression_slices_by_column_and_length():
    slices = sliced_regression_metrics(SCORED, np.array([3.0, 5.0, 5.0, 3.0]), "domain").set_index(["slice", "value"])
    assert slices.loc[("domain", "a"), "mae"] == 0.5
    assert slices.loc[("domain", "b"), "mse"] == 2.0
    assert slices.loc[("length", "11-20 words"), "rows"] == 1 and np.isnan(slices.loc[("length", "11-20 words"), "r2"])
    with pytest.raises(ValueError, match="slice_column 'source'"):
        sliced_regression_metrics(SCORED, np.zeros(4), "source")
    with pytest.raises(ValueError, match="3 predictions for 4 targets"):
        sliced_regression_metrics(SCORED, np.zeros(3), None)


def test_predicted_vs_true_plot_is_a_png(tmp_path):
    path = plot_predicted_vs_true(np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.5]), tmp_path / "scatter.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Generation ------------------------------------------------------------------------------------------------------


def test_spacing_normaliser_undoes_wordpiece_decoding():
    # What MiniLM's tokenizer decodes "issue: x, y", "don't" and "3.5%" to.
    assert normalize_spacing("issue: a, b") == normalize_spacing("issue : a , b") == "issue : a , b"
    assert normalize_spacing("don't (really)") == normalize_spacing("don ' t ( really )")
    assert normalize_spacing("3.5% off!") == normalize_spacing("3. 5 % off !")
    assert normalize_spacing("  two\n lines\t") == "two lines"
    assert normalize_spacing("Repair: Lamp", lowercase=True) == "repair : lamp"


def test_wordpiece_spacing_does_not_cost_bleu_or_rouge():
    report = generation_report(["issue: a, b and c"], ["issue : a , b and c"])
    assert report.bleu == pytest.approx(100.0)
    assert (report.rouge1, report.rouge2, report.rouge_l) == (pytest.approx(100.0),) * 3
    assert report.examples == ({"reference": "issue: a, b and c", "prediction": "issue : a , b and c"},)


def test_identical_texts_score_100_and_disjoint_texts_0():
    references = ["repair request: silver scanner, will not turn on", "cancel order: white bicycle, delivery too slow"]
    same = generation_report(references, references)
    assert same.metrics("test_") == {"test_bleu": pytest.approx(100.0), "test_rouge1": pytest.approx(100.0),
                                     "test_rouge2": pytest.approx(100.0), "test_rougeL": pytest.approx(100.0),
                                     "test_mean_output_words": 7.5}
    disjoint = generation_report(references, ["lovely weather in june today", "purple elephants dance quietly tonight"])
    assert disjoint.bleu == pytest.approx(0.0, abs=1e-6)
    assert (disjoint.rouge1, disjoint.rouge2, disjoint.rouge_l) == (0.0, 0.0, 0.0)


def test_case_counts_unless_lowercased():
    cased = generation_report(["Return Request: Blue Kettle arrived broken"], ["return request: blue kettle arrived broken"])
    assert cased.bleu < 50
    lowered = generation_report(["Return Request: Blue Kettle arrived broken"], ["return request: blue kettle arrived broken"],
                                lowercase=True)
    assert lowered.bleu == pytest.approx(100.0)


def test_generation_report_refuses_mismatched_lists():
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        generation_report(["a", "b"], ["a"])


PAIRS = pd.DataFrame({"row": [30, 31, 32], "text": ["fix my lamp", "cancel the bike order", " ".join(["words"] * 12)],
                      "label": ["repair request: lamp", "cancel order: bike", "feedback: good"], "topic": ["r", "c", "f"]})


def test_worst_generation_examples_are_the_lowest_rouge_l_first():
    predictions = ["repair request : lamp", "cancel order: car", "totally unrelated"]
    worst = worst_generation_examples(PAIRS, predictions, limit=2)
    assert list(worst["row"]) == [32, 31]
    assert worst["rougeL"].iloc[0] == 0.0
    assert sentence_rouge_l(list(PAIRS["label"]), predictions)[0] == pytest.approx(100.0)


def test_generation_slices_by_column_and_length():
    slices = sliced_generation_metrics(PAIRS, ["repair request: lamp", "no idea", "feedback: good"], "topic")
    slices = slices.set_index(["slice", "value"])
    assert slices.loc[("topic", "r"), "rougeL"] == 100.0
    assert slices.loc[("topic", "c"), "rougeL"] == 0.0
    assert slices.loc[("length", "1-10 words"), "rows"] == 2
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        sliced_generation_metrics(PAIRS, ["a", "b"], None)


def test_minilm_decoded_targets_score_as_their_references():
    # The round trip a BERT-based generator's output takes: WordPiece in, WordPiece decode out (uncased).
    from transformers import AutoTokenizer

    from tuneline.data.loading import BUILTIN_SEQ2SEQ_SAMPLE, load_dataset
    from tuneline.training.modeling import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm-l6"))
    references = list(load_dataset(BUILTIN_SEQ2SEQ_SAMPLE, "text", "target").frame["label"][:100])
    references += ["Don't stop: 3.5% off (today), e-mail me!", 'Price: $4.99/kg -- "fresh" [sic]; ok?']
    decoded = [tokenizer.decode(tokenizer(r)["input_ids"], skip_special_tokens=True) for r in references]
    assert all(d != r for d, r in zip(decoded, references))  # every one comes back spaced differently
    report = generation_report(references, decoded, lowercase=True)
    assert report.bleu == pytest.approx(100.0) and report.rouge_l == pytest.approx(100.0)
