import json

import numpy as np
import pandas as pd
import pytest

from tuneline.config import DataConfig, TextChecksConfig
from tuneline.data.loading import BUILTIN_SAMPLE, BUILTIN_SEQ2SEQ_SAMPLE, canonical_number, load_dataset
from tuneline.errors import ConfigError, DataValidationError
from tuneline.validation.suite import EXPECTATIONS_DIR, load_suite, raise_for_failures, validate_frame

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def sample():
    return load_dataset(BUILTIN_SAMPLE, "text", "label").frame.head(400)


@pytest.mark.parametrize("path", sorted(EXPECTATIONS_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_suite_file_loads(path):
    suite = load_suite(path)
    assert suite.name == path.stem
    assert len(suite.expectations) == len(json.loads(path.read_text())["expectations"])


def test_good_data_passes(sample):
    report = validate_frame(sample, "text_classification", LABELS)
    assert report.success and not report.failures
    raise_for_failures(report, "sample")  # does not raise


def test_corrupted_copy_fails_naming_expectations_and_rows(sample):
    corrupted = sample.copy()
    corrupted.loc[5, "text"] = None
    corrupted.loc[7, "label"] = "neutral"
    corrupted.loc[9, "text"] = "x"
    report = validate_frame(corrupted, "text_classification", LABELS)
    failed = {(f.expectation, f.column): f for f in report.failures}
    assert set(failed) == {
        ("expect_column_values_to_not_be_null", "text"),
        ("expect_column_values_to_be_in_set", "label"),
        ("expect_column_value_lengths_to_be_between", "text"),
    }
    assert failed[("expect_column_values_to_be_in_set", "label")].unexpected_count == 1
    assert failed[("expect_column_values_to_be_in_set", "label")].example_rows[0] == {"label": "neutral", "row": 7}
    with pytest.raises(DataValidationError) as caught:
        raise_for_failures(report, "reviews.csv")
    message = str(caught.value)
    assert "reviews.csv failed 3 of" in message
    assert "label='neutral'" in message and "row=7" in message
    assert len(caught.value.failures) == 3


def test_duplicate_flood_and_missing_column_fail(sample):
    flooded = sample.copy()
    flooded.loc[: len(flooded) // 4, "text"] = "same text"  # 101 of 400 rows, of both labels
    report = validate_frame(flooded, "text_classification", LABELS, checks=TextChecksConfig())
    failed = {f.expectation: f for f in report.failures}
    assert set(failed) == {"expect_repeated_rows_share_to_be_at_most", "expect_no_label_conflicts"}
    assert failed["expect_repeated_rows_share_to_be_at_most"].unexpected_count == 100
    assert "Setting: data.checks.max_duplicate_share=0.15" in failed["expect_repeated_rows_share_to_be_at_most"].describe()
    assert failed["expect_no_label_conflicts"].unexpected_count == 101
    missing = validate_frame(sample.drop(columns=["label"]), "text_classification", LABELS)
    assert ("expect_column_to_exist", "label") in {(f.expectation, f.column) for f in missing.failures}


def test_unknown_suite_is_a_config_error(sample):
    with pytest.raises(ConfigError, match="not found"):
        validate_frame(sample, "no_such_suite", LABELS)


# Regression and generation suites -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores():
    """Synthetic scored reviews, ingested as regression (numeric labels canonicalised)."""
    rng = np.random.default_rng(0)
    source = pd.DataFrame({"text": [f"review {i} of this phone" for i in range(120)],
                           "score": rng.uniform(1, 5, 120).round(1)})
    return source.rename(columns={"score": "label"}).assign(
        label=lambda f: f["label"].map(lambda v: canonical_number(str(v)))
    ).reset_index(names="row")


@pytest.fixture(scope="module")
def pairs():
    return load_dataset(BUILTIN_SEQ2SEQ_SAMPLE, "text", "target", task="seq2seq").frame.head(400)


def test_regression_suite_passes_good_scores(scores):
    report = validate_frame(scores, "text_regression", task="regression")
    assert report.success, [f.describe() for f in report.failures]
    assert "label_value" not in scores.columns  # the parsed column is added to a copy


def test_regression_suite_names_labels_that_are_not_finite_numbers(scores):
    corrupted = scores.copy()
    corrupted.loc[3, "label"] = "four"
    corrupted.loc[4, "label"] = "nan"
    corrupted.loc[5, "label"] = "1e999"  # parses, as infinity
    corrupted.loc[6, "label"] = None
    report = validate_frame(corrupted, "text_regression", task="regression")
    failed = {(f.expectation, f.column): f for f in report.failures}
    assert set(failed) == {
        ("expect_column_values_to_match_regex", "label"),
        ("expect_column_values_to_be_between", "label"),  # label_value: the label read as a number
        ("expect_column_values_to_not_be_null", "label"),
    }
    regex = failed[("expect_column_values_to_match_regex", "label")]
    assert regex.example_rows == ({"label": "four", "row": 3}, {"label": "nan", "row": 4})
    assert failed[("expect_column_values_to_be_between", "label")].example_rows[0]["row"] == 5
    with pytest.raises(DataValidationError, match="label='four', row=3"):
        raise_for_failures(report, "scores.csv")
    # Named as the user's file names the column, never as the internal label / label_value.
    named = validate_frame(corrupted, "text_regression", task="regression", data=DataConfig(label_column="stars"))
    with pytest.raises(DataValidationError) as caught:
        raise_for_failures(named, "scores.csv")
    message = str(caught.value)
    assert "expect_column_values_to_be_between on column 'stars'" in message and "stars='four', row=3" in message
    assert "label_value" not in message and "'label'" not in message and "label=" not in message
    assert "Setting: data.expectation_suite=text_regression (expectations/text_regression.json)" in message


def test_generation_suite_passes_the_shipped_seq2seq_sample(pairs):
    report = validate_frame(pairs, "text_generation", task="seq2seq")
    assert report.success, [f.describe() for f in report.failures]


def test_generation_suite_fails_blank_missing_and_huge_targets(pairs):
    corrupted = pairs.copy()
    corrupted.loc[3, "label"] = "  \n "
    corrupted.loc[4, "label"] = None
    corrupted.loc[5, "label"] = "word " * 5000
    corrupted.loc[6, "text"] = "x"
    report = validate_frame(corrupted, "text_generation", task="seq2seq")
    failed = {(f.expectation, f.column): f for f in report.failures}
    assert set(failed) == {
        ("expect_column_values_to_match_regex", "label"),
        ("expect_column_values_to_not_be_null", "label"),
        ("expect_column_value_lengths_to_be_between", "label"),
        ("expect_column_value_lengths_to_be_between", "text"),
    }
    assert failed[("expect_column_values_to_match_regex", "label")].example_rows[0]["row"] == 3
    message = failed[("expect_column_value_lengths_to_be_between", "label")].describe()
    assert "(25000 chars)" in message and len(message) < 300  # a huge target is quoted, cut


def test_generation_suite_allows_several_references_per_input(pairs):
    repeated = pd.concat([pairs, pairs.assign(label=pairs["label"] + " again")], ignore_index=True)
    assert validate_frame(repeated, "text_generation", task="seq2seq").success


def test_classification_suite_without_allowed_labels_is_a_config_error(scores):
    with pytest.raises(ConfigError, match="allowed_labels.*matches the task"):
        validate_frame(scores, "text_classification", task="regression")
