"""A corpus of bad inputs: each writes a broken data file (and the settings it runs with) from a good base frame.

Every case must stop the retrain flow at ingest, validation or the drift check with the typed error
it names, a message holding its fragments and naming the setting that governs the check (where one
does: the key and its value, the one override for a user who decides the data is fine), a report
saved to the run, and nothing registered (tests/reliability/test_bad_inputs.py runs each through
the real flow). The cases are written as a user gets data wrong, not from the checks' code. Importable without pytest
or its fixtures (benchmarks/reliability.py uses it):

    for case in CASES:
        written = write_case(case, folder / case.name)   # -> Written(path, overrides)
        config = load_config(overrides=[f"data.path={written.path}", *written.overrides, ...])

The base frame is the shipped review generator's (`tuneline.data.samples.generate_reviews`): real
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
from tuneline.data.samples import generate_reviews

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
    setting: str | None = None  # the governing setting the message must name (`key=value`, or the key alone)


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


# --- what users get wrong with labels, columns and encodings (issue 21) ------------------------------------------------


def _jsonl(records: list[dict], folder: Path, *overrides: str) -> Written:
    return _bytes("".join(json.dumps(r) + "\n" for r in records).encode(), folder, "reviews.jsonl", *overrides)


def _every(step: int, offset: int = 0) -> list[int]:
    return list(range(offset, ROWS, step))


def windows1252_file(folder: Path) -> Written:
    """Saved by Excel on Windows as 'CSV' (not 'CSV UTF-8'): curly quotes, dashes and the euro sign in cp1252."""
    frame = base_frame()
    rows = _every(5)
    frame.loc[rows, "text"] = [f"It\u2019s \u20ac{20 + i} \u2013 {t}" for i, t in zip(rows, frame.loc[rows, "text"])]
    return _bytes(frame.to_csv(index=False, lineterminator="\r\n").encode("cp1252"), folder)


def utf16_without_bom(folder: Path) -> Written:
    return _bytes(_good_csv_bytes().decode().encode("utf-16-le"), folder)


def excel_csv_utf8_semicolons(folder: Path) -> Written:
    """Excel's 'CSV UTF-8' in a European locale: a byte-order mark and semicolons."""
    return _bytes(b"\xef\xbb\xbf" + base_frame().to_csv(index=False, sep=";", lineterminator="\r\n").encode(), folder)


def tab_separated_named_csv(folder: Path) -> Written:
    return _bytes(base_frame().to_csv(index=False, sep="\t", lineterminator="\n").encode(), folder)


def no_header_line(folder: Path) -> Written:
    return _bytes(base_frame().to_csv(index=False, header=False, lineterminator="\n").encode(), folder)


def header_capitalised(folder: Path) -> Written:
    return _csv(base_frame().rename(columns={"text": "Text", "label": "Label"}), folder)


def gzip_named_csv(folder: Path) -> Written:
    import gzip

    return _bytes(gzip.compress(_good_csv_bytes()), folder)


def blank_lines_only(folder: Path) -> Written:
    return _bytes(b"\n\r\n\n", folder)


def excel_sep_line(folder: Path) -> Written:
    """Excel's `sep=,` hint line above the header: other readers take it for the header."""
    return _bytes(b"sep=,\n" + _good_csv_bytes(), folder)


def parquet_tokenised_text(folder: Path) -> Written:
    """The text saved already split into words (a list per row)."""
    path = folder / "reviews.parquet"
    frame = base_frame()
    frame.assign(text=frame["text"].str.split()).to_parquet(path)
    return Written(path)


def symlink_loop(folder: Path) -> Written:
    """`data.csv -> latest.csv -> data.csv`: a 'latest' link pointed at itself by a deploy script."""
    (folder / "latest.csv").symlink_to("reviews.csv")
    (folder / "reviews.csv").symlink_to("latest.csv")
    return Written(folder / "reviews.csv")


def jsonl_field_renamed_midway(folder: Path) -> Written:
    """An exporter that renamed its `text` field to `review` half way through the file."""
    records = base_frame().to_dict("records")
    records[60:] = [{"review": r["text"], "label": r["label"]} for r in records[60:]]
    return _jsonl(records, folder)


def label_spellings_mixed(folder: Path) -> Written:
    """Three tools wrote the same class three ways."""
    frame = base_frame()
    positive = frame.index[frame["label"] == "positive"]
    frame.loc[positive[::3], "label"] = "POSITIVE"
    frame.loc[positive[1::3], "label"] = " Positive "
    return _csv(frame, folder)


