"""A corpus of bad inputs: each writes a broken data file (and the settings it runs with) from a good base frame.

Every case must stop the retrain flow at ingest, validation or the drift check with the typed error
it names, a message holding its fragments, a report saved to the run, and nothing registered
(tests/reliability/test_bad_inputs.py runs each through the real flow). Importable without pytest
or its fixtures (benchmarks/reliability.py uses it):

    for case in CASES:
        written = write_case(case, folder / case.name)   # -> Written(path, overrides)
        config = load_config(overrides=[f"data.path={written.path}", *written.overrides, ...])

The base frame is the shipped review generator's (`tuneline.sample_data.generate_reviews`): real
sentences that pass every check, unlike `tests.conftest.make_reviews`, whose import would also
repoint TUNELINE_HOME and PREFECT_HOME at a temporary folder in the importing process.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.errors import DataDriftError, DataLoadError, DataValidationError, TunelineError
from tuneline.sample_data import generate_reviews

ROWS = 120  # enough for the suite's 30-row minimum and a stratified 80/10/10 split
LABELS = ("negative", "positive")
CHAMPION_MODEL = "reliability-champion"  # the registered model the drift case is compared with


def base_frame(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    """Good labelled reviews (`text`, `label`), balanced, distinct even up to case and punctuation."""
    return generate_reviews(rows, seed=seed, label_noise=0.0)[["text", "label"]].reset_index(drop=True)


@dataclass(frozen=True)
class Written:
    """What a case wrote: the data file (or folder) and the config overrides it runs with."""

    path: Path
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class BadInput:
    """One bad input: how to write it, where it must stop, and what the message must say."""

    name: str
    description: str
    write: Callable[[Path], Written]  # writes into an existing empty folder
    error: type[TunelineError]
    fragments: tuple[str, ...]  # each must appear in the error message (the file path is checked for every case)
    stage: str  # "ingest", "validate" or "drift": which report the run must carry
    needs_champion: bool = False  # compared with CHAMPION_MODEL's champion (trained on `base_frame`)


def write_case(case: BadInput, folder: Path) -> Written:
    """Write `case`'s files into `folder` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    return case.write(folder)


# --- writers ----------------------------------------------------------------------------------------------------------


def _csv(frame: pd.DataFrame, folder: Path, *overrides: str, name: str = "reviews.csv") -> Written:
    path = folder / name
    frame.to_csv(path, index=False)
    return Written(path, overrides)


def _bytes(data: bytes, folder: Path, name: str = "reviews.csv", *overrides: str) -> Written:
    path = folder / name
    path.write_bytes(data)
    return Written(path, overrides)


def _good_csv_bytes(frame: pd.DataFrame | None = None) -> bytes:
    return (base_frame() if frame is None else frame).to_csv(index=False, lineterminator="\n").encode()


def _with_accents(frame: pd.DataFrame, rows: range) -> pd.DataFrame:
    """Rows made to hold non-ASCII letters, as a French or German review would."""
    frame = frame.copy()
    chosen = list(rows)
    frame.loc[chosen, "text"] = [f"Très déçu, commande n°{i}: {t}" for i, t in zip(chosen, frame.loc[chosen, "text"])]
    return frame


def _set(frame: pd.DataFrame, column: str, rows: list[int], values) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[rows, column] = values
    return frame


def empty_file(folder: Path) -> Written:
    return _bytes(b"", folder)


def header_only(folder: Path) -> Written:
    return _bytes(b"text,label\n", folder)


def missing_text_column(folder: Path) -> Written:
    return _csv(base_frame().rename(columns={"text": "review"}), folder)


def missing_label_column(folder: Path) -> Written:
    return _csv(base_frame().drop(columns=["label"]), folder)


def wrong_delimiter(folder: Path) -> Written:
    path = folder / "reviews.csv"
    base_frame().to_csv(path, index=False, sep=";")
    return Written(path)


def latin1_file(folder: Path) -> Written:
    text = _with_accents(base_frame(), range(0, ROWS, 3)).to_csv(index=False, lineterminator="\n")
    return _bytes(text.encode("latin-1"), folder)


