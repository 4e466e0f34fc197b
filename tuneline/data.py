"""Ingest, clean and split labelled text, for every task type.

Every frame that leaves `load_dataset` has the columns `row` (the row's
position in the source, for error messages), `text` and `label` (both str),
plus whatever other columns the source had (its own `row`, and a `text` or
`label` column beside the mapped ones, as `source_row`, `source_text`,
`source_label`). What `label` holds depends on the task: a class name
(classification), a number written as text (regression, canonicalised at
ingest), or the target text to generate (seq2seq, causal_lm).
"""

from __future__ import annotations

import errno
import hashlib
import html
import logging
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd

from tuneline.config import GENERATIVE_TASKS, Task
from tuneline.errors import ConfigError, DataLoadError, DataValidationError, SplitError
from tuneline.text_checks import (
    PII_KINDS,
    duplicate_keys,
    find_near_duplicates,
    label_respellings,
    mask_pii,
    pairs_across,
)

log = logging.getLogger(__name__)

BUILTIN_SAMPLE = "builtin:sample-reviews"
BUILTIN_SEQ2SEQ_SAMPLE = "builtin:sample-seq2seq"
CANONICAL_COLUMNS = ("row", "text", "label")
TASKS: tuple[str, ...] = get_args(Task)
SPLIT_STRATEGIES = ("random", "group", "time")
NEAR_DUPLICATE_POLICIES = ("group", "drop", "ignore")
EXAMPLE_ROWS = 5  # bad rows quoted in an error message


def check_task(task: str) -> str:
    """The task, if tuneline knows it; else `ConfigError` naming the known ones."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


@dataclass(frozen=True)
class IngestResult:
    frame: pd.DataFrame
    source: str
    content_hash: str  # `file_hash` of the source: what `tuneline land` announces and `sha256sum` prints for a file
    rows: int
    # data.normalize_labels: each spelling rewritten -> the label kept, and how many rows were rewritten
    relabelled: dict[str, str] = field(default_factory=dict)
    rows_relabelled: int = 0


@dataclass(frozen=True)
class CleanResult:
    frame: pd.DataFrame
    dropped: pd.DataFrame  # the dropped rows, with a `reason` column
    rows_in: int
    rows_out: int
    changed: int  # rows whose text the cleaning rewrote
    masked: int = 0  # rows whose PII was replaced by placeholders (data.checks.pii=mask)

    @property
    def rows_dropped(self) -> int:
        return len(self.dropped)


@dataclass(frozen=True)
class SplitResult:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: tuple[str, ...]  # class names in id order; () for regression and generation tasks
    # Rows the split itself removed, with a `reason`: near-duplicates under split.near_duplicates=drop, and under
    # strategy time the near-duplicates of an earlier split's rows. None: nothing removed.
    dropped: pd.DataFrame | None = None
    strategy: str = "random"
    near_duplicate_groups: int = 0  # groups of near-duplicate texts (2+ rows) the split kept in one split
    regrouped_rows: int = 0  # rows moved to their group's split (swapped with rows of the same label)
    checks: Any = None  # the split stage's ValidationReport (validation.check_splits), kept for every run to log

    def parts(self) -> dict[str, pd.DataFrame]:
        """`{"train": ..., "validation": ..., "test": ...}`, in that order."""
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def sizes(self) -> dict[str, int]:
        return {name: len(frame) for name, frame in self.parts().items()}

    @property
    def rows_dropped(self) -> int:
        return 0 if self.dropped is None else len(self.dropped)

    @cached_property
    def hashes(self) -> dict[str, str]:
        """`content_hash` of each split, computed once: tags, lineage and the gate all use it."""
        return {name: content_hash(frame) for name, frame in self.parts().items()}


def resolve_data_path(path: str) -> Path:
    """Map `builtin:sample-reviews` and `builtin:sample-seq2seq` to the shipped CSVs; anything else is a path."""
    if path.startswith("builtin:"):
        from tuneline.sample_data import SAMPLE_PATH, SEQ2SEQ_SAMPLE_PATH

        shipped = {BUILTIN_SAMPLE: SAMPLE_PATH, BUILTIN_SEQ2SEQ_SAMPLE: SEQ2SEQ_SAMPLE_PATH}
        if path not in shipped:
            raise DataLoadError(f"unknown built-in dataset {path!r}; the built-in ones are {', '.join(map(repr, shipped))}")
        return shipped[path]
    return Path(path).expanduser()


def missing_path_problem(path: Path) -> str:
    """Why a path that `exists()` calls missing cannot be read: a symbolic link loop, a link to nothing, or nothing."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop (following its links leads back to one of them): point it at the data"
        if path.is_symlink():
            return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist"
    return f"{path} does not exist"


def _detect_format(path: Path) -> str:
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
    if suffix not in formats:
        raise DataLoadError(
            f"cannot tell the format of {path} from its extension {suffix!r}; "
            f"set data.format to one of csv, tsv, jsonl, parquet, datasets"
        )
    return formats[suffix]


def _read(path: Path, fmt: str) -> pd.DataFrame:
    # keep_default_na=False: an empty text must reach validation as "", not vanish as NaN.
    if fmt == "csv":
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    if fmt == "tsv":
        return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=str, quoting=3)
    if fmt == "jsonl":
        # utf-8-sig: a byte-order mark (Notepad and PowerShell write one) is not part of the first object.
        with path.open(encoding="utf-8-sig") as handle:
            return pd.read_json(handle, lines=True, dtype=False)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "datasets":
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            # A saved DatasetDict is read whole; our own split stage re-splits it.
            return pd.concat([part.to_pandas() for part in loaded.values()], ignore_index=True)
        return loaded.to_pandas()
    raise DataLoadError(f"unknown data format {fmt!r}")


# --- what is wrong with a file that does not read -------------------------------------------------------------------

