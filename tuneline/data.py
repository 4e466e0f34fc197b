"""Ingest, clean and split labelled text, for every task type.

Every frame that leaves `load_dataset` has the columns `row` (the row's
position in the source, for error messages), `text` and `label` (both str),
plus whatever other columns the source had. What `label` holds depends on the
task: a class name (classification), a number written as text (regression,
canonicalised at ingest), or the target text to generate (seq2seq, causal_lm).
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd

from tuneline.config import GENERATIVE_TASKS, Task
from tuneline.errors import ConfigError, DataLoadError, DataValidationError, SplitError

log = logging.getLogger(__name__)

BUILTIN_SAMPLE = "builtin:sample-reviews"
BUILTIN_SEQ2SEQ_SAMPLE = "builtin:sample-seq2seq"
CANONICAL_COLUMNS = ("row", "text", "label")
TASKS: tuple[str, ...] = get_args(Task)
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
    content_hash: str
    rows: int


@dataclass(frozen=True)
class CleanResult:
    frame: pd.DataFrame
    dropped: pd.DataFrame  # the dropped rows, with a `reason` column
    rows_in: int
    rows_out: int
    changed: int  # rows whose text the cleaning rewrote

    @property
    def rows_dropped(self) -> int:
        return len(self.dropped)


@dataclass(frozen=True)
class SplitResult:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: tuple[str, ...]  # class names in id order; () for regression and generation tasks

    def parts(self) -> dict[str, pd.DataFrame]:
        """`{"train": ..., "validation": ..., "test": ...}`, in that order."""
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def sizes(self) -> dict[str, int]:
        return {name: len(frame) for name, frame in self.parts().items()}

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
        return pd.read_json(path, lines=True, dtype=False)
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


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the text and label columns, row order included: same data, same hash."""
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
    path: str, text_column: str, label_column: str, fmt: str = "auto", task: str = "classification"
) -> IngestResult:
    """Read labelled text into the canonical frame and hash its content.

    For `regression` the numeric labels are canonicalised (`canonical_number`);
    labels that are not numbers are kept for validation to name. Raises
    `DataLoadError` naming the file and the missing column.
    """
    check_task(task)
    resolved = resolve_data_path(path)
    if not resolved.exists():
        raise DataLoadError(f"data file {resolved} does not exist (data.path={path!r})")
    fmt = _detect_format(resolved) if fmt == "auto" else fmt
    try:
        raw = _read(resolved, fmt)
    except DataLoadError:
        raise
    except Exception as exc:  # the readers raise a dozen types; all mean "unreadable"
        raise DataLoadError(f"could not read {resolved} as {fmt}: {exc}") from exc
    missing = [c for c in (text_column, label_column) if c not in raw.columns]
    if missing:
        raise DataLoadError(
            f"{resolved} has no column {', '.join(map(repr, missing))}; its columns are {list(raw.columns)}. "
            f"Set data.text_column / data.label_column."
        )
    frame = raw.rename(columns={text_column: "text", label_column: "label"})
    if "row" in frame.columns:  # our row number takes the name; keep the user's column beside it
        frame = frame.rename(columns={"row": "source_row"})
    frame.insert(0, "row", range(len(frame)))
    # Labels are names: 0/1 from a CSV and "0"/"1" from JSONL must mean the same class.
    frame["text"] = frame["text"].map(_as_text)
    frame["label"] = frame["label"].map(_as_text)
    if task == "regression":
        frame["label"] = frame["label"].map(canonical_number)
    frame = frame.reset_index(drop=True)
    return IngestResult(frame=frame, source=str(resolved), content_hash=content_hash(frame), rows=len(frame))


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


