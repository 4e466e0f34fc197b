"""Batch inference: score a file with the exported ONNX model that `tuneline serve` runs, chunk by chunk.

    tuneline predict --model models:/NAME@champion INPUT OUTPUT [--text-column text] [--chunk-rows 1024]
                     [--runner local|dask|ray] [--address ADDR] [--output-prefix PREFIX]

INPUT is a CSV, TSV, JSONL or Parquet file, or a folder written by `datasets.Dataset.save_to_disk`; OUTPUT's
suffix picks its format. OUTPUT holds the input's columns and the model's (`label`, `score` for a classifier,
`value` for a regressor, `generated` for a generation model), rows in input order. Memory stays bounded: the
input is streamed in chunks of `chunk_rows` rows, and at most a few chunks are in flight.

Each chunk goes to the served predictor (`tuneline.serving.load_model(...).predict`) as one call, so a row's
answer is the one the server gives for the same chunk of texts. Nothing here imports torch or Prefect.

- A first pass reads only the text column: it counts the rows (the progress bar's total) and refuses a missing
  column, null or non-text values (naming the rows) before any model is loaded or anything is written.
- OUTPUT is written to a hidden temporary file beside it and renamed at the end: a failed or interrupted run
  leaves neither OUTPUT nor the temporary file (a SIGKILL can leave `.OUTPUT.*.tmp`).
- An input column named like an output column is an error, not overwritten or silently renamed:
  `output_prefix` (e.g. `predicted_`) names the output columns `predicted_label`, `predicted_score`.
- CSV and TSV columns are read as text and written back as read (no number or date parsing, "007" stays
  "007"); an empty cell is null. TSV has no quoting (as `data.format=tsv` reads it), so a value holding a tab or a
  newline cannot be written to .tsv.
- runner "dask" / "ray": chunks are scored on an existing cluster (`address`); each worker process loads the
  model once and keeps it. Workers reach the registry through their own MLFLOW_TRACKING_URI / TUNELINE_HOME; a
  worker whose registry holds other files under the same version number is refused. The client reads the input
  and writes OUTPUT in input order.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tuneline.errors import ConfigError, DataLoadError, DataValidationError, RegistrationError, TunelineError

INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = INPUT_FORMATS
RUNNERS = ("local", "dask", "ray")
EXAMPLE_ROWS = 10  # bad rows named in a message; the count says how many there are in all
_CSV_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class PredictionReport:
    """What a run scored: `rows` rows in `chunks` chunks with `model` version `version`, written to `output`."""

    rows: int
    chunks: int
    seconds: float
    output: Path
    model: str
    version: str


# --- the model reference ------------------------------------------------------------------------------------------

def parse_model_uri(model_uri: str) -> tuple[str, str]:
    """`(name, alias or version)` of models:/NAME@alias or models:/NAME/VERSION; ConfigError for anything else."""
    from tuneline.serving import ServeSettings

    try:
        return ServeSettings(model_uri=model_uri).reference()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        raise ConfigError(str(exc).splitlines()[0]) from None


def resolve_model(name: str, reference: str):
    """The registry entry `reference` (alias or version) names; RegistrationError saying what exists instead."""
    from mlflow.exceptions import MlflowException

    from tuneline.registry import store as registry
    from tuneline.settings import public_tracking_uri

    try:
        return registry.resolve_version(name, reference)
    except RegistrationError as exc:
        where = f"the registry at {public_tracking_uri()} (MLFLOW_TRACKING_URI, else TUNELINE_HOME's mlflow.db)"
        try:
            registered = registry.client().get_registered_model(name)
        except MlflowException as missing:
            if missing.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            known = [m.name for m in registry.client().search_registered_models(max_results=20)]
            raise RegistrationError(f"--model: model {name!r} is not registered in {where}; registered models: "
                                    f"{known or 'none'}") from None
        aliases = dict(registered.aliases or {})
        have = (f"its aliases: {', '.join(f'{a} -> version {v}' for a, v in sorted(aliases.items()))}"
                if aliases else "it has no aliases")
        raise RegistrationError(f"--model: {exc} in {where}; {have}") from None


# --- reading ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """An input: where, its format, its columns in order, and its rows (after `scan_input`)."""

    path: Path
    format: str  # csv, tsv, jsonl, parquet, datasets
    columns: tuple[str, ...]
    rows: int
    schema: pa.Schema  # the columns' types (JSONL: unified over the whole file; CSV, TSV: all text)


def input_format(path: Path) -> str:
    """The format of INPUT: a datasets folder, or one its suffix names; DataLoadError for the rest."""
    if not path.exists():
        raise DataLoadError(f"INPUT {path} does not exist")
    if path.is_dir():
        return "datasets"
    fmt = INPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        hint = " (JSON Lines files must be named .jsonl)" if path.suffix.lower() in (".json", ".ndjson") else ""
        raise DataLoadError(f"INPUT {path} has the suffix {path.suffix!r}, which tuneline predict does not read{hint}: "
                            f"it reads {', '.join(INPUT_FORMATS)} files and folders saved by datasets' save_to_disk")
    if path.stat().st_size == 0:
        raise DataLoadError(f"INPUT {path} is empty (0 bytes): there is no header and no rows to score")
    return fmt


def _rows(numbers: list[int], total: int, word: str = "rows") -> str:
    shown = ", ".join(map(str, numbers[:EXAMPLE_ROWS])) + (", ..." if total > EXAMPLE_ROWS else "")
    return f"{total} {word} ({word} {shown})" if total != 1 else f"{word[:-1]} {numbers[0]}"


def _delimited_header(path: Path, delimiter: str) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
        return next(csv.reader(handle, delimiter=delimiter, quoting=quoting), [])


def _delimiter_hint(path: Path, fmt: str, header: list[str]) -> str:
    """Why a CSV/TSV header is one field, when it shows another delimiter (a TSV named .csv)."""
    if len(header) != 1:
        return ""
    for delimiter, name, suffix in (("\t", "tab", ".tsv"), (",", "comma", ".csv"), (";", "semicolon", None)):
        if delimiter in header[0] and delimiter != {"csv": ",", "tsv": "\t"}[fmt]:
            fix = f"rename it to {path.with_suffix(suffix).name}" if suffix else "re-save it comma-separated"
            return (f" Its header is {name}-separated but a .{fmt} file is read "
                    f"{'comma' if fmt == 'csv' else 'tab'}-separated: {fix}.")
    return ""


def _delimited_batches(path: Path, fmt: str, header: list[str], columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    comma = fmt == "csv"
    parse = pacsv.ParseOptions(delimiter="," if comma else "\t", quote_char='"' if comma else False,
                               newlines_in_values=comma)
    # Every column as text: a CSV is written back as it was read, and a text column of digits stays text.
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=True,
                                   null_values=[""], quoted_strings_can_be_null=False, include_columns=columns)
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES), parse_options=parse,
                                convert_options=convert)
        yield from reader
    except pa.ArrowInvalid as exc:
        message = " ".join(str(exc).split())  # one line: the parser quotes the row, newlines and all
        if "invalid UTF8" in message:
            raise DataLoadError(f"INPUT {path} is not UTF-8 text ({message}): re-save it as UTF-8") from None
        raise DataLoadError(f"INPUT {path} does not parse as {fmt.upper()}: {message}."
                            f"{_delimiter_hint(path, fmt, header)}"
                            + (" A text holding a comma, quote or newline must be quoted." if comma else
                               " A TSV value cannot hold a tab or a newline.")) from None


def _dataset_files(path: Path) -> list[Path]:
    """The arrow files of a folder written by `Dataset.save_to_disk`, in order."""
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise DataLoadError(f"INPUT {path} is a DatasetDict with splits {splits}: pass one split's folder, e.g. "
                            f"{path / (splits[0] if splits else 'train')}")
    state = path / "state.json"
    if not state.is_file():
        raise DataLoadError(f"INPUT {path} is a folder but not a dataset saved by datasets' save_to_disk (it has no "
                            f"state.json); tuneline predict reads such folders and {', '.join(INPUT_FORMATS)} files")
    return [path / entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]


def _dataset_batches(path: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    for file in _dataset_files(path):
        # save_to_disk writes the Arrow IPC stream format; memory-mapped, a batch is read only when used. The map
        # is not closed here: batches of this file may still be waiting to be rebatched with the next file's.
        for batch in pa.ipc.open_stream(pa.memory_map(str(file))):
            yield batch.select(columns) if columns else batch


def _parquet_batches(path: Path, columns: list[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)
    except pa.ArrowInvalid as exc:
        raise DataLoadError(f"INPUT {path} is not a readable Parquet file: {exc}") from None


def _arrow_schema(path: Path, fmt: str) -> pa.Schema:
    """The schema of a Parquet file or datasets folder, from their metadata."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except pa.ArrowInvalid as exc:
            raise DataLoadError(f"INPUT {path} is not a readable Parquet file: {exc}") from None
        return parquet.schema_arrow
    files = _dataset_files(path)
    with pa.memory_map(str(files[0])) as mapped:
        return pa.ipc.open_stream(mapped).schema


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; DataLoadError naming the first line that is not an object."""
    with path.open(encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataLoadError(f"INPUT {path} line {number} is not valid JSON ({exc.msg} at column "
                                        f"{exc.colno}): each line of a .jsonl file must be one JSON object") from None
                if not isinstance(record, dict):
                    raise DataLoadError(f"INPUT {path} line {number} holds a JSON {type(record).__name__}, not an "
                                        "object with named fields (one object per line)")
                yield number, record
        except UnicodeDecodeError as exc:
            raise DataLoadError(f"INPUT {path} is not UTF-8 text ({exc}): re-save it as UTF-8") from None


def _jsonl_table(path: Path, records: list[tuple[int, dict]], fields: list[str], schema: pa.Schema | None) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name in fields:
        values = [record.get(name) for _, record in records]
        try:
            columns[name] = pa.array(values, type=schema.field(name).type if schema is not None else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataLoadError(f"INPUT {path} lines {records[0][0]}-{records[-1][0]}: field {name!r} mixes kinds of "
                                f"values ({exc}); each field of a .jsonl file must hold one kind (text, number, ...) "
                                "to be written as a table") from None
    return pa.table(columns)


def _jsonl_chunks(path: Path, chunk_rows: int, fields: list[str], schema: pa.Schema | None,
                  ) -> Iterator[tuple[list[tuple[int, dict]], pa.Table | None]]:
    """(records with their line numbers, their table) per chunk; the table only when `fields` are given."""
    pending: list[tuple[int, dict]] = []
    for item in _jsonl_records(path):
        pending.append(item)
        if len(pending) == chunk_rows:
            yield pending, _jsonl_table(path, pending, fields, schema) if fields else None
            pending = []
    if pending:
        yield pending, _jsonl_table(path, pending, fields, schema) if fields else None


def _rebatched(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last one shorter) from batches of any size, in order."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def _missing_column(path: Path, text_column: str, columns: list[str], hint: str = "") -> DataLoadError:
    close = difflib.get_close_matches(text_column, columns, n=1, cutoff=0.6)
    guess = f" Did you mean --text-column {close[0]}?" if close else ""
    return DataLoadError(f"INPUT {path} has no column {text_column!r} (--text-column names the column of texts); "
                         f"its columns: {columns}.{guess}{hint}")


def _text_problems(texts: pa.ChunkedArray | pa.Array, first_row: int) -> list[int]:
    """Row numbers (counting from 1) of null values, `first_row` being the number of the chunk's first row."""
    nulls = texts.is_null()
    if not pc.any(nulls).as_py():
        return []
    import numpy as np

    return [first_row + int(i) for i in np.flatnonzero(nulls.to_numpy(zero_copy_only=False))]