def label_trailing_spaces(folder: Path) -> Written:
    """Some labels typed in a spreadsheet with a trailing space."""
    return _csv(_set(base_frame(), "label", _every(4), [f"{v} " for v in base_frame().loc[_every(4), "label"]]),
                folder)


def label_non_breaking_space(folder: Path) -> Written:
    """Labels pasted from a web page: a non-breaking space after the word."""
    return _csv(_set(base_frame(), "label", _every(6), [f"{v}\u00a0" for v in base_frame().loc[_every(6), "label"]]),
                folder)


def labels_numbers_and_words_jsonl(folder: Path) -> Written:
    """Labels 0, 1, "1" and "neg" from three producers of one JSON Lines file."""
    records = base_frame().to_dict("records")
    for i, record in enumerate(records):
        positive = record["label"] == "positive"
        record["label"] = ["neg" if not positive else "1", 0 if not positive else 1, 0 if not positive else "1"][i % 3]
    return _jsonl(records, folder)


def labels_numbers_and_words_csv(folder: Path) -> Written:
    """An old export with 0/1 appended to a new one with negative/positive."""
    old = base_frame(seed=21).assign(label=lambda f: f["label"].map({"negative": "0", "positive": "1"})).head(60)
    return _csv(pd.concat([base_frame().head(60), old], ignore_index=True), folder)


def labels_with_placeholder(folder: Path) -> Written:
    """0/1 labels, and 'unknown' where the annotator could not decide."""
    frame = base_frame().assign(label=lambda f: f["label"].map({"negative": "0", "positive": "1"}))
    return _csv(_set(frame, "label", [3, 30, 60, 90], "unknown"), folder)


def labels_ints_and_floats(folder: Path) -> Written:
    """pandas wrote the second batch's labels as floats (1.0) because that batch had a gap."""
    frame = base_frame().assign(label=lambda f: f["label"].map({"negative": "0", "positive": "1"}))
    return _csv(_set(frame, "label", list(range(60, ROWS)), [f"{v}.0" for v in frame.loc[60:, "label"]]), folder)


def labels_outside_listed_numbers(folder: Path) -> Written:
    frame = base_frame().assign(label=lambda f: f["label"].map({"negative": "0", "positive": "1"}))
    return _csv(_set(frame, "label", [8, 9, 70], "neg"), folder, "data.labels=[0, 1]")


def each_text_twice_opposite_labels(folder: Path) -> Written:
    """A file merged with a copy of itself whose labels had been flipped."""
    frame = base_frame()
    flipped = frame.assign(label=frame["label"].map({"negative": "positive", "positive": "negative"}))
    return _csv(pd.concat([frame, flipped], ignore_index=True), folder)


def some_texts_with_other_labels(folder: Path) -> Written:
    """Ten reviews labelled again by a second annotator who disagreed, appended."""
    frame = base_frame()
    again = frame.iloc[::12].assign(label=lambda f: f["label"].map({"negative": "positive", "positive": "negative"}))
    return _csv(pd.concat([frame, again], ignore_index=True), folder)


def _with_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The export a shop gives: order id, date, category, the review, the label."""
    return pd.DataFrame({"order_id": [str(48210 + 7 * i) for i in range(len(frame))],
                         "created": pd.date_range("2025-03-01", periods=len(frame), freq="7h").strftime("%Y-%m-%d %H:%M"),
                         "category": generate_reviews(ROWS, seed=7, label_noise=0.0)["domain"].to_numpy(),
                         "review": frame["text"], "label": frame["label"]})


def numbers_mapped_as_text(folder: Path) -> Written:
    return _csv(_with_columns(base_frame()), folder, "data.text_column=order_id")


def dates_mapped_as_text(folder: Path) -> Written:
    return _csv(_with_columns(base_frame()), folder, "data.text_column=created")


def category_mapped_as_text(folder: Path) -> Written:
    return _csv(_with_columns(base_frame()), folder, "data.text_column=category")


def text_mostly_placeholder(folder: Path) -> Written:
    """Most customers left the review empty; the export wrote N/A."""
    frame = base_frame()
    frame.loc[[i for i in range(ROWS) if i % 10 < 7], "text"] = "N/A"
    return _csv(frame, folder)


def file_appended_to_itself(folder: Path) -> Written:
    return _bytes(_good_csv_bytes() + _good_csv_bytes().split(b"\n", 1)[1], folder)


def _scores_frame() -> pd.DataFrame:
    frame = base_frame()
    return pd.DataFrame({"text": frame["text"], "rating": [f"{1 + (i * 7) % 41 / 10:.1f}" for i in range(len(frame))]})


def regression_words_for_scores(folder: Path) -> Written:
    frame = _set(_scores_frame(), "rating", [4, 44], ["good", "bad"])
    return _csv(frame, folder, "task=regression", "data.label_column=rating")


def regression_decimal_commas(folder: Path) -> Written:
    """Scores written with decimal commas (a German spreadsheet), quoted so the CSV still parses."""
    frame = _scores_frame().assign(rating=lambda f: f["rating"].str.replace(".", ",", regex=False))
    return _csv(frame, folder, "task=regression", "data.label_column=rating")


def regression_target_beyond_bounds(folder: Path) -> Written:
    """A price in cents pasted into the score column, as 1e20 after a spreadsheet's formatting."""
    return _csv(_set(_scores_frame(), "rating", [13], "1e20"), folder, "task=regression", "data.label_column=rating")


