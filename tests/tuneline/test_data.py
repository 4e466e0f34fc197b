import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_reviews
from tuneline.data.loading import BUILTIN_SAMPLE, content_hash, file_hash, load_dataset, regression_targets
from tuneline.data.splitting import SplitResult, check_disjoint, label_names, split_dataset, target_bins
from tuneline.data.cleaning import clean_dataset
from tuneline.data.text import clean_text
from tuneline.errors import ConfigError, DataLoadError, DataValidationError, SplitError
from tuneline.data.samples import SAMPLE_PATH, generate_reviews
from tuneline.data.text import duplicate_keys


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
    assert content_hash(result.frame) == content_hash(reference.frame)  # the rows' hash: a split's data.hash.<split>
    # The file's hash is of its bytes: the one `tuneline land` announces and a run records as data.hash.
    assert result.content_hash == file_hash(tmp_path / name)
    if fmt != "datasets":
        assert result.content_hash == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()  # = sha256sum


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


# Regression and generation tasks -------------------------------------------------------------------------------


def _scores(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Texts with a numeric score; the top tenth extreme, so stratification has a tail to spread."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(3, 0.5, n - n // 10), rng.normal(40, 1, n // 10)]).round(3)
    return pd.DataFrame({"row": range(n), "text": [f"review number {i}" for i in range(n)],
                         "label": [repr(float(v)) for v in values]})


def test_regression_labels_are_canonical_numbers_whatever_the_format(tmp_path):
    source = pd.DataFrame({"text": ["a b", "c d", "e f", "g h"], "score": [3, 2.5, -1, 1e20]})
    source.to_parquet(tmp_path / "d.parquet")  # floats: 3.0
    (tmp_path / "d.csv").write_text("text,score\na b,3\nc d,2.50\ne f,-1\ng h,1e20\n")  # as typed: "3"
    parquet = load_dataset(str(tmp_path / "d.parquet"), "text", "score", task="regression")
    csv = load_dataset(str(tmp_path / "d.csv"), "text", "score", task="regression")
    assert list(csv.frame["label"]) == ["3.0", "2.5", "-1.0", "1e+20"]
    assert content_hash(csv.frame) == content_hash(parquet.frame)
    # Classification keeps labels as written: "3" is a class name.
    assert load_dataset(str(tmp_path / "d.csv"), "text", "score").frame["label"][0] == "3"


def test_regression_label_that_is_not_a_number_reaches_validation_and_is_named(tmp_path):
    (tmp_path / "d.csv").write_text("text,score\na b,3\nc d,four\ne f,nan\ng h,1e999\n")
    frame = load_dataset(str(tmp_path / "d.csv"), "text", "score", task="regression").frame
    assert list(frame["label"]) == ["3.0", "four", "nan", "1e999"]  # kept as written for the report
    with pytest.raises(DataValidationError, match=r"3 of 4 regression labels.*row=1, label='four'.*row=3, label='1e999'") as caught:
        regression_targets(frame)
    assert caught.value.failures[0]["unexpected_count"] == 3
    assert regression_targets(frame.iloc[[0]]).tolist() == [3.0]


def test_regression_cleaning_averages_duplicate_texts():
    frame = pd.DataFrame({"row": range(5), "text": ["good phone", "<p>good   phone</p>", "bad phone", "bad phone", "ok"],
                          "label": ["4.0", "2.0", "1.0", "1.0", "3.0"]})
    result = clean_dataset(frame, task="regression")
    assert list(result.frame["text"]) == ["good phone", "bad phone", "ok"]
    assert list(result.frame["label"]) == ["3.0", "1.0", "3.0"]  # mean of 4 and 2; 1 and 1 unchanged
    reasons = dict(zip(result.dropped["row"], result.dropped["reason"]))
    assert reasons == {1: "duplicate of row 0; labels averaged into it", 3: "duplicate of row 2"}
    frame.loc[4, "label"] = "n/a"
    with pytest.raises(DataValidationError, match="row=4, label='n/a'"):
        clean_dataset(frame, task="regression")


def test_classification_cleaning_names_a_conflicting_label():
    frame = pd.DataFrame({"row": range(3), "text": ["good", "good", "bad"], "label": ["positive", "negative", "negative"]})
    result = clean_dataset(frame)
    assert list(result.frame["label"]) == ["positive", "negative"]
    assert result.dropped["reason"].tolist() == ["duplicate of row 0 with label 'negative'; row 0's label 'positive' kept"]


@pytest.mark.parametrize("task", ["seq2seq", "causal_lm"])
def test_generation_cleaning_keeps_targets_verbatim_and_several_references(task):
    frame = pd.DataFrame({
        "row": range(6),
        "text": ["<b>Fix</b> the  bug", "fix the bug", "fix the bug", "summarise it", "explain", "hi there"],
        "label": ["Step 1:\n  Read <the> log", "patch it", "Step 1:\n  Read <the> log", "It, in SHORT.", "   ", None],
    })
    result = clean_dataset(frame, task=task)
    # A causal-LM prompt keeps its format (markup, spacing): it is what the model reads at inference.
    first = "Fix the bug" if task == "seq2seq" else "<b>Fix</b> the  bug"
    assert list(result.frame["text"]) == [first, "fix the bug", "summarise it"]
    # Case, newlines, indentation and angle brackets of a target are what the model must learn to write.
    assert list(result.frame["label"]) == ["Step 1:\n  Read <the> log", "patch it", "It, in SHORT."]
    reasons = dict(zip(result.dropped["row"], result.dropped["reason"]))
    # Row 2 is row 0 again (the same input up to markup and case, the same target): one input, one target, once.
    assert reasons == {2: "duplicate of row 0", 4: "empty target", 5: "empty target"}
    exact = clean_dataset(pd.concat([frame, frame.iloc[[3]].assign(row=6)], ignore_index=True), task=task)
    assert dict(zip(exact.dropped["row"], exact.dropped["reason"]))[6] == "duplicate of row 3"


def test_regression_split_spreads_the_tails_and_has_no_labels():
    frame = _scores(200)
    extreme = lambda part: int((part["label"].astype(float) > 20).sum())  # noqa: E731
    result = split_dataset(frame, (), 0.8, 0.1, 0.1, seed=0, task="regression")
    assert result.labels == ()
    assert result.sizes() == {"train": 160, "validation": 20, "test": 20}
    assert [extreme(p) for p in result.parts().values()] == [16, 2, 2]  # the top decile is one quantile bin
    again = split_dataset(frame, (), 0.8, 0.1, 0.1, seed=0, task="regression")
    assert list(again.test["row"]) == list(result.test["row"])
    # A plain shuffle gives the test split anywhere from none to several of the tail; stratified, always its share.
    unstratified = {extreme(split_dataset(frame, (), 0.8, 0.1, 0.1, seed=s, stratify=False, task="regression").test)
                    for s in range(20)}
    assert len(unstratified) > 2
    assert all(extreme(split_dataset(frame, (), 0.8, 0.1, 0.1, seed=s, task="regression").test) == 2 for s in range(20))


def test_target_bins_fall_back_when_the_target_is_concentrated():
    assert target_bins(np.ones(100), 10) is None
    bins = target_bins(np.array([1.0] * 80 + list(range(2, 22))), 10)
    assert bins is not None and np.bincount(bins).min() >= 10
    constant = _scores(40).assign(label="2.0")
    assert split_dataset(constant, (), 0.8, 0.1, 0.1, seed=0, task="regression").sizes() == {"train": 32, "validation": 4, "test": 4}


def test_generation_split_keeps_every_reference_of_a_text_in_one_split():
    frame = pd.DataFrame({"row": range(90), "text": [f"message {i // 3}" for i in range(90)],
                          "label": [f"summary {i}" for i in range(90)]})
    result = split_dataset(frame, (), 0.8, 0.1, 0.1, seed=1, task="seq2seq")
    assert result.labels == () and result.sizes() == {"train": 72, "validation": 9, "test": 9}
    for part in result.parts().values():
        assert (part["text"].value_counts() == 3).all()
    assert sorted(pd.concat(result.parts().values())["row"]) == list(range(90))


def test_labels_and_unknown_tasks_are_refused():
    with pytest.raises(ConfigError, match="classification only"):
        split_dataset(_scores(), ("low", "high"), 0.8, 0.1, 0.1, seed=0, task="regression")
    with pytest.raises(ConfigError, match="unknown task 'ranking'"):
        clean_dataset(_scores(), task="ranking")


def test_no_copy_crosses_splits_even_when_near_duplicates_are_ignored():
    """Copies that differ only in case and punctuation are dropped by cleaning, so a split that does not look for
    near-duplicates cannot put one in training and one in test."""
    frame = generate_reviews(200, seed=4, label_noise=0.0)[["text", "label"]]
    copies = frame.iloc[[3, 8, 15, 40]].assign(text=lambda f: f["text"].str.lower().str.rstrip(".!") + "!!")
    both = pd.concat([frame, copies], ignore_index=True).assign(row=lambda f: range(len(f)))
    cleaned = clean_dataset(both)
    assert sorted(cleaned.dropped["row"]) == [200, 201, 202, 203]
    assert list(cleaned.dropped["reason"]) == [f"duplicate of row {r}" for r in (3, 8, 15, 40)]
    for seed in range(3):
        splits = split_dataset(cleaned.frame, ("negative", "positive"), 0.8, 0.1, 0.1, seed=seed,
                               near_duplicates="ignore")
        keys = [set(duplicate_keys(list(part["text"]))) for part in splits.parts().values()]
        assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_jsonl_with_a_byte_order_mark_reads(tmp_path):
    """Notepad and PowerShell write UTF-8 with a byte-order mark; it is not part of the first record."""
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in make_reviews(3).to_dict("records")).encode())
    frame = load_dataset(str(path), "text", "label").frame
    assert list(frame["text"]) == list(make_reviews(3)["text"])
    path.write_bytes(path.read_bytes().replace(b'"label"', b'"label', 1))
    with pytest.raises(DataLoadError, match="line 1 is not valid JSON"):
        load_dataset(str(path), "text", "label")


def test_a_text_column_beside_the_mapped_one_keeps_its_values(tmp_path):
    path = tmp_path / "d.csv"
    make_reviews(3).assign(review=lambda f: f["text"].str.upper()).to_csv(path, index=False)
    frame = load_dataset(str(path), "review", "label").frame
    assert list(frame.columns) == ["row", "source_text", "label", "text"]
    assert frame["text"][0] == make_reviews(3)["text"][0].upper() and frame["source_text"][0] == make_reviews(3)["text"][0]


def test_a_symbolic_link_loop_or_a_dangling_link_is_named(tmp_path):
    (tmp_path / "a.csv").symlink_to("b.csv")
    (tmp_path / "b.csv").symlink_to("a.csv")
    with pytest.raises(DataLoadError, match="a.csv is a symbolic link loop"):
        load_dataset(str(tmp_path / "a.csv"), "text", "label")
    (tmp_path / "c.csv").symlink_to(tmp_path / "gone.csv")
    with pytest.raises(DataLoadError, match=f"c.csv is a symbolic link to {tmp_path / 'gone.csv'}, which does not"):
        load_dataset(str(tmp_path / "c.csv"), "text", "label")
