"""Ingest, clean and split labelled text.

Every frame that leaves `load_dataset` has the columns `row` (the row's
position in the source, for error messages), `text` and `label` (both str),
plus whatever other columns the source had.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from tuneline.errors import DataLoadError, SplitError

BUILTIN_SAMPLE = "builtin:sample-reviews"
BUILTIN_SEQ2SEQ_SAMPLE = "builtin:sample-seq2seq"
CANONICAL_COLUMNS = ("row", "text", "label")


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
    labels: tuple[str, ...]

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


def load_dataset(path: str, text_column: str, label_column: str, fmt: str = "auto") -> IngestResult:
    """Read labelled text into the canonical frame and hash its content.

    Raises `DataLoadError` naming the file and the missing column.
    """
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


def clean_dataset(frame: pd.DataFrame) -> CleanResult:
    """Clean every text, then drop rows left empty and exact duplicates (first kept).

    Dropped rows are returned with a `reason`, never discarded silently.
    """
    cleaned = frame.copy()
    cleaned["text"] = frame["text"].map(lambda t: clean_text(t) if isinstance(t, str) else t)
    changed = int((cleaned["text"] != frame["text"]).sum())
    empty = cleaned["text"].isna() | (cleaned["text"].str.len() == 0)
    duplicate = cleaned["text"].duplicated(keep="first") & ~empty
    first_row = cleaned[~empty].groupby("text")["row"].transform("first")
    dropped = pd.concat(
        [
            frame[empty].assign(reason="empty after cleaning"),
            frame[duplicate].assign(reason="duplicate of row " + first_row[duplicate].astype(str)),
        ]
    ).sort_values("row")
    kept = cleaned[~empty & ~duplicate].reset_index(drop=True)
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
) -> SplitResult:
    """Seeded train/validation/test split, stratified by label, with no text in two splits.

    Raises `SplitError` when a label has too few rows to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    if len(frame) < 3:
        raise SplitError(f"need at least 3 rows to split into train/validation/test, got {len(frame)}")
    if stratify:
        counts = frame["label"].value_counts()
        smallest = min(train_fraction, validation_fraction, test_fraction)
        needed = max(3, int(1 / smallest + 0.999))
        too_few = {str(k): int(v) for k, v in counts.items() if v < needed}
        if too_few:
            raise SplitError(
                f"stratified split needs at least {needed} rows per label for fractions "
                f"{train_fraction}/{validation_fraction}/{test_fraction}; these labels have fewer: {too_few}. "
                "Add data, merge rare labels, or set split.stratify=false."
            )
    holdout = validation_fraction + test_fraction
    train, rest = train_test_split(
        frame, test_size=holdout, random_state=seed, stratify=frame["label"] if stratify else None
    )
    validation, test = train_test_split(
        rest, test_size=test_fraction / holdout, random_state=seed, stratify=rest["label"] if stratify else None
    )
    result = SplitResult(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True),
        labels=labels,
    )
    check_disjoint(result)
    return result


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