def regression_numbers_mapped_as_text(folder: Path) -> Written:
    frame = _scores_frame().assign(order_id=[str(48210 + 7 * i) for i in range(ROWS)])
    return _csv(frame, folder, "task=regression", "data.label_column=rating", "data.text_column=order_id")


def scores_trained_as_classes(folder: Path) -> Written:
    """A 1.0-5.0 score column with the default task (classification)."""
    return _csv(_scores_frame(), folder, "data.label_column=rating")


def exports_joined_with_cat(folder: Path) -> Written:
    """Two Excel 'CSV UTF-8' exports joined with `cat`: the second one's byte-order mark and header are a row."""
    first, second = base_frame().head(60), base_frame().tail(60)
    bom = b"\xef\xbb\xbf"
    return _bytes(bom + _good_csv_bytes(first) + bom + _good_csv_bytes(second), folder)


def unlabelled_rows_left_in(folder: Path) -> Written:
    """A labelling batch exported before it was finished."""
    return _csv(_set(base_frame(), "label", _every(3, 1), None), folder)


def batch_in_another_language(folder: Path) -> Written:
    """A German batch for an English champion: same labels, same kind of review, other words (and no two alike)."""
    good = ["großartig", "wunderbar", "ausgezeichnet", "prima", "hervorragend", "sehr gut verarbeitet"]
    bad = ["furchtbar", "kaputt", "schrecklich", "nutzlos", "enttäuschend", "billig gemacht"]
    things = ["der Wasserkocher", "die Jacke", "das Telefon", "der Roman", "das Hotelzimmer", "die App", "der Rucksack"]
    opening = ["Ehrlich gesagt", "Nach zwei Wochen", "Schon am ersten Tag", "Wie erwartet", "Zu meiner Überraschung",
               "Für den Preis", "Im Vergleich zum alten Modell", "Laut meiner Frau", "Beim Auspacken"]
    closing = ["Ich würde es wieder kaufen.", "Nie wieder!", "Klare Empfehlung.", "Geld zurück, bitte.",
               "Meine Kinder lieben es.", "Der Versand dauerte ewig.", "Die Farbe stimmt nicht.", "Gerne wieder."]
    rows = [{"text": f"{opening[i % 9]} war {things[i % 7]} {(good if i % 2 else bad)[i % 6]}. "
                     f"{closing[(i * 5) % 8]} (Bestellung {1000 + 37 * i})", "label": "positive" if i % 2 else "negative"}
            for i in range(ROWS)]
    return _csv(pd.DataFrame(rows), folder, f"registry.model_name={CHAMPION_MODEL}")


# --- the corpus -------------------------------------------------------------------------------------------------------

_NULL = "expect_column_values_to_not_be_null on column"
SUITE = "data.expectation_suite=text_classification (expectations/text_classification.json)"
REGRESSION_SUITE = "data.expectation_suite=text_regression (expectations/text_regression.json)"
DUPLICATES = "data.checks.max_duplicate_share=0.15"
SPELLINGS = "data.normalize_labels=false"
CONFLICTS = "data.checks.max_label_conflict_share=0.01"


def _ingest(name: str, description: str, write, *fragments: str, setting: str | None = None) -> BadInput:
    return BadInput(name, description, write, DataLoadError, fragments, "ingest", setting=setting)


