"""Measurements built for fine-tuning text: cleaning, duplicates and near-duplicates, PII, label spellings and coverage.

The measurements are plain functions (no Great Expectations, no Prefect);
`tuneline.validation.suite` turns them into expectation outcomes, and
`tuneline.data.splitting` uses the near-duplicate groups to split without leakage.
"""

from __future__ import annotations

import html
import ipaddress
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd



# --- near-duplicates ------------------------------------------------------------------------------------------------

_NUM_PERM = 128


def normalise_text(text: object) -> str:
    """Case-folded, NFKC, punctuation and symbols turned into spaces, whitespace collapsed: what near-duplicates share."""
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return " ".join(text.split())


def shingles(text: str, ngram: int) -> set[str]:
    """The character n-grams of an already normalised text (the whole text when it is shorter than n)."""
    if len(text) <= ngram:
        return {text} if text else set()
    return {text[i : i + ngram] for i in range(len(text) - ngram + 1)}


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def similarity(a: object, b: object, ngram: int = 5) -> float:
    """Jaccard similarity of two texts' normalised character n-grams (1.0: the same text up to case and punctuation)."""
    return _jaccard(shingles(normalise_text(a), ngram), shingles(normalise_text(b), ngram))


def _band_layout(threshold: float, num_perm: int, recall: float = 0.995) -> tuple[int, int]:
    """(bands, rows per band) for LSH: the most rows per band (fewest candidates to confirm) that still make a
    pair exactly at `threshold` a candidate with probability `recall`. Candidates are confirmed with their
    exact similarity, so a lower bar costs time, never a wrong pair; a missed pair would be a leak.
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def _signatures(sets: Sequence[set[str]], num_perm: int, seed: int) -> np.ndarray:
    """MinHash signature of each shingle set: (len(sets), num_perm) uint32.

    The permutations are multiply-shift hashes, (a * x + b) mod 2**64 >> 32 with odd a: uint64
    arithmetic wraps, so numpy computes them without a modulo (5x faster than mod a prime).
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    out = np.full((len(sets), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    chunk = 1000
    with np.errstate(over="ignore"):
        for start in range(0, len(sets), chunk):
            part = sets[start : start + chunk]
            counts = np.array([len(s) for s in part])
            if counts.sum() == 0:
                continue
            hashes = np.fromiter((zlib.crc32(g.encode()) for s in part for g in s), dtype=np.uint64, count=int(counts.sum()))
            values = ((hashes[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)
            nonempty = counts > 0
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
            out[start : start + len(part)][nonempty] = np.minimum.reduceat(values, offsets, axis=0)
    return out


@dataclass(frozen=True)
class NearDuplicates:
    """Near-duplicate texts of one frame, by position (0-based, in the frame's order)."""

    pairs: tuple[tuple[int, int, float], ...]  # (i, j, Jaccard) with i < j; each row paired with its group's first
    groups: np.ndarray  # group id per row: rows that are near-duplicates (transitively) share one
    threshold: float

    @property
    def grouped_rows(self) -> int:
        """Rows that share their group with at least one other row."""
        sizes = np.bincount(self.groups) if len(self.groups) else np.array([], dtype=int)
        return int(sizes[sizes > 1].sum())

    @property
    def group_count(self) -> int:
        sizes = np.bincount(self.groups) if len(self.groups) else np.array([], dtype=int)
        return int((sizes > 1).sum())


def find_near_duplicates(texts: Iterable[object], threshold: float = 0.8, ngram: int = 5,
                         num_perm: int = _NUM_PERM, seed: int = 1) -> NearDuplicates:
    """Pairs of texts whose normalised character n-gram Jaccard similarity is at least `threshold`.

    Texts identical after normalisation are grouped directly; the rest go through
    MinHash with LSH banding (candidates only), and every candidate pair is confirmed
    with its exact Jaccard similarity, so a reported pair is never a false positive.
    Groups are the connected components of the pairs.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    normalised = [normalise_text(t) for t in texts]
    n = len(normalised)
    if n == 0:
        return NearDuplicates((), np.zeros(0, dtype=int), threshold)
    distinct, first_of, inverse = np.unique(np.array(normalised, dtype=object), return_index=True, return_inverse=True)
    edges: dict[tuple[int, int], float] = {}
    # Identical after normalisation: each row joins the first row with that text.
    first_row = first_of[inverse]
    for row in np.flatnonzero(first_row != np.arange(n)):
        edges[(int(first_row[row]), int(row))] = 1.0
    sets = [shingles(t, ngram) for t in distinct]
    if len(distinct) > 1 and threshold < 1.0:
        signatures = _signatures(sets, num_perm, seed)
        bands, rows = _band_layout(threshold, num_perm)
        candidates: set[tuple[int, int]] = set()
        for band in range(bands):
            block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
            keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
            _, bucket = np.unique(keys, return_inverse=True)
            order = np.argsort(bucket, kind="stable")
            bounds = np.flatnonzero(np.diff(bucket[order])) + 1
            for members in np.split(order, bounds):
                if len(members) > 1:
                    members = sorted(int(m) for m in members)
                    candidates.update((x, y) for k, x in enumerate(members) for y in members[k + 1 :])
        for x, y in candidates:
            similarity = _jaccard(sets[x], sets[y])
            if similarity >= threshold:
                a, b = sorted((int(first_of[x]), int(first_of[y])))
                edges[(a, b)] = max(edges.get((a, b), 0.0), similarity)
    if edges:
        left, right = np.array([e[0] for e in edges]), np.array([e[1] for e in edges])
        graph = coo_matrix((np.ones(len(edges)), (left, right)), shape=(n, n))
        _, groups = connected_components(graph, directed=False)
    else:
        groups = np.arange(n)
    # Renumber groups by first row, so ids follow the frame's order (deterministic, readable).
    _, first_in_group, renumbered = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_in_group))
    groups = order[renumbered]
    pairs = tuple(sorted((a, b, round(s, 4)) for (a, b), s in edges.items()))
    return NearDuplicates(pairs, groups.astype(int), threshold)


def pairs_across(frames: dict[str, pd.DataFrame], threshold: float, ngram: int,
                 column: str = "text") -> list[dict[str, object]]:
    """Near-duplicate pairs whose two rows are in different frames (splits): the leakage a split must not have."""
    names = [name for name, frame in frames.items() for _ in range(len(frame))]
    rows = [row for frame in frames.values() for row in (frame["row"] if "row" in frame.columns else range(len(frame)))]
    texts = [text for frame in frames.values() for text in frame[column]]
    found = find_near_duplicates(texts, threshold, ngram)
    # Pairs link each row to one similar row only; two rows of one group in different splits is leakage even
    # when each is closest to a third, so compare each group's members with its first member.
    by_group: dict[int, list[int]] = {}
    for position, group in enumerate(found.groups):
        by_group.setdefault(int(group), []).append(position)
    crossing = []
    for members in by_group.values():
        anchor = members[0]
        for other in members[1:]:
            if names[other] != names[anchor]:
                crossing.append({"split": names[anchor], "row": _plain(rows[anchor]), "other_split": names[other],
                                 "other_row": _plain(rows[other]),
                                 "similarity": round(similarity(texts[anchor], texts[other], ngram), 4),
                                 "text": texts[anchor], "other_text": texts[other]})
    return crossing


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


# --- cleaning ------------------------------------------------------------------------------------------------------

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


# --- the same text ---------------------------------------------------------------------------------------------------


def duplicate_key(text: object) -> str:
    """The one definition of "the same text" in tuneline: the text as cleaning leaves it (`clean_text`:
    markup, URLs and control characters gone), then `normalise_text` (case, punctuation, symbols and spacing).

    Cleaning drops a row whose key repeats an earlier row's, the repeated-rows check counts exactly those rows, the
    label-conflict check groups by it, and the gate's `text_key` is its hash. A text of only punctuation or symbols
    (`(`, an emoji) is compared as cleaning writes it; "" only for a missing or blank text.
    """
    if not isinstance(text, str):
        return ""
    cleaned = clean_text(text)
    return normalise_text(cleaned) or cleaned or text.strip()


def duplicate_keys(texts: Sequence[object], targets: Sequence[object] | None = None) -> list[str]:
    """`duplicate_key` of each text; with `targets` (generation tasks), the target joins the key, compared up to case,
    punctuation and spacing only (targets are never cleaned). "" for a row without text."""
    keys = [duplicate_key(t) for t in texts]
    if targets is not None:
        keys = [f"{k}\x1f{normalise_text(t)}" if k else "" for k, t in zip(keys, targets)]
    return keys


def repeated_rows(texts: Sequence[object], targets: Sequence[object] | None = None, *,
                  keys: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """(position, position of the first row it repeats) for every row whose `duplicate_keys` key equals an earlier
    row's: what cleaning drops as duplicates. Positions are 0-based, in frame order. `keys`: already computed."""
    keys = duplicate_keys(texts, targets) if keys is None else keys
    first: dict[str, int] = {}
    repeats = []
    for position, key in enumerate(keys):
        if not key:
            continue  # empty texts are the not-null and whitespace checks' to report, not repeats of each other
        if key in first:
            repeats.append((position, first[key]))
        first.setdefault(key, position)
    return repeats


# --- PII ------------------------------------------------------------------------------------------------------------

PII_KINDS = ("email", "phone", "card", "ip")
PII_MASKS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "ip": "[IP]"}
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])")
_DATE_LIKE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies (and 90% of random digit strings fail)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_phone(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    groups = re.findall(r"\d+", candidate)
    if not 7 <= len(digits) <= 15 or _DATE_LIKE.match(candidate.strip()):
        return False
    # "10 20 30 40" is a list of numbers; a phone number ends in a block of three or more digits.
    return len(groups[-1]) >= 3 and (candidate.startswith("+") or "(" in candidate or max(map(len, groups)) >= 3)


def find_pii(text: object, kinds: Sequence[str] = PII_KINDS) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each email, card number (Luhn-checked), IP address and phone number in `text`.

    Kinds are searched in that order and a later kind never overlaps an earlier match
    (the digits of a card number are not also a phone number).
    """
    if not isinstance(text, str) or not text:
        return []
    found: list[tuple[str, int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for _, s, e in found)

    searches = {
        "email": [(_EMAIL, lambda m: True)],
        "card": [(_CARD, lambda m: luhn_valid(re.sub(r"\D", "", m)))],
        "ip": [(_IPV4, _is_ip), (_IPV6, lambda m: m.count(":") >= 2 and _is_ip(m))],
        "phone": [(_PHONE, _is_phone)],
    }
    for kind in ("email", "card", "ip", "phone"):
        if kind not in kinds:
            continue
        for pattern, accept in searches[kind]:
            for match in pattern.finditer(text):
                if accept(match.group()) and free(match.start(), match.end()):
                    found.append((kind, match.start(), match.end()))
    return sorted(found, key=lambda item: item[1])


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def mask_pii(text: object, kinds: Sequence[str] = PII_KINDS) -> object:
    """`text` with each PII match replaced by its placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IP]`)."""
    matches = find_pii(text, kinds)
    if not matches:
        return text
    out, last = [], 0
    for kind, start, end in matches:
        out += [text[last:start], PII_MASKS[kind]]
        last = end
    return "".join(out) + text[last:]


def pii_column(frame: pd.DataFrame, columns: Sequence[str], kinds: Sequence[str]) -> pd.Series:
    """Per row, the PII kinds found in `columns` (`"email, phone"`), "" where none: the report never repeats the value."""
    def kinds_in(row) -> str:
        found = {kind for column in columns for kind, _, _ in find_pii(row[column], kinds)}
        return ", ".join(k for k in PII_KINDS if k in found)

    if frame.empty:
        return pd.Series([], dtype=object, index=frame.index)
    return frame[list(columns)].apply(kinds_in, axis=1)


# --- labels ---------------------------------------------------------------------------------------------------------


def imbalance_ratio(labels: pd.Series) -> float:
    """Rows of the most frequent label over rows of the least frequent one (1.0 is balanced)."""
    counts = labels.value_counts()
    return float(counts.max() / counts.min()) if len(counts) else 1.0


def label_counts(parts: dict[str, pd.DataFrame], labels: Sequence[str]) -> pd.DataFrame:
    """Rows of each label (index) in each split (columns), zeros included."""
    return pd.DataFrame({name: frame["label"].value_counts().reindex(list(labels), fill_value=0)
                         for name, frame in parts.items()}).astype(int)


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def is_number(value: object) -> bool:
    """A label or text that is one number as written (`1`, ` 2.50 `, `-3e2`)."""
    return isinstance(value, str) and _NUMBER.fullmatch(value.strip()) is not None


def label_spelling_key(label: str) -> str:
    """Labels equal under this key are one label spelt differently: equal up to case and surrounding whitespace
    (`positive`, ` POSITIVE `), or one number written two ways (`1`, `1.0`, as pandas writes an integer column
    that had a gap)."""
    stripped = label.strip()
    if _NUMBER.fullmatch(stripped):
        from decimal import Decimal

        return "#" + str(Decimal(stripped).normalize())
    return stripped.casefold()


def label_spellings(labels: pd.Series) -> list[list[tuple[str, int]]]:
    """The labels spelt several ways: per label, its (spelling, rows), most frequent first (ties: first seen first);
    the labels with the most rows first. Empty when every label has one spelling."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for spelling, rows in labels.dropna().value_counts(sort=False).items():  # in order of first appearance
        groups.setdefault(label_spelling_key(str(spelling)), []).append((str(spelling), int(rows)))
    several = [sorted(group, key=lambda item: -item[1]) for group in groups.values() if len(group) > 1]
    return sorted(several, key=lambda group: -sum(rows for _, rows in group))


def label_respellings(labels: pd.Series, preferred: Sequence[str] = ()) -> dict[str, str]:
    """What `data.normalize_labels` rewrites: each spelling of a label to the one kept, the spelling `preferred`
    (data.labels) lists for it, else its most frequent. Only the spellings that change."""
    listed = {label_spelling_key(label): label for label in preferred}
    groups: dict[str, list[tuple[str, int]]] = {}
    for spelling, rows in labels.dropna().value_counts(sort=False).items():
        groups.setdefault(label_spelling_key(str(spelling)), []).append((str(spelling), int(rows)))
    respelt = {}
    for key, group in groups.items():
        keep = listed.get(key, max(group, key=lambda item: item[1])[0])  # max keeps the first of equal counts
        respelt |= {spelling: keep for spelling, _ in group if spelling != keep}
    return respelt


def label_kinds(labels: pd.Series) -> tuple[dict[str, int], dict[str, int]]:
    """(rows per label that is a number, rows per label that is a word), each in order of first appearance."""
    counts = labels.dropna().astype(str).value_counts(sort=False)
    numbers = {label: int(rows) for label, rows in counts.items() if is_number(label)}
    return numbers, {label: int(rows) for label, rows in counts.items() if label not in numbers}


def label_conflicts(keys: Sequence[str], labels: Sequence[object]) -> list[list[int]]:
    """Rows (positions) of each text given different labels: rows whose `duplicate_key` is equal and whose labels
    are not. Each group in frame order, the groups in order of their first row."""
    by_key: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        if key:
            by_key.setdefault(key, []).append(position)
    return [rows for rows in by_key.values()
            if len(rows) > 1 and len({labels[i] for i in rows if isinstance(labels[i], str)}) > 1]


# --- what a column holds ------------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]{2}")  # two letters in a row, in any script: a text has words, an id or a date has not


def holds_words(text: object) -> bool:
    """True for a text with a word in it; False for numbers, ids, dates, codes, and for anything not a string."""
    return isinstance(text, str) and _WORD.search(text) is not None


@dataclass(frozen=True)
class ColumnLook:
    """What a column of a data file holds, to tell the text column from ids, numbers and categories."""

    column: str
    word_share: float  # values holding a word
    distinct: int  # distinct values
    distinct_share: float
    mean_words: float  # whitespace-separated tokens per value

    @property
    def looks_like_text(self) -> bool:
        return self.word_share >= 0.8 and self.distinct_share >= 0.5 and self.mean_words >= 2

    def describe(self) -> str:
        if self.looks_like_text:
            return f"{self.column!r} (text: words in {self.word_share:.0%} of rows, {self.mean_words:.1f} words on average)"
        if self.word_share < 0.5:
            return f"{self.column!r} (no words in {1 - self.word_share:.0%} of rows: numbers, ids or dates)"
        return f"{self.column!r} ({self.distinct} distinct values)"


def look_at_column(values: pd.Series, column: str) -> ColumnLook:
    """`ColumnLook` of one column (missing values count as holding no word)."""
    present = values.dropna().astype(str)
    rows = max(len(values), 1)
    return ColumnLook(column=column, word_share=float(present.map(holds_words).sum() / rows),
                      distinct=int(present.nunique()), distinct_share=float(present.nunique() / rows),
                      mean_words=float(present.str.split().str.len().mean()) if len(present) else 0.0)
