import hashlib
import json

import pandas as pd
import pytest

from tests.conftest import make_reviews
from tuneline.data import (
    BUILTIN_SAMPLE,
    SplitResult,
    check_disjoint,
    clean_dataset,
    clean_text,
    label_names,
    load_dataset,
    split_dataset,
)
from tuneline.errors import DataLoadError, SplitError
from tuneline.sample_data import SAMPLE_PATH, generate_reviews


def _write(frame: pd.DataFrame, path, fmt: str):
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    elif fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "datasets":
        import datasets

        datasets.Dataset.from_pandas(frame).save_to_disk(str(path))


@pytest.mark.parametrize("fmt, name", [("csv", "d.csv"), ("tsv", "d.tsv"), ("jsonl", "d.jsonl"), ("parquet", "d.parquet"), ("datasets", "saved")])
def test_every_format_gives_the_same_frame_and_hash(tmp_path, fmt, name):
    source = make_reviews(5).rename(columns={"text": "review", "label": "sentiment"})
    _write(source, tmp_path / name, fmt)
    result = load_dataset(str(tmp_path / name), "review", "sentiment")
    assert list(result.frame.columns[:3]) == ["row", "text", "label"]
    assert result.rows == 10
    assert list(result.frame["text"]) == list(source["review"])
    reference = load_dataset(str(_csv(tmp_path, source)), "review", "sentiment")
    assert result.content_hash == reference.content_hash


def _csv(tmp_path, frame):
    path = tmp_path / "reference.csv"
    frame.to_csv(path, index=False)
    return path


def test_hash_changes_with_one_label(tmp_path):
    frame = make_reviews(5)
    first = load_dataset(str(_csv(tmp_path, frame)), "text", "label").content_hash
    frame.loc[3, "label"] = "positive" if frame.loc[3, "label"] == "negative" else "negative"
    assert load_dataset(str(_csv(tmp_path, frame)), "text", "label").content_hash != first


def test_integer_labels_become_names(tmp_path):
    frame = pd.DataFrame({"sentence": ["a b", "c d", "e f"], "label": [1, 0, 10]})
    frame.to_parquet(tmp_path / "d.parquet")
    result = load_dataset(str(tmp_path / "d.parquet"), "sentence", "label")
    assert list(result.frame["label"]) == ["1", "0", "10"]
    assert label_names(result.frame, None) == ("0", "1", "10")  # numeric order, not "0", "1", "10" by luck


def test_missing_column_is_named(reviews_csv):
    with pytest.raises(DataLoadError, match="no column 'review'.*data.text_column"):
        load_dataset(str(reviews_csv), "review", "label")


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataLoadError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.csv"), "text", "label")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataLoadError, match="data.format"):
        load_dataset(str(tmp_path / "data.xlsx"), "text", "label")


def test_builtin_sample_loads():
    result = load_dataset(BUILTIN_SAMPLE, "text", "label")
    assert result.rows >= 2000
    assert set(result.frame["label"]) == {"negative", "positive"}


def test_shipped_sample_is_what_the_generator_makes():
    regenerated = generate_reviews().to_csv(index=False, lineterminator="\n").encode()
    assert hashlib.sha256(regenerated).hexdigest() == hashlib.sha256(SAMPLE_PATH.read_bytes()).hexdigest()


def test_clean_text_strips_markup_urls_and_controls():
    assert clean_text("  <b>Great</b>&amp;cheap  see https://x.io/a?b=1 \x00now\t\n ") == "Great &cheap see now"
    assert clean_text("caf\u0065\u0301") == "caf\u00e9"  # NFC: one code point, so duplicates match


def test_clean_counts_and_keeps_every_dropped_row():
    frame = pd.DataFrame(
        {
            "row": range(6),
            "text": ["good phone", "<p>good   phone</p>", "bad phone", "<br/>", "bad phone", "ok\x07 phone"],
            "label": ["positive", "positive", "negative", "negative", "negative", "positive"],
        }
    )
    result = clean_dataset(frame)
    assert (result.rows_in, result.rows_out, result.rows_dropped) == (6, 3, 3)
    assert list(result.frame["text"]) == ["good phone", "bad phone", "ok phone"]
    reasons = dict(zip(result.dropped["row"], result.dropped["reason"]))
    assert reasons == {1: "duplicate of row 0", 3: "empty after cleaning", 4: "duplicate of row 2"}
    assert result.changed == 3  # rows 1, 3 and 5 were rewritten


def test_split_is_seeded_stratified_and_disjoint():
    frame = generate_reviews(1000, seed=1).assign(row=range(1000))
    labels = label_names(frame, None)
    first = split_dataset(frame, labels, 0.8, 0.1, 0.1, seed=3)
    again = split_dataset(frame, labels, 0.8, 0.1, 0.1, seed=3)
    other = split_dataset(frame, labels, 0.8, 0.1, 0.1, seed=4)
    assert first.sizes() == {"train": 800, "validation": 100, "test": 100}
    assert list(first.test["row"]) == list(again.test["row"])
    assert list(first.test["row"]) != list(other.test["row"])
    everything = set(first.train["row"]) | set(first.validation["row"]) | set(first.test["row"])
    assert len(everything) == 1000
    overall = frame["label"].value_counts(normalize=True)
    for part in (first.train, first.validation, first.test):
        share = part["label"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.02


def test_split_refuses_a_label_too_rare_to_stratify():
    frame = make_reviews(20).assign(row=range(40))
    frame.loc[0, "label"] = "neutral"
    with pytest.raises(SplitError, match="neutral"):
        split_dataset(frame, label_names(frame, None), 0.8, 0.1, 0.1, seed=0)


def test_disjointness_check_catches_a_shared_text():
    frame = make_reviews(10).assign(row=range(20))
    leaky = SplitResult(train=frame, validation=frame.head(2), test=frame.tail(2), labels=("negative", "positive"))
    with pytest.raises(SplitError, match="both train and validation"):
        check_disjoint(leaky)