def _validate(name: str, description: str, write, *fragments: str, setting: str = SUITE) -> BadInput:
    return BadInput(name, description, write, DataValidationError, fragments, "validate", setting=setting)


CASES: list[BadInput] = [
    _ingest("empty_file", "a 0-byte file", empty_file, "is empty (0 bytes)"),
    _ingest("header_only", "a header and no rows", header_only, "no data rows"),
    _ingest("missing_text_column", "the text column is named otherwise", missing_text_column,
            "no column 'text'", "'review'", setting="data.text_column"),
    _ingest("missing_label_column", "no label column at all", missing_label_column, "no column 'label'",
            setting="data.label_column"),
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
            "names column 'text' 2 times", setting="data.text_column"),
    _ingest("html_error_page", "a login page saved instead of the data", html_error_page, "HTML"),
    _ingest("jsonl_broken_line", "JSON Lines with one broken line", jsonl_broken_line, "line 41 is not valid JSON"),
    _ingest("json_array_not_lines", "one JSON array in a .jsonl file", json_array_not_lines, "one JSON array"),
    _ingest("parquet_integer_text", "Parquet whose text column holds integers", parquet_integer_text,
            "holds int64 values, not text", "row 0: 1000", setting="data.text_column"),
    _ingest("parquet_fractional_labels", "Parquet whose labels are scores", parquet_fractional_labels,
            "fractional numbers", "row 0: 0.05", setting="task=regression"),
    _ingest("windows1252_file", "Excel's plain 'CSV' on Windows: curly quotes and euro signs in cp1252",
            windows1252_file, "is not UTF-8: line 2 ", "byte 0x92", "Windows-1252"),
    _ingest("utf16_without_bom", "UTF-16 with no byte-order mark", utf16_without_bom,
            "UTF-16 without a byte-order mark", "line 1"),
    _ingest("excel_csv_utf8_semicolons", "Excel's 'CSV UTF-8' in a European locale: a BOM and semicolons",
            excel_csv_utf8_semicolons, "semicolon-separated"),
    _ingest("tab_separated_named_csv", "a tab-separated file with a .csv name", tab_separated_named_csv,
            "tab-separated", setting="data.format=tsv"),
    _ingest("no_header_line", "exported without the header line", no_header_line, "no column 'text', 'label'",
            "reads like a row of data", setting="data.text_column"),
    _ingest("header_capitalised", "columns Text and Label", header_capitalised, "Did you mean 'Text' for 'text'",
            setting="data.text_column"),
    _ingest("gzip_named_csv", "a gzipped download saved as .csv", gzip_named_csv, "gzip-compressed"),
    _ingest("blank_lines_only", "a file of blank lines", blank_lines_only, "only whitespace"),
    _ingest("excel_sep_line", "Excel's sep=, line above the header", excel_sep_line, "'sep='",
            setting="data.text_column"),
    _ingest("parquet_tokenised_text", "Parquet whose text is a list of words per row", parquet_tokenised_text,
            "holds lists or records", setting="data.text_column"),
    _ingest("symlink_loop", "a data link that leads back to itself", symlink_loop, "symbolic link loop",
            setting="data.path"),
    _validate("null_texts", "three rows without text", null_texts, f"{_NULL} 'text'", "row=4"),
    _validate("whitespace_only_texts", "texts of only whitespace", whitespace_only_texts, "not only whitespace",
              "row=6"),
    _validate("labels_outside_allowed_set", "a label data.labels does not list", labels_outside_allowed_set,
              "expect_column_values_to_be_in_set on column 'label'", "label='neutral', row=10",
              setting="data.labels=[negative, positive]"),
    _validate("rare_label_typo", "one row labelled 'postive'", rare_label_typo,
              "expect_every_label_to_have_enough_rows", "label='postive', rows=1, row=21",
              setting="data.checks.min_rows_per_label=1"),
    _validate("single_class", "every row one class", single_class, "expect_label_classes_to_be_at_least",
              "1 distinct labels", setting="data.checks.min_classes=2"),
    _validate("label_column_all_empty", "the label column is there but empty", label_column_all_empty,
              f"{_NULL} 'label'", "row=0"),
    _validate("heavy_duplicates", "a quarter of the rows again, in capitals", heavy_duplicates,
              "expect_repeated_rows_share_to_be_at_most", "repeats_row=0", "20.0% of rows",
              setting=DUPLICATES),
    _validate("all_identical_text", "one text on every row", all_identical_text,
              "expect_text_column_to_vary", "one text fills 100.0% of rows", "repeats_row=0",
              setting="data.checks.max_top_text_share=0.5"),
    _validate("text_over_length_bound", "a whole manual in one row", text_over_length_bound,
              "expect_column_value_lengths_to_be_between on column 'text'", "row=12"),
    _validate("too_many_truncated", "a fifth of the texts past train.max_length tokens", too_many_truncated,
              "token_count", "train.max_length 64", "row=5",
              setting="data.checks.max_truncated_share=0.05, train.max_length=64"),
    _validate("truncated_row_missing_label", "cut off inside the last row, before its label",
              truncated_row_missing_label, f"{_NULL} 'label'", f"row={ROWS - 1}"),
    _validate("too_few_rows", "20 rows", too_few_rows, "expect_table_row_count_to_be_between", "observed 20"),
    _validate("control_characters", "terminal escape junk in a tenth of the texts", control_characters,
              "control characters", "row=0"),
    _validate("mojibake", "UTF-8 read as Windows-1252 and saved again", mojibake, "mojibake", "row=0"),
    _validate("columns_swapped", "text and label columns mapped the wrong way round", columns_swapped,
              "expect_repeated_rows_share_to_be_at_most", "set data.text_column=text",
              "expect_every_label_to_have_enough_rows", setting=DUPLICATES),
    _validate("label_is_an_id_column", "a ticket id mapped as the label", label_is_an_id_column,
              "expect_every_label_to_have_enough_rows", "label='ticket-0000', rows=1, row=0",
              setting="data.checks.min_rows_per_label=1"),
    _validate("regression_targets_not_finite", "nan and inf scores", regression_targets_not_finite,
              "expect_column_values_to_match_regex on column 'score'", "score='nan', row=7",
              setting=REGRESSION_SUITE),
    _validate("time_column_not_times", "a time split over values that are not times", time_column_not_times,
              "expect_column_values_to_be_times", "row=9, created='yesterday'", setting="split.time_column=created"),
    _validate("group_column_with_gaps", "a group split with rows of no group", group_column_with_gaps,
              f"{_NULL} 'customer'", "row=14", setting="split.group_column=customer"),
    _validate("pii_with_policy_fail", "an email address under data.checks.pii=fail", pii_with_policy_fail,
              "PII in text, policy fail", "row=5", setting="data.checks.pii=fail"),
    _validate("jsonl_field_renamed_midway", "JSON Lines whose text field is renamed half way",
              jsonl_field_renamed_midway, f"{_NULL} 'text'", "row=60"),
    _validate("label_spellings_mixed", "'positive', 'POSITIVE' and ' Positive ' in one file", label_spellings_mixed,
              "expect_label_spellings_to_be_consistent", "'POSITIVE'", "' Positive '", "label=' Positive '",
              setting=SPELLINGS),
    _validate("label_trailing_spaces", "labels typed with a trailing space", label_trailing_spaces,
              "expect_label_spellings_to_be_consistent", "'positive '", "rows=", setting=SPELLINGS),
    _validate("label_non_breaking_space", "labels pasted from a web page, with a non-breaking space",
              label_non_breaking_space, "expect_label_spellings_to_be_consistent", "'negative\\xa0'",
              setting=SPELLINGS),
    _validate("labels_numbers_and_words_jsonl", "labels 0, 1, \"1\" and \"neg\" in JSON Lines",
              labels_numbers_and_words_jsonl, "expect_labels_to_be_all_numbers_or_all_words", "'neg'",
              "labels that are numbers: '0' (41 rows), '1' (60 rows)", "label='neg'", setting="data.labels=null"),
    _validate("labels_numbers_and_words_csv", "a 0/1 export appended to a negative/positive one",
              labels_numbers_and_words_csv, "expect_labels_to_be_all_numbers_or_all_words", "label='0', rows=",
              setting="data.labels=null"),
    _validate("labels_with_placeholder", "0/1 labels and 'unknown' where the annotator could not decide",
              labels_with_placeholder, "expect_labels_to_be_all_numbers_or_all_words", "'unknown' (4 rows)",
              "label='unknown', rows=4, row=3", setting="data.labels=null"),
    _validate("labels_ints_and_floats", "labels 1 and 1.0 (a batch written as floats)", labels_ints_and_floats,
              "expect_label_spellings_to_be_consistent", "'1.0'", setting=SPELLINGS),
    _validate("labels_outside_listed_numbers", "'neg' among 0/1 labels with data.labels=[0, 1]",
              labels_outside_listed_numbers, "expect_column_values_to_be_in_set on column 'label'",
              "label='neg', row=8", setting="data.labels=[0, 1]"),
    _validate("each_text_twice_opposite_labels", "the file again with every label flipped",
              each_text_twice_opposite_labels, "expect_no_label_conflicts", "label conflicts: 120 texts",
              f"conflicts_row={ROWS}", setting=CONFLICTS),
    _validate("some_texts_with_other_labels", "ten reviews labelled again by an annotator who disagreed",
              some_texts_with_other_labels, "expect_no_label_conflicts", "label conflicts: 10 texts",
              f"row=0, label='negative', conflicts_row={ROWS}, conflicting_label='positive'", setting=CONFLICTS),
    _validate("numbers_mapped_as_text", "the order id column mapped as the text", numbers_mapped_as_text,
              "expect_text_column_to_hold_words on column 'order_id'", "order_id='48210'",
              "set data.text_column=review", setting="data.checks.max_numeric_text_share=0.5, data.text_column=order_id"),
    _validate("dates_mapped_as_text", "the date column mapped as the text", dates_mapped_as_text,
              "expect_text_column_to_hold_words on column 'created'", "set data.text_column=review",
              setting="data.checks.max_numeric_text_share=0.5, data.text_column=created"),
    _validate("category_mapped_as_text", "the product category mapped as the text", category_mapped_as_text,
              "expect_repeated_rows_share_to_be_at_most on column 'category'", "set data.text_column=review",
              setting=DUPLICATES),
    _validate("text_mostly_placeholder", "N/A for 70% of the reviews", text_mostly_placeholder,
              "expect_text_column_to_vary", "one text fills 70.0% of rows", "text='N/A'",
              setting="data.checks.max_top_text_share=0.5"),
    _validate("file_appended_to_itself", "the whole file appended again", file_appended_to_itself,
              "expect_repeated_rows_share_to_be_at_most", "50.0% of rows", f"row={ROWS}, repeats_row=0",
              setting=DUPLICATES),
    _validate("regression_words_for_scores", "'good' and 'bad' in a score column", regression_words_for_scores,
              "expect_column_values_to_match_regex on column 'rating'", "rating='good', row=4",
              setting=REGRESSION_SUITE),
    _validate("regression_decimal_commas", "scores with decimal commas", regression_decimal_commas,
              "on column 'rating'", "rating='1,7'", setting=REGRESSION_SUITE),
    _validate("regression_target_beyond_bounds", "a score of 1e20", regression_target_beyond_bounds,
              "expect_column_values_to_be_between on column 'rating'", "rating=1e+20, row=13",
              setting=REGRESSION_SUITE),
    _validate("regression_numbers_mapped_as_text", "regression on the order id instead of the review",
              regression_numbers_mapped_as_text, "expect_text_column_to_hold_words on column 'order_id'",
              "set data.text_column=text",
              setting="data.checks.max_numeric_text_share=0.5, data.text_column=order_id"),
    _validate("scores_trained_as_classes", "a 1-5 score column trained as classes", scores_trained_as_classes,
              "expect_every_label_to_have_enough_rows", "set task=regression",
              setting="data.checks.min_rows_per_label=1"),
    _validate("exports_joined_with_cat", "two 'CSV UTF-8' exports joined with cat: a BOM and a header mid-file",
              exports_joined_with_cat, "expect_every_label_to_have_enough_rows", "label='label', rows=1, row=60",
              setting="data.checks.min_rows_per_label=1"),
    _validate("unlabelled_rows_left_in", "a third of the rows not labelled yet", unlabelled_rows_left_in,
              f"{_NULL} 'label'", "row=1"),
    BadInput("label_distribution_shift", "85% negative where the champion saw half and half",
             label_distribution_shift, DataDriftError, ("total variation distance", "label='negative'",
                                                        f"champion {CHAMPION_MODEL} version 1"),
             "drift", needs_champion=True, setting="data.drift.max_label_shift=0.2"),
    BadInput("batch_in_another_language", "a German batch for a champion trained on English",
             batch_in_another_language, DataDriftError, ("expect_vocabulary_overlap_to_be_at_least", "new_word="),
             "drift", needs_champion=True, setting="data.drift.min_vocabulary_overlap=0.5"),
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