TEXT_FORMATS = ("csv", "tsv", "jsonl")
_SNIFF_BYTES = 1 << 16  # enough to recognise a file by its first bytes
_MAGIC = {
    b"PK\x03\x04": "a zip archive (an Excel .xlsx workbook is one): export the sheet as CSV",
    b"PAR1": "a Parquet file: give it the .parquet extension or set data.format=parquet",
    b"\x1f\x8b": "gzip-compressed: decompress it first",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
}
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _check_text_file(path: Path, fmt: str) -> None:
    """`DataLoadError` when a CSV/TSV/JSONL file is empty or its first bytes show it is not UTF-8 text at all."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head.strip():
        size = path.stat().st_size
        raise DataLoadError(f"{path} is empty ({size} bytes{', only whitespace' if size else ''}): there is no "
                            f"header and no rows. Check the export or copy that wrote it.")
    what = next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        what = ("UTF-16 text (it starts with a UTF-16 byte-order mark, as Excel's 'Unicode text' writes): "
                "re-save it as UTF-8")
    elif what is None and b"\x00" in head:
        offset = head.index(b"\x00")
        line = head.count(b"\n", 0, offset) + 1
        what = (f"binary data, or UTF-16 without a byte-order mark: it holds NUL bytes (the first on line {line}, "
                f"byte offset {offset}); export the data as UTF-8 text")
    if what is not None:
        raise DataLoadError(f"{path} is not {fmt} text: it looks like {what}.")
    if fmt == "jsonl" and head.lstrip().startswith(b"["):
        raise DataLoadError(f"{path} is one JSON array, not JSON Lines (one object per line): convert it, e.g. "
                            "`jq -c '.[]' in.json > out.jsonl`.")


def _encoding_problem(path: Path) -> str:
    """Where a file stops being UTF-8: the first bad line and byte, how many lines, and whether encodings are mixed."""
    bad_lines: list[int] = []
    utf8_lines, first, offset = 0, None, 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
                utf8_lines += not line.isascii()
            except UnicodeDecodeError as exc:
                first = first or (number, offset + exc.start, line[exc.start])
                bad_lines.append(number)
            offset += len(line)
    if first is None:
        return f"{path} is not valid UTF-8 (the reader says so, though every line decodes on its own)"
    number, byte_offset, byte = first
    shown = ", ".join(map(str, bad_lines[:EXAMPLE_ROWS])) + (", ..." if len(bad_lines) > EXAMPLE_ROWS else "")
    guess = (f"{utf8_lines} other lines hold UTF-8 non-ASCII text, so the file mixes encodings (rows pasted from "
             "sources saved differently)" if utf8_lines else "The file is probably Latin-1 / Windows-1252")
    return (f"{path} is not UTF-8: line {number} has the byte 0x{byte:02x} at byte offset {byte_offset}, which "
            f"UTF-8 cannot decode (lines with such bytes: {len(bad_lines)}, e.g. line {shown}). {guess}. Re-save "
            "the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 in.csv > out.csv` for the lines in another encoding).")


def _jsonl_problem(path: Path) -> str | None:
    """The first line of a JSON Lines file that is not a JSON object, said with its number; None if there is none."""
    import json

    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                return (f"{path} line {number} is not valid JSON ({exc.msg} at column {exc.colno}): "
                        f"{_quote(line.strip())}. Each line of JSON Lines must be one complete JSON object; the file "
                        "may be cut off, or a writer put raw newlines or quotes inside a value.")
            if not isinstance(value, dict):
                kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
                kind = kinds.get(type(value), "number")
                hint = (" The file looks like one JSON array: write one object per line (e.g. `jq -c '.[]' in.json "
                        "> out.jsonl`)." if isinstance(value, list) else "")
                return f"{path} line {number} holds a JSON {kind}, not an object with named fields.{hint}"
    return None


def _quote(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _read_problem(path: Path, fmt: str, exc: Exception) -> str:
    """A read failure in words: what is wrong, on which line, what to do (the parsers' own messages say less)."""
    if isinstance(exc, UnicodeDecodeError):
        return _encoding_problem(path)
    if fmt == "jsonl":
        return _jsonl_problem(path) or f"could not read {path} as JSON Lines: {exc}"
    message = str(exc)
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    other = _other_delimiter(path, fmt) if fields else None
    if other:
        return f"{path} does not parse as {fmt}: {other}"
    if fields:
        expected, line, saw = fields.groups()
        delimiter = "tab" if fmt == "tsv" else "comma"
        return (f"{path} line {line} has {saw} fields where the header has {expected}: a text holds an unquoted "
                f"{delimiter}, or the row is broken. Quote fields that contain a {delimiter} (every CSV writer can) "
                "and check that line.")
    eof = re.search(r"EOF inside string starting at row (\d+)", message)
    if eof:
        return (f"{path} ends inside a quoted field that starts on line {int(eof.group(1)) + 1}: the file was cut off "
                "mid-row (an interrupted download or copy), or a quote on that line is never closed. Re-export the "
                "file, or fix that line.")
    return f"could not read {path} as {fmt}: {type(exc).__name__}: {exc}"


def _header_fields(path: Path, fmt: str) -> list[str]:
    """The CSV/TSV header's field names as written (pandas renames a repeated `text` to `text.1`)."""
    import csv

    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle, delimiter="\t" if fmt == "tsv" else ","), [])


def _other_delimiter(path: Path, fmt: str) -> str | None:
    """A hint when a CSV/TSV header is one field holding another delimiter (a semicolon CSV read as comma CSV)."""
    if fmt not in ("csv", "tsv"):
        return None
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline().rstrip("\r\n")
    expected = "\t" if fmt == "tsv" else ","
    if expected in header:
        return None
    for delimiter, name in _DELIMITERS.items():
        if delimiter != expected and delimiter in header:
            fix = ("set data.format=tsv (or use the .tsv extension)" if delimiter == "\t" else
                   "re-save it comma-separated (CSV) or tab-separated (.tsv)")
            return (f"the header {header[:80]!r} is {name}-separated, but {fmt} is read "
                    f"{_DELIMITERS[expected]}-separated: {fix}.")
    return None


