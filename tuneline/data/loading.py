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
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tuneline.kinds import kind
from tuneline.errors import DataLoadError, DataValidationError
from tuneline.data.text import (
    label_respellings,
)

log = logging.getLogger(__name__)

BUILTIN_SAMPLE = "builtin:sample-reviews"
BUILTIN_SEQ2SEQ_SAMPLE = "builtin:sample-seq2seq"
BUILTIN_CAUSAL_SAMPLE = "builtin:sample-causal"
BUILTIN_MULTILABEL_SAMPLE = "builtin:sample-multilabel"
BUILTIN_RATINGS_SAMPLE = "builtin:sample-ratings"
CANONICAL_COLUMNS = ("row", "text", "label")
EXAMPLE_ROWS = 5  # bad rows quoted in an error message


def check_task(task: str) -> str:
    """The task, if tuneline knows it; else `ConfigError` naming the known ones."""
    kind(task)
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


def resolve_data_path(path: str) -> Path:
    """Map `builtin:sample-reviews`, `-seq2seq`, `-causal`, `-multilabel`, `-ratings` to the shipped CSVs; else a path."""
    if path.startswith("builtin:"):
        from tuneline.data.samples import (
            CAUSAL_SAMPLE_PATH, MULTILABEL_SAMPLE_PATH, RATINGS_SAMPLE_PATH, SAMPLE_PATH, SEQ2SEQ_SAMPLE_PATH,
        )

        shipped = {BUILTIN_SAMPLE: SAMPLE_PATH, BUILTIN_SEQ2SEQ_SAMPLE: SEQ2SEQ_SAMPLE_PATH,
                   BUILTIN_CAUSAL_SAMPLE: CAUSAL_SAMPLE_PATH, BUILTIN_MULTILABEL_SAMPLE: MULTILABEL_SAMPLE_PATH,
                   BUILTIN_RATINGS_SAMPLE: RATINGS_SAMPLE_PATH}
        if path not in shipped:
            raise DataLoadError(f"unknown built-in dataset {path!r}; the built-in ones are {', '.join(map(repr, shipped))}")
        return shipped[path]
    return Path(path).expanduser()


def existing_data_path(path: str) -> Path:
    """`resolve_data_path`, or `DataLoadError` when nothing is there: what a run checks before it starts."""
    resolved = resolve_data_path(path)
    if not resolved.exists():
        raise DataLoadError(f"data file {missing_path_problem(resolved)} (data.path={path!r})")
    return resolved


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
    if role == "label_column" and kind(task).has_classes and pd.api.types.is_float_dtype(values):
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
    if role == "label_column" and kind(task).has_classes and pd.api.types.is_float_dtype(values):
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
    resolved = existing_data_path(path)
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
    if kind(task).numeric:
        frame["label"] = frame["label"].map(canonical_number)
    relabelled, rows_relabelled = {}, 0
    if kind(task).has_classes and normalize_labels:
        relabelled = label_respellings(frame["label"], labels or ())
        if relabelled:
            rows_relabelled = int(frame["label"].isin(list(relabelled)).sum())
            frame["label"] = frame["label"].map(lambda label: relabelled.get(label, label))
            log.info("data.normalize_labels=true: %d rows relabelled (%s)", rows_relabelled,
                     ", ".join(f"{old!r} -> {new!r}" for old, new in list(relabelled.items())[:EXAMPLE_ROWS]))
    frame = frame.reset_index(drop=True)
    return IngestResult(frame=frame, source=str(resolved), content_hash=file_hash(resolved), rows=len(frame),
                        relabelled=relabelled, rows_relabelled=rows_relabelled)


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