def mixed_encodings(folder: Path) -> Written:
    """Most rows UTF-8 (accents included), a block pasted in from a Windows-1252 export."""
    lines = _with_accents(base_frame(), range(0, ROWS, 4)).to_csv(index=False, lineterminator="\n").splitlines(True)
    pasted = range(50, 60)
    data = b"".join(line.encode("cp1252" if number in pasted else "utf-8") for number, line in enumerate(lines))
    return _bytes(data, folder)


def utf16_file(folder: Path) -> Written:
    return _bytes(_good_csv_bytes().decode().encode("utf-16"), folder)


def spreadsheet_renamed(folder: Path) -> Written:
    """An Excel workbook (a zip archive) saved with a .csv name."""
    import zipfile

    path = folder / "reviews.csv"
    with zipfile.ZipFile(path, "w") as workbook:
        workbook.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return Written(path)


def nul_bytes(folder: Path) -> Written:
    """Binary junk (NUL bytes) in the middle of an otherwise good CSV: a disk or transfer fault."""
    data = _good_csv_bytes()
    middle = data.index(b"\n", len(data) // 2) + 1
    return _bytes(data[:middle] + b"\x00" * 64 + data[middle:], folder)


def truncated_in_quoted_field(folder: Path) -> Written:
    frame = base_frame()
    frame.loc[ROWS - 1, "text"] = "Great, fast, cheap: " + frame.loc[ROWS - 1, "text"]  # a comma: the field is quoted
    data = _good_csv_bytes(frame)
    return _bytes(data[: data.rindex(b'"') - 10], folder)  # cut inside the last row's quoted text


def truncated_row_missing_label(folder: Path) -> Written:
    """The copy stopped inside the last row's text, before its label (an unquoted text: no quote gives it away)."""
    frame = _set(base_frame(), "text", [ROWS - 1], "Arrived on time and works exactly as described")
    data = _good_csv_bytes(frame)
    last = data.rstrip(b"\n").rindex(b"\n") + 1
    return _bytes(data[: last + 20], folder)


def ragged_rows(folder: Path) -> Written:
    lines = _good_csv_bytes().decode().splitlines(True)
    lines[40] = lines[40].rstrip("\n") + ",extra,fields\n"  # a row with more fields than the header
    return _bytes("".join(lines).encode(), folder)


def duplicate_column_names(folder: Path) -> Written:
    frame = base_frame()
    frame["summary"] = frame["text"].str.slice(0, 20)
    data = frame.to_csv(index=False, lineterminator="\n").replace("text,label,summary", "text,label,text", 1)
    return _bytes(data.encode(), folder)


def html_error_page(folder: Path) -> Written:
    page = ("<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>Your session expired. Please sign "
            "in again.</body></html>\n")
    return _bytes(page.encode(), folder)


def _jsonl_lines(frame: pd.DataFrame) -> list[str]:
    return [json.dumps(record) + "\n" for record in frame.to_dict("records")]


def jsonl_broken_line(folder: Path) -> Written:
    lines = _jsonl_lines(base_frame())
    lines[40] = lines[40].replace('", "label"', ' "label"', 1)  # a lost quote-comma: not JSON any more
    return _bytes("".join(lines).encode(), folder, "reviews.jsonl")


def json_array_not_lines(folder: Path) -> Written:
    return _bytes(json.dumps(base_frame().to_dict("records")).encode(), folder, "reviews.jsonl")


def parquet_integer_text(folder: Path) -> Written:
    path = folder / "reviews.parquet"
    frame = base_frame()
    frame.assign(text=np.arange(len(frame)) * 7 + 1000).to_parquet(path)  # an id column mapped as the text
    return Written(path)


def parquet_fractional_labels(folder: Path) -> Written:
    path = folder / "reviews.parquet"
    frame = base_frame()
    frame.assign(label=np.round(np.linspace(0.05, 0.95, len(frame)), 2)).to_parquet(path)  # scores, not classes
    return Written(path)


def null_texts(folder: Path) -> Written:
    return _csv(_set(base_frame(), "text", [4, 17, 90], None), folder)


def whitespace_only_texts(folder: Path) -> Written:
    return _csv(_set(base_frame(), "text", [6, 33], ["   ", "\t \t"]), folder)


def labels_outside_allowed_set(folder: Path) -> Written:
    return _csv(_set(base_frame(), "label", [10, 11, 12, 50], "neutral"), folder, "data.labels=[negative, positive]")


def rare_label_typo(folder: Path) -> Written:
    return _csv(_set(base_frame(), "label", [21], "postive"), folder)


def single_class(folder: Path) -> Written:
    return _csv(base_frame().assign(label="positive"), folder)


def label_column_all_empty(folder: Path) -> Written:
    return _csv(base_frame().assign(label=None), folder)


def heavy_duplicates(folder: Path) -> Written:
    """A quarter of the rows appended again in other case and spacing (a re-run export): GE's exact count misses it."""
    frame = base_frame()
    copies = frame.head(30).assign(text=lambda f: f["text"].str.upper().str.replace(" ", "  "))
    return _csv(pd.concat([frame, copies], ignore_index=True), folder)


def all_identical_text(folder: Path) -> Written:
    return _csv(base_frame().assign(text="Great product, would buy again."), folder)


def train_test_leakage(folder: Path) -> Written:
    """Copies of rows differing only in case and punctuation, with a split that does not look for them: a copy
    in test of a training row. (Under split.near_duplicates=group, the default, the split keeps them together.)"""
    frame = base_frame()
    copies = frame.iloc[[3, 8, 15, 40]].assign(text=lambda f: f["text"].str.lower().str.rstrip(".!") + "!!")
    return _csv(pd.concat([frame, copies], ignore_index=True), folder, "split.near_duplicates=ignore")


def text_over_length_bound(folder: Path) -> Written:
    return _csv(_set(base_frame(), "text", [12], "This manual page goes on. " * 1000), folder)


def too_many_truncated(folder: Path) -> Written:
    """A fifth of the texts run past train.max_length tokens (they would be cut in training)."""
    frame = base_frame()
    long_rows = list(range(0, ROWS, 5))
    frame.loc[long_rows, "text"] = [f"{t} " * 8 for t in frame.loc[long_rows, "text"]]
    return _csv(frame, folder)


def too_few_rows(folder: Path) -> Written:
    return _csv(base_frame().head(20), folder)


def control_characters(folder: Path) -> Written:
    frame = base_frame()
    rows = list(range(0, ROWS, 10))
    frame.loc[rows, "text"] = [f"{t}\x1b[0m\x07\x08" for t in frame.loc[rows, "text"]]  # terminal escape junk
    return _csv(frame, folder)


def mojibake(folder: Path) -> Written:
    """UTF-8 rows once read as Windows-1252 and saved again: valid UTF-8 bytes, garbled text."""
    frame = _with_accents(base_frame(), range(0, ROWS, 6))
    rows = list(range(0, ROWS, 6))
    frame.loc[rows, "text"] = [t.encode("utf-8").decode("cp1252", errors="replace") for t in frame.loc[rows, "text"]]
    return _csv(frame, folder)


def columns_swapped(folder: Path) -> Written:
    return _csv(base_frame(), folder, "data.text_column=label", "data.label_column=text")


def label_is_an_id_column(folder: Path) -> Written:
    frame = base_frame()
    return _csv(frame.assign(label=[f"ticket-{i:04d}" for i in range(len(frame))]), folder)


def regression_targets_not_finite(folder: Path) -> Written:
    frame = base_frame()
    frame["score"] = [f"{v:.1f}" for v in np.linspace(1, 5, len(frame))]
    frame.loc[[7, 30], "score"] = ["nan", "inf"]
    return _csv(frame[["text", "score"]], folder, "task=regression", "data.label_column=score")


def time_column_not_times(folder: Path) -> Written:
    frame = base_frame()
    frame["created"] = pd.date_range("2025-01-01", periods=len(frame), freq="h").strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.loc[[9, 10], "created"] = ["yesterday", "n/a"]
    return _csv(frame, folder, "split.strategy=time", "split.time_column=created")


def group_column_with_gaps(folder: Path) -> Written:
    frame = base_frame()
    frame["customer"] = [f"c{i % 25:02d}" for i in range(len(frame))]
    frame.loc[[14, 77], "customer"] = None
    return _csv(frame, folder, "split.strategy=group", "split.group_column=customer")


def pii_with_policy_fail(folder: Path) -> Written:
    frame = _set(base_frame(), "text", [5], "Refund please, write to pat.doe@example.net")
    return _csv(frame, folder, "data.checks.pii=fail")


def label_distribution_shift(folder: Path) -> Written:
    """A fresh batch of the champion's kind of data, but 85% negative where the champion saw half and half."""
    frame = base_frame(seed=11)
    flipped = frame.index[frame["label"] == "positive"][: int(0.35 * len(frame))]
    frame.loc[flipped, "label"] = "negative"
    return _csv(frame, folder, f"registry.model_name={CHAMPION_MODEL}")


# --- the corpus -------------------------------------------------------------------------------------------------------

_NULL = "expect_column_values_to_not_be_null on column"


def _ingest(name: str, description: str, write, *fragments: str) -> BadInput:
    return BadInput(name, description, write, DataLoadError, fragments, "ingest")


def _validate(name: str, description: str, write, *fragments: str) -> BadInput:
    return BadInput(name, description, write, DataValidationError, fragments, "validate")


CASES: list[BadInput] = [
    _ingest("empty_file", "a 0-byte file", empty_file, "is empty (0 bytes)"),
    _ingest("header_only", "a header and no rows", header_only, "no data rows"),
    _ingest("missing_text_column", "the text column is named otherwise", missing_text_column,
            "no column 'text'", "'review'"),
    _ingest("missing_label_column", "no label column at all", missing_label_column, "no column 'label'"),
    _ingest("wrong_delimiter", "semicolon-separated, read as CSV", wrong_delimiter, "semicolon-separated"),
    _ingest("latin1_file", "the whole file in Latin-1", latin1_file, "is not UTF-8: line 2 ", "byte offset",
            "Latin-1"),
    _ingest("mixed_encodings", "UTF-8 with a block of Windows-1252 lines", mixed_encodings, "mixes encodings",
            "line 54 "),
    _ingest("utf16_file", "Excel's 'Unicode text' (UTF-16)", utf16_file, "UTF-16"),
    _ingest("spreadsheet_renamed", "an .xlsx workbook with a .csv name", spreadsheet_renamed, "zip archive"),
    _ingest("nul_bytes", "binary junk in the middle of the file", nul_bytes, "NUL bytes", "line 61"),
    _ingest("truncated_in_quoted_field", "cut off inside the last row's quoted text", truncated_in_quoted_field,
            "cut off mid-row", f"line {ROWS + 1}"),
    _ingest("ragged_rows", "a row with more fields than the header", ragged_rows,
            "line 41 has 4 fields where the header has 2"),
    _ingest("duplicate_column_names", "two columns named text", duplicate_column_names,
            "names column 'text' 2 times"),
    _ingest("html_error_page", "a login page saved instead of the data", html_error_page, "HTML"),
    _ingest("jsonl_broken_line", "JSON Lines with one broken line", jsonl_broken_line, "line 41 is not valid JSON"),
    _ingest("json_array_not_lines", "one JSON array in a .jsonl file", json_array_not_lines, "one JSON array"),
    _ingest("parquet_integer_text", "Parquet whose text column holds integers", parquet_integer_text,
            "holds int64 values, not text", "row 0: 1000"),
    _ingest("parquet_fractional_labels", "Parquet whose labels are scores", parquet_fractional_labels,
            "fractional numbers", "row 0: 0.05", "task=regression"),
    _validate("null_texts", "three rows without text", null_texts, f"{_NULL} 'text'", "row=4"),
    _validate("whitespace_only_texts", "texts of only whitespace", whitespace_only_texts, "not only whitespace",
              "row=6"),
    _validate("labels_outside_allowed_set", "a label data.labels does not list", labels_outside_allowed_set,
              "expect_column_values_to_be_in_set on column 'label'", "label='neutral', row=10"),
    _validate("rare_label_typo", "one row labelled 'postive'", rare_label_typo,
              "expect_every_label_to_have_enough_rows", "label='postive', rows=1, row=21"),
    _validate("single_class", "every row one class", single_class, "expect_label_classes_to_be_at_least",
              "1 distinct labels"),
    _validate("label_column_all_empty", "the label column is there but empty", label_column_all_empty,
              f"{_NULL} 'label'", "row=0"),
    _validate("heavy_duplicates", "a quarter of the rows again, in capitals", heavy_duplicates,
              "expect_repeated_rows_share_to_be_at_most", "repeats_row=0"),
    _validate("all_identical_text", "one text on every row", all_identical_text,
              "expect_column_proportion_of_unique_values_to_be_between", "repeats_row=0"),
    _validate("train_test_leakage", "case/punctuation copies with split.near_duplicates=ignore", train_test_leakage,
              "expect_no_copies_across_splits", f"row={ROWS}, copies_row=3"),
    _validate("text_over_length_bound", "a whole manual in one row", text_over_length_bound,
              "expect_column_value_lengths_to_be_between on column 'text'", "row=12"),
    _validate("too_many_truncated", "a fifth of the texts past train.max_length tokens", too_many_truncated,
              "token_count", "train.max_length 64", "row=5"),
    _validate("truncated_row_missing_label", "cut off inside the last row, before its label",
              truncated_row_missing_label, f"{_NULL} 'label'", f"row={ROWS - 1}"),
    _validate("too_few_rows", "20 rows", too_few_rows, "expect_table_row_count_to_be_between", "observed 20"),
    _validate("control_characters", "terminal escape junk in a tenth of the texts", control_characters,
              "control characters", "row=0"),
    _validate("mojibake", "UTF-8 read as Windows-1252 and saved again", mojibake, "mojibake", "row=0"),
    _validate("columns_swapped", "text and label columns mapped the wrong way round", columns_swapped,
              "expect_column_proportion_of_unique_values_to_be_between", "expect_every_label_to_have_enough_rows"),
    _validate("label_is_an_id_column", "a ticket id mapped as the label", label_is_an_id_column,
              "expect_every_label_to_have_enough_rows", "label='ticket-0000', rows=1, row=0"),
    _validate("regression_targets_not_finite", "nan and inf scores", regression_targets_not_finite,
              "expect_column_values_to_match_regex on column 'label'", "label='nan', row=7"),
    _validate("time_column_not_times", "a time split over values that are not times", time_column_not_times,
              "expect_column_values_to_be_times", "row=9, created='yesterday'"),
    _validate("group_column_with_gaps", "a group split with rows of no group", group_column_with_gaps,
              f"{_NULL} 'customer'", "row=14"),
    _validate("pii_with_policy_fail", "an email address under data.checks.pii=fail", pii_with_policy_fail,
              "PII in text, policy fail", "row=5"),
    BadInput("label_distribution_shift", "85% negative where the champion saw half and half",
             label_distribution_shift, DataDriftError, ("total variation distance", "label='negative'",
                                                        f"champion {CHAMPION_MODEL} version 1"),
             "drift", needs_champion=True),
]

assert len({case.name for case in CASES}) == len(CASES), "case names must be unique"


# --- running a case ---------------------------------------------------------------------------------------------------


def run_overrides(written: Written, base_model: str | Path, experiment: str) -> list[str]:
    """The retrain config of a case: its file and settings on a small fast setup (failures come before training;
    a case that wrongly passes trains two steps and is caught by its test, not left running)."""
    return [f"data.path={written.path}", f"train.base_model={base_model}", "train.max_length=64", "train.max_steps=2",
            "train.batch_size=16", "export.parity_rows=8", "export.max_accuracy_drop=1.0",
            f"registry.experiment={experiment}", *written.overrides]


# Rows the champion's cleaning must drop and keep: an exact repeat, a repeat hidden in markup, markup alone.
DROPPED_BY_CLEANING = {"duplicate of row 0", "duplicate of row 1", "empty after cleaning"}


def write_champion_data(folder: Path) -> Written:
    """The good data CHAMPION_MODEL's first version trains on: `base_frame()` plus three rows cleaning drops."""
    frame = base_frame()
    extra = pd.DataFrame({"text": [frame.loc[0, "text"], f"<p>{frame.loc[1, 'text']}</p>", "<br/><br/>"],
                          "label": [frame.loc[0, "label"], frame.loc[1, "label"], "positive"]})
    return _csv(pd.concat([frame, extra], ignore_index=True), folder, f"registry.model_name={CHAMPION_MODEL}",
                name="champion.csv")


@contextlib.contextmanager
def use_store(folder: Path) -> Iterator[Path]:
    """Point tuneline (state folder, MLflow store, Prefect result storage) at `folder` while the block runs.

    Many flow runs share one store: a new SQLite store costs about a second of table creation.
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    saved = {name: os.environ.get(name) for name in ("TUNELINE_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["TUNELINE_HOME"] = str(folder)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: folder / "results"}):
            yield folder
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
