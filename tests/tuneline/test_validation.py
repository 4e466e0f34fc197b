import json

import pytest

from tuneline.data import BUILTIN_SAMPLE, load_dataset
from tuneline.errors import ConfigError, DataValidationError
from tuneline.validation import EXPECTATIONS_DIR, load_suite, raise_for_failures, validate_frame

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
    flooded.loc[: len(flooded) // 4, "text"] = "same text"
    names = {f.expectation for f in validate_frame(flooded, "text_classification", LABELS).failures}
    assert names == {"expect_column_proportion_of_unique_values_to_be_between"}
    missing = validate_frame(sample.drop(columns=["label"]), "text_classification", LABELS)
    assert ("expect_column_to_exist", "label") in {(f.expectation, f.column) for f in missing.failures}


def test_unknown_suite_is_a_config_error(sample):
    with pytest.raises(ConfigError, match="not found"):
        validate_frame(sample, "no_such_suite", LABELS)