def _as_text(texts: pa.ChunkedArray, path: Path, text_column: str) -> pa.ChunkedArray:
    """The text column as strings (a dictionary-encoded one decoded); DataValidationError if it holds other values."""
    kind = texts.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise DataValidationError(f"INPUT {path}: column {text_column!r} holds {texts.type} values, not text "
                                  "(--text-column names the column of texts)",
                                  [{"expectation": "text column holds strings", "column": text_column,
                                    "type": str(texts.type)}])
    return texts.cast(pa.string()) if kind != texts.type else texts


def scan_input(path: Path, text_column: str, chunk_rows: int) -> Source:
    """Read INPUT's text column once: its columns and rows, or a typed error naming what is wrong and where."""
    fmt = input_format(path)
    bad: list[int] = []
    bad_count, rows, word = 0, 0, "rows"
    if fmt in ("csv", "tsv"):
        header = _delimited_header(path, "," if fmt == "csv" else "\t")
        hint = _delimiter_hint(path, fmt, header)
        if len(set(header)) != len(header):
            repeated = sorted({name for name in header if header.count(name) > 1})
            raise DataLoadError(f"INPUT {path}: its header repeats the column(s) {repeated}; name each column once")
        if text_column not in header:
            raise _missing_column(path, text_column, header, hint)
        columns = header
        schema = pa.schema([(name, pa.string()) for name in header])
        batches = _delimited_batches(path, fmt, header, [text_column])
    elif fmt == "jsonl":
        fields: dict[str, None] = {}  # every field of every line, in order of first appearance
        word = "lines"
        others: pa.Schema | None = None  # the other fields' types over the whole file
        for records, _ in _jsonl_chunks(path, chunk_rows, [], None):
            chunk_fields: dict[str, None] = {}
            for number, record in records:
                chunk_fields.update(dict.fromkeys(record))
                if not isinstance(record.get(text_column), str):
                    bad_count += 1
                    if len(bad) < EXAMPLE_ROWS:
                        bad.append(number)
            fields.update(chunk_fields)
            rows += len(records)
            if bad_count:
                continue  # the rows are refused below; their other fields' types no longer matter
            # A field null in the first chunk and text in a later one is text: the types are unified over the file.
            table = _jsonl_table(path, records, [f for f in chunk_fields if f != text_column], None)
            try:
                others = table.schema if others is None else pa.unify_schemas([others, table.schema],
                                                                              promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise DataLoadError(f"INPUT {path}: a field holds different kinds of values on different lines "
                                    f"({exc}); each field of a .jsonl file must hold one kind") from None
        if rows and text_column not in fields:
            raise _missing_column(path, text_column, list(fields))
        columns = list(fields)
        schema = pa.schema([pa.field(text_column, pa.string()) if name == text_column or others is None
                            else others.field(name) for name in columns])
        batches = iter(())
    else:
        schema = _arrow_schema(path, fmt)
        columns = schema.names
        if text_column not in columns:
            raise _missing_column(path, text_column, columns)
        batches = (_parquet_batches(path, [text_column], chunk_rows) if fmt == "parquet"
                   else _dataset_batches(path, [text_column]))
    for batch in batches:
        texts = _as_text(pa.chunked_array([batch.column(0)]), path, text_column)
        found = _text_problems(texts, rows + 1)
        bad_count += len(found)
        bad.extend(found[: EXAMPLE_ROWS - len(bad)])
        rows += batch.num_rows
    if bad_count:
        counted = "counting from 1 after the header" if fmt in ("csv", "tsv") else (
            "line numbers of the file" if fmt == "jsonl" else "counting from 1")
        what = "empty or null" if fmt in ("csv", "tsv") else ("missing, null or not a string" if fmt == "jsonl"
                                                              else "null")
        raise DataValidationError(
            f"INPUT {path}: column {text_column!r} (--text-column) is {what} in {_rows(bad, bad_count, word)} "
            f"({counted}); every row needs a text to score: fill or drop those rows",
            [{"expectation": "text is a string", "column": text_column, "unexpected_count": bad_count,
              word: bad}])
    if not rows:
        raise DataLoadError(f"INPUT {path} holds no rows to score (its columns: {columns})")
    return Source(path, fmt, tuple(columns), rows, schema)


def read_chunks(source: Source, chunk_rows: int) -> Iterator[pa.Table]:
    """INPUT's rows, all columns, in tables of `chunk_rows` rows, in order."""
    if source.format in ("csv", "tsv"):
        yield from _rebatched(_delimited_batches(source.path, source.format, list(source.columns), None), chunk_rows)
    elif source.format == "jsonl":
        for _, table in _jsonl_chunks(source.path, chunk_rows, list(source.columns), source.schema):
            yield table
    elif source.format == "parquet":
        yield from _rebatched(_parquet_batches(source.path, None, chunk_rows), chunk_rows)
    else:
        yield from _rebatched(_dataset_batches(source.path, None), chunk_rows)


# --- writing ------------------------------------------------------------------------------------------------------

def output_format(output: Path, input_path: Path) -> str:
    """The format OUTPUT's suffix names; ConfigError for an unknown suffix, a missing folder, or OUTPUT = INPUT."""
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ConfigError(f"OUTPUT {output} has the suffix {output.suffix!r}: its suffix picks the format, one of "
                          f"{', '.join(OUTPUT_FORMATS)}")
    if not output.parent.is_dir():
        raise ConfigError(f"OUTPUT {output}: its folder {output.parent} does not exist; create it first "
                          "(tuneline predict creates no folders)")
    if output.is_dir():
        raise ConfigError(f"OUTPUT {output} is a folder; name a file ({', '.join(OUTPUT_FORMATS)})")
    same = output.resolve() == input_path.resolve() or (
        output.exists() and input_path.exists() and os.path.samefile(output, input_path))
    if same:
        raise ConfigError(f"OUTPUT {output} is INPUT: the input is read while the output is written; write the "
                          "scores to another file")
    return fmt


def check_columns_fit(source: Source, output: Path, fmt: str) -> None:
    """ConfigError when INPUT has columns OUTPUT's format cannot hold (lists or records in a CSV or TSV)."""
    nested = [f"{field.name} ({field.type})" for field in source.schema if pa.types.is_nested(field.type)]
    if nested and fmt in ("csv", "tsv"):
        raise ConfigError(f"OUTPUT {output}: INPUT's column(s) {nested} hold lists or records, which {fmt.upper()} "
                          "cannot hold: write .jsonl or .parquet")


class _Writer:
    """OUTPUT's rows in one format, chunk by chunk; the first chunk fixes the columns (and Parquet's types)."""

    def __init__(self, path: Path, fmt: str, first: pa.Table, output: Path):
        self.path, self.format, self.schema, self.output = path, fmt, first.schema, output
        self.columns = first.column_names
        self.rows = 0
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.parquet = pq.ParquetWriter(path, first.schema)
        else:
            self.handle = path.open("w", encoding="utf-8", newline="")
            if fmt in ("csv", "tsv"):
                self.csv = csv.writer(self.handle, delimiter="," if fmt == "csv" else "\t",
                                      lineterminator="\n", **({} if fmt == "csv" else
                                                              {"quoting": csv.QUOTE_NONE, "quotechar": None}))
                self.csv.writerow(self.columns)

    def write(self, table: pa.Table) -> None:
        if self.format == "parquet":
            try:
                table = table.select(self.columns).cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
                raise ConfigError(f"OUTPUT {self.output}: rows {self.rows + 1}-{self.rows + table.num_rows} do not "
                                  f"fit the column types of the first rows ({exc}); a Parquet column holds one type: "
                                  "write .jsonl instead") from None
            self.parquet.write_table(table)
        elif self.format == "jsonl":
            for row in table.to_pylist():
                self.handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        else:
            for number, row in enumerate(table.select(self.columns).to_pylist(), start=self.rows + 1):
                values = ["" if value is None else value for value in row.values()]
                if self.format == "tsv":
                    for name, value in zip(self.columns, values):
                        if isinstance(value, str) and ("\t" in value or "\n" in value or "\r" in value):
                            raise ConfigError(f"OUTPUT {self.output}: row {number}, column {name!r} holds a tab or "
                                              "a newline, which a TSV value cannot hold: write .csv, .jsonl or "
                                              ".parquet")
                self.csv.writerow(values)
        self.rows += table.num_rows

    def close(self) -> None:
        if self.format == "parquet":
            self.parquet.close()
        else:
            self.handle.close()


# --- runners: where chunks are scored -----------------------------------------------------------------------------

class _Runner:
    """Scores chunks somewhere: `submit(texts)` starts one, `result(handle)` waits for its predictions."""

    in_flight = 1

    def submit(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def result(self, handle: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def cancel(self, handles: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass


class _LocalRunner(_Runner):
    """One model in this process; chunks run on one thread per core, one onnxruntime thread each (two one-thread
    calls on two cores ran 1.4-1.7x the rows/s of one two-thread call, benchmarks/README.md)."""

    def __init__(self, name: str, version: str):
        import tempfile
        from concurrent.futures import ThreadPoolExecutor

        from tuneline.serving import available_cores, load_model

        self.scratch = tempfile.TemporaryDirectory(prefix="tuneline-predict-")
        self.model = load_model(name, version, threads=1, scratch=Path(self.scratch.name))
        cores = available_cores()
        self.executor = ThreadPoolExecutor(max_workers=cores, thread_name_prefix="tuneline-predict")
        self.in_flight = 2 * cores  # the next chunks wait ready while the current ones run

    def submit(self, texts: list[str]):
        return self.executor.submit(self.model.predict, texts, {}, None)

    def result(self, handle) -> list[dict[str, Any]]:
        return handle.result()

    def cancel(self, handles) -> None:
        for handle in handles:
            handle.cancel()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.scratch.cleanup()


# A worker process's models, loaded on its first chunk and kept: (name, version, registry) -> (source, model)
_WORKER_MODELS: dict[tuple[str, str, str], tuple[str, Any]] = {}
_WORKER_LOCK = threading.Lock()


def score_on_worker(name: str, version: str, source: str, texts: list[str]) -> list[dict[str, Any]]:
    """A cluster worker's part: the predictions for `texts`, with the model this process loaded once.

    `source` is where the client's registry keeps the version's files: a worker whose own registry
    (MLFLOW_TRACKING_URI / TUNELINE_HOME in its environment) says otherwise is refused rather than scoring with
    another model of the same name and number."""
    import socket

    from tuneline.settings import public_tracking_uri, tracking_uri

    key = (name, version, tracking_uri())
    try:
        with _WORKER_LOCK:  # a worker's threads share one model: the first loads it, the rest wait for it
            if key not in _WORKER_MODELS:
                from tuneline.registry import store as registry
                from tuneline.serving import load_model

                found = registry.resolve_version(name, version).source
                if found != source:
                    raise ConfigError(f"version {version} of {name!r} in this worker's registry is stored at {found}, "
                                      f"the client's at {source}: point the workers at the client's registry")
                # One onnxruntime thread per call: the worker runs one chunk per thread of its own.
                _WORKER_MODELS[key] = (found, load_model(name, version, threads=1))
        return _WORKER_MODELS[key][1].predict(texts, {}, None)
    except TunelineError as exc:
        try:
            located = type(exc)(f"on worker {socket.gethostname()} (pid {os.getpid()}), whose registry is "
                                f"{public_tracking_uri()} (workers read MLFLOW_TRACKING_URI / TUNELINE_HOME from "
                                f"their own environment): {exc}")
        except TypeError:  # an error that takes more than a message
            raise exc from None
        raise located from None


class _DaskRunner(_Runner):
    def __init__(self, name: str, version: str, source: str, address: str):
        try:
            from dask.distributed import Client
        except ImportError:
            raise ConfigError("--runner dask needs dask.distributed: pip install 'tuneline[dask]'") from None
        try:
            self.client = Client(address, timeout="20s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"--address {address}: could not reach a Dask scheduler there ({exc})") from None
        threads = sum(self.client.nthreads().values())
        if not threads:
            self.client.close()
            raise ConfigError(f"--address {address}: the Dask cluster there has no workers")
        self.arguments = (name, version, source)
        self.in_flight = 2 * threads

    def submit(self, texts: list[str]):
        return self.client.submit(score_on_worker, *self.arguments, texts, pure=False)

    def result(self, handle) -> list[dict[str, Any]]:
        return handle.result()

    def cancel(self, handles) -> None:
        if handles:
            self.client.cancel(handles)

    def close(self) -> None:
        self.client.close()  # the client only: the cluster is the user's


class _RayRunner(_Runner):
    def __init__(self, name: str, version: str, source: str, address: str):
        try:
            import ray
        except ImportError:
            raise ConfigError("--runner ray needs the ray package, which is not installed: "
                              "pip install 'tuneline[ray]'") from None
        self.ray = ray
        self.connected = not ray.is_initialized()  # a caller's own Ray session is left as it was
        ray.init(address=address, ignore_reinit_error=True, logging_level="WARNING")
        self.remote = ray.remote(num_cpus=1)(score_on_worker)
        self.arguments = (name, version, source)
        self.in_flight = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))

    def submit(self, texts: list[str]):
        return self.remote.remote(*self.arguments, texts)

    def result(self, handle) -> list[dict[str, Any]]:
        return self.ray.get(handle)

    def cancel(self, handles) -> None:
        for handle in handles:
            self.ray.cancel(handle)

    def close(self) -> None:
        if self.connected:
            self.ray.shutdown()  # disconnects this driver; the cluster stays


def _output_table(table: pa.Table, predictions: list[dict[str, Any]], prefix: str) -> pa.Table:
    for column in predictions[0]:
        table = table.append_column(prefix + column, pa.array([p[column] for p in predictions]))
    return table


# --- the whole run ------------------------------------------------------------------------------------------------

def predict_file(
    model_uri: str,
    input_path: Path | str,
    output_path: Path | str,
    text_column: str = "text",
    chunk_rows: int = 1024,
    runner: str = "local",
    address: str | None = None,
    output_prefix: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> PredictionReport:
    """Score INPUT's `text_column` with the model `model_uri` names and write OUTPUT (input columns + predictions).

    `progress(rows_done, rows_total)` is called before the first chunk and after each one. Raises ConfigError
    (options, OUTPUT), DataLoadError / DataValidationError (INPUT) or RegistrationError (the model) before
    anything is written; on any failure, OUTPUT and its temporary file are left absent (an existing OUTPUT as it was).
    """
    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    name, reference = parse_model_uri(model_uri)
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    if runner not in RUNNERS:
        raise ConfigError(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    if runner == "local" and address:
        raise ConfigError("--address names a Dask or Ray cluster: give it with --runner dask or --runner ray")
    if runner != "local" and not address:
        raise ConfigError(f"--runner {runner} needs --address, the cluster to use (e.g. "
                          f"{'tcp://scheduler:8786' if runner == 'dask' else 'ray://head:10001'})")
    input_format(input_path)
    fmt = output_format(output_path, input_path)
    source = scan_input(input_path, text_column, chunk_rows)
    check_columns_fit(source, output_path, fmt)
    entry = resolve_model(name, reference)
    version = str(entry.version)
    runners = {"local": lambda: _LocalRunner(name, version),
               "dask": lambda: _DaskRunner(name, version, entry.source, address),
               "ray": lambda: _RayRunner(name, version, entry.source, address)}
    work = runners[runner]()
    temporary = output_path.parent / f".{output_path.name}.{secrets.token_hex(4)}.tmp"
    writer: _Writer | None = None
    pending: deque[tuple[pa.Table, Any]] = deque()
    chunks = done = 0
    try:

        def check_columns(texts: list[str]) -> None:
            """One text scored first says which columns the model answers with: a clash is refused before the
            first chunk is scored."""
            outputs = [output_prefix + column for column in work.result(work.submit(texts[:1]))[0]]
            clash = sorted(set(source.columns) & set(outputs))
            if clash:
                raise ConfigError(
                    f"INPUT {input_path} already has the column(s) {clash}, which the predictions would take: pass "
                    f"--output-prefix (e.g. --output-prefix predicted_ writes "
                    f"{', '.join('predicted_' + c[len(output_prefix):] for c in outputs)}), or rename the column(s)")
            if progress:
                progress(0, source.rows)

        def write_oldest() -> None:
            nonlocal writer, done
            table, handle = pending.popleft()
            output = _output_table(table, work.result(handle), output_prefix)
            if writer is None:
                try:
                    writer = _Writer(temporary, fmt, output, output_path)
                except OSError as exc:
                    raise ConfigError(f"OUTPUT {output_path}: cannot write a file in {output_path.parent} "
                                      f"({exc.strerror or exc})") from None
            writer.write(output)
            done += table.num_rows
            if progress:
                progress(done, source.rows)

        for table in read_chunks(source, chunk_rows):
            texts = _as_text(table.column(text_column), input_path, text_column)
            if texts.null_count:  # the file changed since the first pass
                raise DataValidationError(f"INPUT {input_path} changed while it was read: column {text_column!r} "
                                          f"now has nulls in rows {done + 1}-{done + table.num_rows}", [])
            texts = texts.to_pylist()
            if not chunks:
                check_columns(texts)
            pending.append((table, work.submit(texts)))
            chunks += 1
            if len(pending) >= work.in_flight:
                write_oldest()
        while pending:
            write_oldest()
        writer.close()
        writer = None
        os.replace(temporary, output_path)
    except BaseException:
        work.cancel([handle for _, handle in pending])
        if writer is not None:
            try:
                writer.close()
            except Exception:  # the error that got us here is the one to report
                pass
        temporary.unlink(missing_ok=True)
        raise
    finally:
        work.close()
    return PredictionReport(done, chunks, time.perf_counter() - started, output_path, name, version)
