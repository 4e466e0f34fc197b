"""Split cleaned rows into train, validation and test: at random, by group or by time, near-duplicates kept together."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from tuneline.kinds import kind
from tuneline.errors import ConfigError, SplitError
from tuneline.data.loading import EXAMPLE_ROWS, check_task, content_hash, regression_targets
from tuneline.data.text import (
    duplicate_keys,
    find_near_duplicates,
    pairs_across,
)

log = logging.getLogger(__name__)

SPLIT_STRATEGIES = ("random", "group", "time")
NEAR_DUPLICATE_POLICIES = ("group", "drop", "ignore")


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
    if not kind(task).has_classes and labels:
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
        labels=tuple(labels) if kind(task).has_classes else (),
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
    from tuneline.data.text import similarity

    first = pd.Series(np.arange(len(frame))).groupby(near.groups).transform("first").to_numpy()
    texts = frame["text"].to_numpy(dtype=object)
    keep = texts == texts[first] if kind(task).generative else first == np.arange(len(frame))
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
    if kind(task).generative:
        unit_of_row = pd.factorize(pd.Series(duplicate_keys(list(frame["text"]))), sort=False)[0]
        if unit_of_row.max() + 1 < 3:
            raise SplitError(f"need at least 3 distinct texts to split into train/validation/test, got {unit_of_row.max() + 1}")
    else:
        unit_of_row = np.arange(len(frame))
    first_row = np.unique(unit_of_row, return_index=True)[1]
    strata: np.ndarray | None = None
    if kind(task).has_classes and stratify:
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
    elif kind(task).numeric and stratify:
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
    if kind(task).generative:
        keys.append(pd.factorize(pd.Series(duplicate_keys(list(frame["text"]))))[0])  # one input's references together
    unit_of_row = _components(frame, keys)
    units = unit_of_row.max() + 1
    if units < 3:
        raise SplitError(f"a group split needs at least 3 groups, {source} has {units} (split.group_column "
                         f"{group_column!r}{', near-duplicates merged' if near is not None else ''})")
    if kind(task).has_classes and stratify:
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
    from tuneline.data.text import similarity

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