def clean_dataset(frame: pd.DataFrame, task: str = "classification") -> CleanResult:
    """Clean every input text, then drop rows left empty and duplicates (first kept).

    What counts as a duplicate follows the task:
    - classification: the same text (first row's label kept; the reason names a conflicting label);
    - regression: the same text; the first row keeps the mean of the group's labels;
    - seq2seq, causal_lm: the same text *and* target. One input with several different
      targets is multi-reference data and stays; `split_dataset` keeps such rows together.
    Targets (`label`) are never rewritten for generation tasks: they are what the model
    must learn to write, spacing, case and newlines included; rows with an empty target
    are dropped. Dropped rows are returned with a `reason`, never discarded silently.
    """
    check_task(task)
    cleaned = frame.copy()
    cleaned["text"] = frame["text"].map(lambda t: clean_text(t) if isinstance(t, str) else t)
    changed = int((cleaned["text"] != frame["text"]).sum())
    empty = _is_empty(cleaned["text"])
    reasons = pd.Series("", index=frame.index)
    reasons[empty] = "empty after cleaning"
    if task in GENERATIVE_TASKS:
        no_target = _is_empty(cleaned["label"]) & ~empty
        reasons[no_target] = "empty target"
        empty = empty | no_target
    keys = ["text", "label"] if task in GENERATIVE_TASKS else ["text"]
    candidates = cleaned[~empty]
    duplicate = candidates.duplicated(subset=keys, keep="first").reindex(frame.index, fill_value=False)
    first_row = candidates.groupby(keys, sort=False)["row"].transform("first").reindex(frame.index)
    reasons[duplicate] = "duplicate of row " + first_row[duplicate].astype(int).astype(str)
    if task == "classification":
        first_label = candidates.groupby("text", sort=False)["label"].transform("first").reindex(frame.index)
        conflict = duplicate & (cleaned["label"] != first_label)
        reasons[conflict] = [f"{reason} with label {label!r}; row {first}'s label {kept!r} kept"
                             for reason, label, first, kept in zip(reasons[conflict], cleaned.loc[conflict, "label"],
                                                                   first_row[conflict].astype(int), first_label[conflict])]
    elif task == "regression":
        # Several scores for one text (several annotators, say) estimate one value: the first row keeps their mean.
        values = pd.Series(regression_targets(candidates), index=candidates.index)
        by_text = values.groupby(candidates["text"], sort=False)
        varies = (by_text.transform("nunique") > 1).reindex(frame.index, fill_value=False)
        keeper = varies & ~duplicate
        cleaned.loc[keeper, "label"] = by_text.transform("mean")[keeper[keeper].index].map(lambda v: repr(float(v)))
        reasons[duplicate & varies] += "; labels averaged into it"
    drop = empty | duplicate
    dropped = frame[drop].assign(reason=reasons[drop]).sort_values("row")
    kept = cleaned[~drop].reset_index(drop=True)
    return CleanResult(frame=kept, dropped=dropped.reset_index(drop=True), rows_in=len(frame), rows_out=len(kept), changed=changed)


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
) -> SplitResult:
    """Seeded train/validation/test split with no text in two splits.

    `stratify` means, per task:
    - classification: equal label proportions in every split (`SplitError` when a label
      has too few rows to appear in every split);
    - regression: equal proportions of the target's quantile bins (up to 10), so the
      small test split gets its share of the tails and its MSE is not decided by where
      a few extreme values fell; fewer bins when ties leave some too small, a plain
      shuffle when not even two fit;
    - seq2seq, causal_lm: nothing to stratify on; a plain seeded shuffle of the distinct
      input texts, all rows of one text (its references) landing in the same split.
    `labels` are the class names (classification); other tasks take `()` and their
    `SplitResult.labels` is `()`.
    """
    from sklearn.model_selection import train_test_split

    check_task(task)
    if task != "classification" and labels:
        raise ConfigError(f"data.labels apply to classification only; task {task} was given {list(labels)}")
    if len(frame) < 3:
        raise SplitError(f"need at least 3 rows to split into train/validation/test, got {len(frame)}")
    frame = frame.reset_index(drop=True)  # strata are looked up by index below
    smallest = min(train_fraction, validation_fraction, test_fraction)
    needed = max(3, int(1 / smallest + 0.999))  # rows per stratum for each split to get at least one
    holdout = validation_fraction + test_fraction
    strata: pd.Series | None = None
    if task == "classification" and stratify:
        counts = frame["label"].value_counts()
        too_few = {str(k): int(v) for k, v in counts.items() if v < needed}
        if too_few:
            raise SplitError(
                f"stratified split needs at least {needed} rows per label for fractions "
                f"{train_fraction}/{validation_fraction}/{test_fraction}; these labels have fewer: {too_few}. "
                "Add data, merge rare labels, or set split.stratify=false."
            )
        strata = frame["label"]
    elif task == "regression" and stratify:
        strata = target_bins(regression_targets(frame), needed)
        strata = None if strata is None else pd.Series(strata, index=frame.index)
    if task in GENERATIVE_TASKS:
        train, validation, test = _split_by_text(frame, holdout, test_fraction / holdout, seed)
    else:
        train, rest = train_test_split(frame, test_size=holdout, random_state=seed, stratify=strata)
        validation, test = train_test_split(
            rest, test_size=test_fraction / holdout, random_state=seed,
            stratify=None if strata is None else strata[rest.index],
        )
    result = SplitResult(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True),
        labels=tuple(labels) if task == "classification" else (),
    )
    check_disjoint(result)
    return result


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


def _split_by_text(frame: pd.DataFrame, holdout: float, test_share: float, seed: int):
    """Split the distinct texts, then take every row of each text into its text's split (keeps references together)."""
    from sklearn.model_selection import train_test_split

    texts = frame["text"].drop_duplicates().to_numpy(dtype=object)
    if len(texts) < 3:
        raise SplitError(f"need at least 3 distinct texts to split into train/validation/test, got {len(texts)}")
    train, rest = train_test_split(texts, test_size=holdout, random_state=seed)
    validation, test = train_test_split(rest, test_size=test_share, random_state=seed)

    def rows_of(chosen) -> pd.DataFrame:
        order = pd.Series(range(len(chosen)), index=chosen)  # the shuffled order of the texts
        picked = frame[frame["text"].isin(order.index)]
        return picked.iloc[np.argsort(order[picked["text"]].to_numpy(), kind="stable")]

    return rows_of(train), rows_of(validation), rows_of(test)


def check_disjoint(splits: SplitResult) -> None:
    """Raise `SplitError` if any text appears in two splits (it would leak the test set)."""
    parts = splits.parts()
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(parts[a]["text"]) & set(parts[b]["text"])
            if shared:
                example = sorted(shared)[0]
                raise SplitError(f"{len(shared)} texts appear in both {a} and {b}, e.g. {example!r}")