def _missing_columns_hint(path: Path, fmt: str, columns: list, wanted: list[str]) -> str:
    """Why the mapped columns are not there, when the file shows it: another delimiter, an HTML page, a JSON array."""
    import difflib

    first = str(columns[0]) if len(columns) else ""
    if fmt in ("csv", "tsv") and len(columns) == 1:
        other = _other_delimiter(path, fmt)
        if other:
            return f" {other[0].upper()}{other[1:]}"
        if first.lstrip().lower().startswith(("<!doctype", "<html", "<?xml")):
            return " The file is an HTML/XML page (an error or login page saved instead of the data?)."
    close = {w: difflib.get_close_matches(w, [str(c) for c in columns], n=1, cutoff=0.6) for w in wanted}
    guesses = ", ".join(f"{c[0]!r} for {w!r}" for w, c in close.items() if c)
    if guesses:
        return f" Did you mean {guesses}?"
    if any(len(str(c).split()) >= 4 for c in columns):  # a sentence is a row of data, not a column name
        return (" The first line reads like a row of data, not a header: the file has no header line. Add one "
                "naming the columns (e.g. text,label) as the first line.")
    return ""


def _columns(frame: pd.DataFrame, limit: int = 20) -> str:
    names = [str(c) for c in frame.columns]
    return str(names[:limit])[:-1] + (f", ... ({len(names)} in all)]" if len(names) > limit else "]")


def _check_columns(raw: pd.DataFrame, path: Path, fmt: str, text_column: str, label_column: str) -> None:
    """`DataLoadError` when a mapped column is missing, named twice in the header, or the file has no data rows."""
    missing = [c for c in (text_column, label_column) if c not in raw.columns]
    if missing:
        raise DataLoadError(
            f"{path} has no column {', '.join(map(repr, missing))}; its columns are {_columns(raw)}. "
            f"Set data.text_column / data.label_column." + _missing_columns_hint(path, fmt, list(raw.columns), missing)
        )
    if fmt in ("csv", "tsv"):
        header = _header_fields(path, fmt)
        for role, column in (("text_column", text_column), ("label_column", label_column)):
            positions = [i + 1 for i, name in enumerate(header) if name == column]
            if len(positions) > 1:
                raise DataLoadError(f"{path}: the header names column {column!r} {len(positions)} times (columns "
                                    f"{', '.join(map(str, positions))}, counting from 1), so data.{role} is ambiguous. "
                                    "Rename or drop the extra columns.")
    if raw.empty:
        raise DataLoadError(f"{path} has a header (columns {_columns(raw)}) but no data rows: nothing to train on. "
                            "Check the export that wrote it.")


def _typed_problem(values: pd.Series, column: str, role: str, task: str) -> str | None:
    """Why a column of a typed format (Parquet, JSON Lines, datasets) cannot be `role`, with example rows; else None."""
    present = values.dropna()
    containers = present.map(lambda v: isinstance(v, (list, dict, tuple, np.ndarray)))
    if containers.any():
        examples = "; ".join(f"row {i}: {_quote(str(v))}" for i, v in present[containers].head(EXAMPLE_ROWS).items())
        return f"column {column!r} (data.{role}) holds lists or records, not single values, e.g. {examples}"
    if role == "text_column" and len(present) and not present.map(lambda v: isinstance(v, (str, bytes))).any():
        examples = "; ".join(f"row {i}: {v!r}" for i, v in present.head(EXAMPLE_ROWS).items())
        return (f"column {column!r} (data.text_column) holds {values.dtype} values, not text, e.g. {examples}: "
                "map data.text_column to the column with the text")
    if role == "label_column" and task == "classification" and pd.api.types.is_float_dtype(values):
        fractional = present[present != present.round()]
        if len(fractional):
            examples = "; ".join(f"row {i}: {v!r}" for i, v in fractional.head(EXAMPLE_ROWS).items())
            return (f"column {column!r} (data.label_column) holds fractional numbers, e.g. {examples}: a classifier "
                    "needs class names or integer class ids. For a score to predict, set task=regression")
    return None


def _typed_column(values: pd.Series, column: str, role: str, task: str, path: Path) -> pd.Series:
    """A typed format's column made ready for `_as_text`: checked, bytes decoded, whole floats written as integers."""
    problem = _typed_problem(values, column, role, task)
    if problem:
        raise DataLoadError(f"{path}: {problem}.")
    if values.map(lambda v: isinstance(v, bytes)).any():
        try:
            return values.map(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v)
        except UnicodeDecodeError as exc:
            raise DataLoadError(f"{path}: column {column!r} holds bytes that are not UTF-8 ({exc})") from None
    if role == "label_column" and task == "classification" and pd.api.types.is_float_dtype(values):
        # An integer label column with a gap arrives as floats: class 1 must stay "1", as in a CSV, not "1.0".
        return values.map(lambda v: None if pd.isna(v) else str(int(v)))
    return values


def file_hash(path: Path) -> str:
    """The content hash of a data file: SHA-256 of its bytes (what `sha256sum` prints), or for a folder (a saved
    `datasets` dataset) of its files' relative names and bytes, in name order.

    The one hash of a data file: `tuneline land` announces it, ingest caches on it and records it as the run's
    and the version's `data.hash`, and the new-data trigger's event carries it.
    """
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's text and label columns, row order included: the same rows, the same hash, whatever file
    format they came from (each split's `data.hash.<split>`; the gate re-reads a test split and checks it)."""
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"]):
        digest.update(f"{text}\x1f{label}\x1e".encode())
    return digest.hexdigest()


def _as_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value)


def canonical_number(value: str | None) -> str | None:
    """A regression label as `repr(float)` ("3" and "3.0" become "3.0"); anything not a finite number unchanged.

    One spelling per value makes the content hash the same whatever the file
    format, and survives a CSV round trip (the gate re-reads the test split).
    Unparseable values are left as they are for validation to report.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return repr(number) if math.isfinite(number) else value


def load_dataset(
    path: str, text_column: str, label_column: str, fmt: str = "auto", task: str = "classification", *,
    normalize_labels: bool = False, labels: list[str] | None = None,
) -> IngestResult:
    """Read labelled text into the canonical frame and hash the file (`file_hash`).

    For `regression` the numeric labels are canonicalised (`canonical_number`);
    labels that are not numbers are kept for validation to name. For `classification` with
    `normalize_labels` (data.normalize_labels), labels spelt several ways (`positive`, ` POSITIVE `,
    or `1`, `1.0`) become one: the spelling `labels` (data.labels) lists, else the most frequent
    (`tuneline.text_checks.label_respellings`); the result says what it rewrote. Raises
    `DataLoadError` naming the file and what is wrong with it, where the reader can tell on which
    line: empty, not UTF-8 (or not text at all), a broken row, a missing or doubled column, no
    data rows, or (Parquet, JSON Lines, datasets) a column of the wrong type.
    """
    check_task(task)
    resolved = resolve_data_path(path)
    if not resolved.exists():
        raise DataLoadError(f"data file {missing_path_problem(resolved)} (data.path={path!r})")
    fmt = _detect_format(resolved) if fmt == "auto" else fmt
    if fmt in TEXT_FORMATS:
        _check_text_file(resolved, fmt)
    try:
        raw = _read(resolved, fmt)
    except DataLoadError:
        raise
    except Exception as exc:  # the readers raise a dozen types; all mean "unreadable", `_read_problem` says why
        raise DataLoadError(_read_problem(resolved, fmt, exc)) from exc
    _check_columns(raw, resolved, fmt, text_column, label_column)
    if fmt not in ("csv", "tsv"):  # typed formats: a number where text belongs is a mapping mistake, not a text
        for role, column in (("text_column", text_column), ("label_column", label_column)):
            raw[column] = _typed_column(raw[column], column, role, task, resolved)
    # A column named like a canonical one but not mapped to it (a `text` column beside data.text_column=review)
    # keeps its values under another name, or the frame would hold two `text` columns.
    unmapped = {name: f"source_{name}" for name in ("text", "label") if name in raw.columns
                and name not in (text_column, label_column)}
    frame = raw.rename(columns={**unmapped, text_column: "text", label_column: "label"})
    if "row" in frame.columns:  # our row number takes the name; keep the user's column beside it
        frame = frame.rename(columns={"row": "source_row"})
    frame.insert(0, "row", range(len(frame)))
    # Labels are names: 0/1 from a CSV and "0"/"1" from JSONL must mean the same class.
    frame["text"] = frame["text"].map(_as_text)
    frame["label"] = frame["label"].map(_as_text)
    if task == "regression":
        frame["label"] = frame["label"].map(canonical_number)
    relabelled, rows_relabelled = {}, 0
    if task == "classification" and normalize_labels:
        relabelled = label_respellings(frame["label"], labels or ())
        if relabelled:
            rows_relabelled = int(frame["label"].isin(list(relabelled)).sum())
            frame["label"] = frame["label"].map(lambda label: relabelled.get(label, label))
            log.info("data.normalize_labels=true: %d rows relabelled (%s)", rows_relabelled,
                     ", ".join(f"{old!r} -> {new!r}" for old, new in list(relabelled.items())[:EXAMPLE_ROWS]))
    frame = frame.reset_index(drop=True)
    return IngestResult(frame=frame, source=str(resolved), content_hash=file_hash(resolved), rows=len(frame),
                        relabelled=relabelled, rows_relabelled=rows_relabelled)


_TAG = re.compile(r"<[^>]{0,200}>")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Strip HTML tags and entities, URLs and control characters; collapse whitespace."""
    text = html.unescape(_TAG.sub(" ", text))
    text = _URL.sub(" ", text)
    # Category C* is control/format/unassigned; whitespace controls become spaces first.
    text = "".join(" " if ch in "\t\n\r\x0b\x0c" else ch for ch in text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def clean_prompt(text: str) -> str:
    """A causal-LM prompt made safe without changing what the model reads.

    Newlines, indentation, angle brackets (chat-template markers such as `<|user|>`), URLs and
    surrounding whitespace are kept: they are part of the prompt format. Only line endings are
    unified (`\r\n` -> `\n`), Unicode is NFC-normalised and control characters other than
    newline and tab are removed.
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "".join(ch for ch in text if ch in "\n\t" or not unicodedata.category(ch).startswith("C"))


def regression_targets(frame: pd.DataFrame) -> np.ndarray:
    """The `label` column as float64; `DataValidationError` naming the rows whose label is not a finite number."""
    values = pd.to_numeric(frame["label"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = frame.loc[bad, ["row", "label"]] if "row" in frame.columns else frame.loc[bad, ["label"]]
        examples = rows.head(EXAMPLE_ROWS).to_dict("records")
        described = "; ".join(", ".join(f"{k}={v!r}" for k, v in r.items()) for r in examples)
        raise DataValidationError(
            f"{int(bad.sum())} of {len(frame)} regression labels are not finite numbers, e.g. {described}. "
            "Fix those rows or map data.label_column to the numeric column.",
            failures=[{"expectation": "label is a finite number", "column": "label",
                       "unexpected_count": int(bad.sum()), "example_rows": examples}],
        )
    return values


def _is_empty(texts: pd.Series) -> pd.Series:
    return texts.isna() | (texts.fillna("").str.strip().str.len() == 0)


def clean_dataset(frame: pd.DataFrame, task: str = "classification", pii: str = "report",
                  pii_kinds: tuple[str, ...] | list[str] = PII_KINDS) -> CleanResult:
    """Clean every input text, then drop rows left empty and duplicates (first kept).

    Inputs are cleaned with `clean_text`, except causal_lm prompts, which keep their format
    (`clean_prompt`: newlines and template markers are part of the prompt).
    With `pii="mask"`, emails, phone numbers, card numbers and IP addresses (`pii_kinds`) are
    replaced by placeholders (`[EMAIL]`...) in the input, and in the target of generation tasks,
    before duplicates are looked for.
    What counts as a duplicate follows the task, "the same text" being what the repeated-rows
    check counts (`tuneline.text_checks.duplicate_key`: equal after cleaning up to case,
    punctuation and spacing), so cleaning drops every row that check counts:
    - classification: the same text (first row's label kept; the reason names a conflicting label);
    - regression: the same text; the first row keeps the mean of the group's labels;
    - seq2seq, causal_lm: the same text *and* target (the target up to case, punctuation and
      spacing). One input with several different targets is multi-reference data and stays;
      `split_dataset` keeps such rows together.
    Targets (`label`) are never rewritten for generation tasks (PII masking aside): they are what the
    model must learn to write, spacing, case and newlines included; rows with an empty target
    are dropped. Dropped rows are returned with a `reason`, never discarded silently.
    """
    check_task(task)
    cleaned = frame.copy()
    cleaner = clean_prompt if task == "causal_lm" else clean_text
    cleaned["text"] = frame["text"].map(lambda t: cleaner(t) if isinstance(t, str) else t)
    changed = int((cleaned["text"] != frame["text"]).sum())
    masked, shown = 0, frame
    if pii == "mask":
        columns = ["text", "label"] if task in GENERATIVE_TASKS else ["text"]
        touched = pd.Series(False, index=frame.index)
        for column in columns:
            before = cleaned[column]
            cleaned[column] = before.map(lambda t: mask_pii(t, pii_kinds))
            touched |= cleaned[column].fillna("").ne(before.fillna(""))
        masked = int(touched.sum())
        # The dropped rows are logged: with masking asked for, their PII must not reach the log either.
        shown = frame.assign(**{column: frame[column].map(lambda t: mask_pii(t, pii_kinds)) for column in columns})
    empty = _is_empty(cleaned["text"])
    reasons = pd.Series("", index=frame.index)
    reasons[empty] = "empty after cleaning"
    if task in GENERATIVE_TASKS:
        no_target = _is_empty(cleaned["label"]) & ~empty
        reasons[no_target] = "empty target"
        empty = empty | no_target
    # The key of the text as it now is (masked too): masking can only make more rows the same, never fewer.
    key = pd.Series(duplicate_keys(list(cleaned["text"]), list(cleaned["label"]) if task in GENERATIVE_TASKS else None),
                    index=frame.index)
    candidates = cleaned[~empty]
    by_key = candidates.groupby(key[~empty], sort=False)
    duplicate = key[~empty].duplicated(keep="first").reindex(frame.index, fill_value=False)
    first_row = by_key["row"].transform("first").reindex(frame.index)
    reasons[duplicate] = "duplicate of row " + first_row[duplicate].astype(int).astype(str)
    if task == "classification":
        first_label = by_key["label"].transform("first").reindex(frame.index)
        conflict = duplicate & (cleaned["label"] != first_label)
        reasons[conflict] = [f"{reason} with label {label!r}; row {first}'s label {kept!r} kept"
                             for reason, label, first, kept in zip(reasons[conflict], cleaned.loc[conflict, "label"],
                                                                   first_row[conflict].astype(int), first_label[conflict])]
    elif task == "regression":
        # Several scores for one text (several annotators, say) estimate one value: the first row keeps their mean.
        values = pd.Series(regression_targets(candidates), index=candidates.index)
        by_text = values.groupby(key[~empty], sort=False)
        varies = (by_text.transform("nunique") > 1).reindex(frame.index, fill_value=False)
        keeper = varies & ~duplicate
        cleaned.loc[keeper, "label"] = by_text.transform("mean")[keeper[keeper].index].map(lambda v: repr(float(v)))
        reasons[duplicate & varies] += "; labels averaged into it"
    drop = empty | duplicate
    dropped = shown[drop].assign(reason=reasons[drop]).sort_values("row")
    kept = cleaned[~drop].reset_index(drop=True)
    return CleanResult(frame=kept, dropped=dropped.reset_index(drop=True), rows_in=len(frame), rows_out=len(kept),
                       changed=changed, masked=masked)


def label_names(frame: pd.DataFrame, labels: list[str] | None) -> tuple[str, ...]:
    """The class names in id order: the configured ones, else the data's, sorted (numerically if numeric)."""
    if labels is not None:
        return tuple(labels)
    found = sorted(set(frame["label"].dropna()))
    if all(_is_int(v) for v in found):
        found = sorted(found, key=int)
    return tuple(found)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def split_dataset(
    frame: pd.DataFrame,
    labels: tuple[str, ...],
    train_fraction: float,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: bool = True,
    task: str = "classification",
    *,
    strategy: str = "random",
    group_column: str | None = None,
    time_column: str | None = None,
    near_duplicates: str = "ignore",
    near_duplicate_threshold: float = 0.8,
    near_duplicate_ngram: int = 5,
    source: str = "the data",
) -> SplitResult:
    """Seeded train/validation/test split with no text in two splits.

    `strategy`:
    - random: a seeded shuffle. `stratify` means, per task:
      classification: equal label proportions in every split (`SplitError` when a label
      has too few rows to appear in every split); regression: equal proportions of the
      target's quantile bins (up to 10), so the small test split gets its share of the
      tails and its MSE is not decided by where a few extreme values fell (fewer bins when
      ties leave some too small, a plain shuffle when not even two fit); seq2seq, causal_lm:
      nothing to stratify on, the distinct input texts are shuffled, all rows of one text
      (its references) landing in the same split.
    - group: rows sharing a value of `group_column` (a user, a document) stay in one split.
      Groups are placed largest first, then in seeded random order, each in the split furthest
      below its share of rows (of each label's rows, for a stratified classification), so
      sizes and label shares come close to the fractions without cutting a group.
    - time: rows sorted by `time_column` (timestamps or numbers); the oldest train, the next
      validate, the most recent test. Rows with one timestamp stay in one split, so every
      training row is at most as recent as every validation row, which precedes every test row.

    `near_duplicates` (texts whose normalised character n-gram Jaccard similarity reaches
    `near_duplicate_threshold`, see `tuneline.text_checks.find_near_duplicates`):
    - group: each group of near-duplicates lands in one split. random: a member outside its
      group's split is swapped with a row of the same label (stratum) there, so sizes and
      proportions stay as they were; group: near-duplicate groups merge with the column's
      groups; time: members in a later split than the group's oldest row are removed, since
      moving them back would put the future in the training data.
    - drop: only the first row of each group is kept (every row of its text, for generation
      tasks, whose references stay together).
    - ignore: not looked for (exact repeats of a text are still refused across splits).
    Removed rows come back in `SplitResult.dropped` with a reason. Unless `ignore`, the result
    is checked again: a near-duplicate pair across two splits raises `SplitError`.
    `labels` are the class names (classification); other tasks take `()` and their
    `SplitResult.labels` is `()`. `source` names the data in error messages.
    """
    check_task(task)
    if strategy not in SPLIT_STRATEGIES:
        raise ConfigError(f"unknown split strategy {strategy!r}; choose one of {', '.join(SPLIT_STRATEGIES)}")
    if near_duplicates not in NEAR_DUPLICATE_POLICIES:
        raise ConfigError(f"unknown near-duplicate policy {near_duplicates!r}; choose one of {', '.join(NEAR_DUPLICATE_POLICIES)}")
    if task != "classification" and labels:
        raise ConfigError(f"data.labels apply to classification only; task {task} was given {list(labels)}")
    if len(frame) < 3:
        raise SplitError(f"need at least 3 rows to split into train/validation/test, got {len(frame)}")
    fractions = (train_fraction, validation_fraction, test_fraction)
    frame = frame.reset_index(drop=True)  # positions below are row positions
    if strategy == "time":
        times = time_order(frame, time_column, source)
        order = np.argsort(times, kind="stable")
        frame, times = frame.iloc[order].reset_index(drop=True), times[order]
    dropped: list[pd.DataFrame] = []
    near, groups_found = None, 0
    if near_duplicates != "ignore":
        near = find_near_duplicates(frame["text"], near_duplicate_threshold, near_duplicate_ngram)
        if near_duplicates == "drop":
            frame, removed, kept = _drop_near_duplicates(frame, near, task, near_duplicate_ngram)
            dropped.append(removed)
            if strategy == "time":
                times = times[kept]
            groups_found, near = near.group_count, None
    moved = 0
    if strategy == "time":
        positions, removed = _split_by_time(frame, times, fractions, near, time_column, near_duplicate_ngram)
        dropped.append(removed)
    elif strategy == "group":
        positions = _split_by_group(frame, group_column, fractions, seed, stratify, task, near, source)
    else:
        positions, moved = _split_at_random(frame, labels, fractions, seed, stratify, task, near)
    train, validation, test = (frame.iloc[p].reset_index(drop=True) for p in positions)
    removed_rows = [d for d in dropped if len(d)]
    result = SplitResult(
        train=train, validation=validation, test=test,
        labels=tuple(labels) if task == "classification" else (),
        dropped=pd.concat(removed_rows, ignore_index=True).sort_values("row") if removed_rows else None,
        strategy=strategy,
        near_duplicate_groups=near.group_count if near is not None else groups_found,
        regrouped_rows=moved,
    )
    check_disjoint(result)
    if near_duplicates != "ignore":
        check_no_near_duplicates(result, near_duplicate_threshold, near_duplicate_ngram)
    return result


def _row_ids(frame: pd.DataFrame) -> np.ndarray:
    """The `row` column (positions in the source file) where there is one, else positions."""
    return frame["row"].to_numpy() if "row" in frame.columns else np.arange(len(frame))


def _holdout_sizes(rows: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Rows of train, validation and test as sklearn's train_test_split counts them (test sizes rounded up)."""
    holdout = fractions[1] + fractions[2]
    held = math.ceil(holdout * rows)
    test = math.ceil(fractions[2] / holdout * held)
    return rows - held, held - test, test


def _drop_near_duplicates(frame: pd.DataFrame, near, task: str, ngram: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Keep the first row of each near-duplicate group (for generation tasks, every row of its text)."""
    from tuneline.text_checks import similarity

    first = pd.Series(np.arange(len(frame))).groupby(near.groups).transform("first").to_numpy()
    texts = frame["text"].to_numpy(dtype=object)
    keep = texts == texts[first] if task in GENERATIVE_TASKS else first == np.arange(len(frame))
    rows = _row_ids(frame)
    removed = frame[~keep].assign(reason=[
        f"near-duplicate of row {rows[f]} (similarity {similarity(texts[f], texts[i], ngram):.2f})"
        for i, f in zip(np.flatnonzero(~keep), first[~keep])
    ])
    return frame[keep].reset_index(drop=True), removed, keep


def _split_at_random(frame, labels, fractions, seed, stratify, task, near) -> tuple[list[np.ndarray], int]:
    from sklearn.model_selection import train_test_split

    train_fraction, validation_fraction, test_fraction = fractions
    holdout = validation_fraction + test_fraction
    smallest = min(fractions)
    needed = max(3, int(1 / smallest + 0.999))  # rows per stratum for each split to get at least one
    # The unit of the shuffle: a row, or for generation tasks a distinct input with all its references.
    if task in GENERATIVE_TASKS:
        unit_of_row = pd.factorize(pd.Series(duplicate_keys(list(frame["text"]))), sort=False)[0]
        if unit_of_row.max() + 1 < 3:
            raise SplitError(f"need at least 3 distinct texts to split into train/validation/test, got {unit_of_row.max() + 1}")
    else:
        unit_of_row = np.arange(len(frame))
    first_row = np.unique(unit_of_row, return_index=True)[1]
    strata: np.ndarray | None = None
    if task == "classification" and stratify:
        counts = frame["label"].value_counts()
        too_few = {str(k): int(v) for k, v in counts.items() if v < needed}
        if too_few:
            raise SplitError(
                f"stratified split needs at least {needed} rows per label for fractions "
                f"{train_fraction}/{validation_fraction}/{test_fraction}; these labels have fewer: {too_few}. "
                "Add data, merge rare labels, or set split.stratify=false. Setting: split.stratify=true, "
                f"split.train_fraction={train_fraction}, split.validation_fraction={validation_fraction}, "
                f"split.test_fraction={test_fraction}"
            )
        strata = frame["label"].to_numpy(dtype=object)
    elif task == "regression" and stratify:
        strata = target_bins(regression_targets(frame), needed)
    units = np.arange(len(first_row))
    train, rest = train_test_split(units, test_size=holdout, random_state=seed, stratify=strata)
    validation, test = train_test_split(rest, test_size=test_fraction / holdout, random_state=seed,
                                        stratify=None if strata is None else strata[rest])
    parts, moved = [train, validation, test], 0
    if near is not None:
        unit_sizes = np.bincount(unit_of_row)
        parts, moved_units = _keep_groups_together(parts, near.groups[first_row], strata, unit_sizes, seed)
        moved = int(unit_sizes[moved_units].sum()) if len(moved_units) else 0
    return [_rows_of_units(unit_of_row, chosen) for chosen in parts], moved


def _rows_of_units(unit_of_row: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Row positions of the chosen units, in the units' order (rows of one unit in file order)."""
    rank = np.full(unit_of_row.max() + 1, -1)
    rank[chosen] = np.arange(len(chosen))
    picked = np.flatnonzero(rank[unit_of_row] >= 0)
    return picked[np.argsort(rank[unit_of_row[picked]], kind="stable")]


def _keep_groups_together(parts: list[np.ndarray], unit_group: np.ndarray, strata: np.ndarray | None,
                          unit_sizes: np.ndarray, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Move every unit of a near-duplicate group into the split holding most of the group.

    Each move is a swap with a unit of the same stratum and size from a group of its own, taking
    its place in the order, so split sizes and label proportions stay exactly as they were; only
    when no such unit exists is the unit moved alone. Returns the new parts and the units moved.
    """
    rng = np.random.default_rng(seed)
    members_of: dict[int, list[int]] = {}
    for unit, group in enumerate(unit_group):
        members_of.setdefault(int(group), []).append(unit)
    split_of = np.empty(len(unit_group), dtype=int)
    slots: list[list[int | None]] = [list(map(int, p)) for p in parts]
    position = np.empty(len(unit_group), dtype=int)
    for index, part in enumerate(parts):
        split_of[part] = index
        position[part] = np.arange(len(part))
    alone = np.array([len(members_of[int(g)]) == 1 for g in unit_group])
    key = (lambda unit: (strata[unit], unit_sizes[unit])) if strata is not None else (lambda unit: unit_sizes[unit])
    pools: dict[int, dict] = {}

    def pool(split: int) -> dict:
        if split not in pools:
            candidates = [u for u in slots[split] if u is not None and alone[u]]
            pools[split] = {}
            for unit in rng.permutation(candidates) if candidates else []:
                pools[split].setdefault(key(int(unit)), []).append(int(unit))
        return pools[split]

    moved: list[int] = []
    for members in members_of.values():
        if len(members) < 2:
            continue
        counts = np.bincount(split_of[members], minlength=len(parts))
        target = int(np.argmax(counts))  # a tie goes to the earlier (larger) split
        for unit in members:
            origin = int(split_of[unit])
            if origin == target:
                continue
            partners = pool(target).get(key(unit), [])
            if partners:
                partner = partners.pop()
                slots[target][position[partner]], slots[origin][position[unit]] = unit, partner
                position[unit], position[partner] = position[partner], position[unit]
                split_of[unit], split_of[partner] = target, origin
                moved.append(partner)
            else:
                slots[origin][position[unit]] = None
                position[unit] = len(slots[target])
                slots[target].append(unit)
                split_of[unit] = target
            moved.append(unit)
    return [np.array([u for u in s if u is not None], dtype=int) for s in slots], np.array(moved, dtype=int)


def _components(frame: pd.DataFrame, keys: list[np.ndarray]) -> np.ndarray:
    """Row groups joined by any shared key (rows sharing a group value, a near-duplicate group or a text),
    numbered in order of first row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(frame)
    left, right = [], []
    for key in keys:
        first = pd.Series(np.arange(n)).groupby(key).transform("first").to_numpy()
        left.append(first)
        right.append(np.arange(n))
    graph = coo_matrix((np.ones(n * len(keys)), (np.concatenate(left), np.concatenate(right))), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels, sort=False)[0]


def _require_column(frame: pd.DataFrame, column: str | None, setting: str, strategy: str, hint: str,
                    source: str) -> None:
    """The column a split strategy needs: a ConfigError when it is not set, a SplitError when the data lacks it."""
    if not column:
        raise ConfigError(f"split.strategy={strategy} needs split.{setting} ({hint})")
    if column not in frame.columns:
        raise SplitError(f"split.{setting} {column!r} is not a column of {source}; "
                         f"its columns are {[c for c in frame.columns if c != 'row']}")


def _split_by_group(frame, group_column, fractions, seed, stratify, task, near, source) -> list[np.ndarray]:
    _require_column(frame, group_column, "group_column", "group", "e.g. a user or document id column", source)
    values = frame[group_column]
    missing = values.isna() | (values.astype(str).str.strip() == "")
    if missing.any():
        examples = ", ".join(f"row={r}" for r in _row_ids(frame)[missing.to_numpy()][:EXAMPLE_ROWS])
        raise SplitError(f"{int(missing.sum())} rows of {source} have no {group_column!r} (split.group_column), "
                         f"e.g. {examples}; every row needs a group to be split by group")
    keys = [pd.factorize(values.astype(str))[0]]
    if near is not None:
        keys.append(near.groups)
    if task in GENERATIVE_TASKS:
        keys.append(pd.factorize(pd.Series(duplicate_keys(list(frame["text"]))))[0])  # one input's references together
    unit_of_row = _components(frame, keys)
    units = unit_of_row.max() + 1
    if units < 3:
        raise SplitError(f"a group split needs at least 3 groups, {source} has {units} (split.group_column "
                         f"{group_column!r}{', near-duplicates merged' if near is not None else ''})")
    if task == "classification" and stratify:
        strata = pd.factorize(frame["label"])[0]
    else:
        strata = np.zeros(len(frame), dtype=int)
    counts = np.zeros((units, strata.max() + 1))
    np.add.at(counts, (unit_of_row, strata), 1)
    sizes = counts.sum(axis=1)
    targets = np.array(_holdout_sizes(len(frame), fractions), dtype=float)
    remaining = counts.sum(axis=0)[None, :] * targets[:, None] / len(frame)  # rows of each stratum each split wants
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(units)
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]  # largest first, ties in seeded random order
    split_of = np.empty(units, dtype=int)
    for unit in order:
        fill = np.minimum(counts[unit][None, :], np.clip(remaining, 0, None)).sum(axis=1)
        share_left = remaining.sum(axis=1) / np.maximum(targets, 1)
        best = max(range(3), key=lambda s: (round(fill[s], 9), share_left[s], -s))
        split_of[unit] = best
        remaining[best] -= counts[unit]
    for empty in (s for s in range(3) if not (split_of == s).any()):
        # A few large groups can fill train alone: give the empty split the smallest group of the fullest split.
        donor = np.bincount(split_of, minlength=3).argmax()
        candidates = np.flatnonzero(split_of == donor)
        split_of[candidates[np.argmin(sizes[candidates])]] = empty
    return [_rows_of_units(unit_of_row, shuffled[split_of[shuffled] == s]) for s in range(3)]


def time_order(frame: pd.DataFrame, time_column: str | None, source: str = "the data") -> np.ndarray:
    """The time column as sortable floats: numbers as they are, else timestamps parsed by pandas (UTC seconds).

    `SplitError` names the column when it is missing and the rows whose value is not a time.
    """
    _require_column(frame, time_column, "time_column", "time", "a timestamp column", source)
    raw = frame[time_column]
    numbers = pd.to_numeric(raw, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=float)
    parsed = pd.to_datetime(raw.astype("string"), errors="coerce", utc=True, format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        examples = "; ".join(f"row={r}, {time_column}={v!r}" for r, v in
                             list(zip(_row_ids(frame)[bad], raw[bad]))[:EXAMPLE_ROWS])
        raise SplitError(f"{int(bad.sum())} of {len(frame)} values of split.time_column {time_column!r} in {source} "
                         f"are not timestamps, e.g. {examples}. Use ISO 8601 (2024-05-01T12:00:00Z) or numbers.")
    return ((parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()).to_numpy(dtype=float)


def _split_by_time(frame, times, fractions, near, time_column, ngram) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Cut the time-sorted frame at the fractions, never between two rows with the same time."""
    from tuneline.text_checks import similarity

    n = len(frame)
    train_rows, validation_rows, _ = _holdout_sizes(n, fractions)

    def after_ties(cut: int) -> int:
        while 0 < cut < n and times[cut] == times[cut - 1]:
            cut += 1
        return cut

    first_cut = after_ties(train_rows)
    second_cut = after_ties(max(first_cut, train_rows + validation_rows))
    if first_cut == 0 or second_cut <= first_cut or second_cut >= n:
        raise SplitError(f"a time split by {time_column!r} needs rows at three or more distinct times in the right "
                         f"places: after keeping equal times together, train/validation/test would have "
                         f"{first_cut}/{second_cut - first_cut}/{n - second_cut} rows. Add data or use another strategy.")
    split_of = np.repeat([0, 1, 2], [first_cut, second_cut - first_cut, n - second_cut])
    keep = np.ones(n, dtype=bool)
    reasons: list[str] = []
    if near is not None:
        # Sorted by time, a group's first row is its oldest: members in a later split are near copies of the past.
        first = pd.Series(np.arange(n)).groupby(near.groups).transform("first").to_numpy()
        names = ("train", "validation", "test")
        rows, texts = _row_ids(frame), frame["text"].to_numpy(dtype=object)
        for i in np.flatnonzero(split_of > split_of[first]):
            keep[i] = False
            reasons.append(f"near-duplicate of row {rows[first[i]]} in {names[split_of[first[i]]]} "
                           f"(similarity {similarity(texts[first[i]], texts[i], ngram):.2f}); a time split "
                           f"cannot move it back into the past")
    removed = frame[~keep].assign(reason=reasons)
    return [np.flatnonzero((split_of == s) & keep) for s in range(3)], removed


MAX_TARGET_BINS = 10


def target_bins(values: np.ndarray, min_rows: int) -> np.ndarray | None:
    """Quantile-bin ids of a regression target, each bin holding at least `min_rows` values.

    The most bins (up to `MAX_TARGET_BINS`) that satisfy that; None when fewer than two do
    (too few rows, or one value holding most of the data).
    """
    for count in range(min(MAX_TARGET_BINS, len(values) // min_rows), 1, -1):
        bins = np.asarray(pd.qcut(values, count, labels=False, duplicates="drop"), dtype=float)  # ties merge bins
        if np.isnan(bins).any():  # a constant target leaves no bin edges at all
            break
        bins = bins.astype(int)
        sizes = np.bincount(bins)
        if len(sizes) >= 2 and sizes.min() >= min_rows:
            return bins
    log.info("regression target too concentrated for %d-row quantile bins; splitting without stratification", min_rows)
    return None


def check_disjoint(splits: SplitResult) -> None:
    """Raise `SplitError` if any text appears in two splits (it would leak the test set).

    Exact texts: copies that differ in case, punctuation or markup (`duplicate_key`) never reach the split in
    the flow, since cleaning drops them, and under split.near_duplicates=group the split keeps them together."""
    parts = splits.parts()
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(parts[a]["text"]) & set(parts[b]["text"])
            if shared:
                example = sorted(shared)[0]
                raise SplitError(f"{len(shared)} texts appear in both {a} and {b}, e.g. {example!r}")


def check_no_near_duplicates(splits: SplitResult, threshold: float, ngram: int) -> None:
    """Raise `SplitError` naming the pairs if a near-duplicate of a row of one split is in another split."""
    crossing = pairs_across(splits.parts(), threshold, ngram)
    if crossing:
        examples = "; ".join(f"{c['split']} row {c['row']} {c['text']!r} ~ {c['other_split']} row {c['other_row']} "
                             f"{c['other_text']!r} ({c['similarity']:.2f})" for c in crossing[:3])
        raise SplitError(f"{len(crossing)} near-duplicate rows (similarity >= {threshold}) cross splits, e.g. {examples}. "
                         f"Setting: split.near_duplicate_threshold={threshold}, split.near_duplicate_ngram={ngram}")


def split_lineage(splits: SplitResult, config) -> dict[str, str]:
    """Tags saying how the splits were made (with `data.hash.<split>`, they prove which test set a run used).

    `config` is the run's `SplitConfig`. For a time split, the newest training time and the oldest
    test time as written in the data; for a group split, how many groups each split holds.
    """
    tags = {
        "split.strategy": splits.strategy,
        "split.seed": str(config.seed),
        "split.fractions": f"{config.train_fraction}/{config.validation_fraction}/{config.test_fraction}",
        "split.near_duplicates": config.near_duplicates,
        "split.near_duplicate_threshold": str(config.near_duplicate_threshold),
        "split.near_duplicate_groups": str(splits.near_duplicate_groups),
        "rows.dropped_by_split": str(splits.rows_dropped),
    }
    if config.group_column:
        tags["split.group_column"] = config.group_column
        tags |= {f"split.groups.{name}": str(part[config.group_column].nunique())
                 for name, part in splits.parts().items() if config.group_column in part.columns}
    if config.time_column:
        tags["split.time_column"] = config.time_column
        for name, part, pick in (("train_last", splits.train, np.argmax), ("test_first", splits.test, np.argmin)):
            if len(part) and config.time_column in part.columns:
                tags[f"split.time.{name}"] = str(part[config.time_column].iloc[int(pick(time_order(part, config.time_column)))])
    return tags
