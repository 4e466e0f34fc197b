"""Validate a canonical frame against a Great Expectations suite stored as JSON, plus the text checks.

Every outcome names the setting that governs it (`ExpectationOutcome.setting`: the key and its
current value, e.g. `data.checks.max_duplicate_share=0.15`), so a user who decides the data is
fine knows the one override; a suite's own expectations name `data.expectation_suite` and the
file, or the setting their `tuneline_setting` meta names. Columns are named as in the user's file
(data.text_column, data.label_column), not by their canonical names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tuneline.kinds import kind
from tuneline.errors import ConfigError, DataValidationError
from tuneline.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from tuneline.config import DataConfig, SplitConfig, TextChecksConfig
    from tuneline.data.splitting import SplitResult

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
EXAMPLE_ROWS = 5


def setting_value(value: Any) -> str:
    """A setting's value as a user writes it in a `key=value` override (null, true, [a, b], 0.15)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(setting_value(v) for v in value) + "]"
    return str(value)


def _short(value: Any, limit: int = 80) -> str:
    """repr of a value, long texts (a generation target, a document) cut so a message stays readable."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}...({len(str(value))} chars)"


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    observed_value: Any = None
    example_rows: tuple[dict[str, Any], ...] = ()
    note: str | None = None  # what the check is for, in words (text checks carry one)
    setting: str | None = None  # what governs it, as key=value overrides: `data.checks.max_duplicate_share=0.15`

    def describe(self) -> str:
        where = f" on column {self.column!r}" if self.column else ""
        where += f" ({self.note})" if self.note else ""
        detail = []
        if self.unexpected_count is not None:
            detail.append(f"{self.unexpected_count} unexpected rows")
        if self.observed_value is not None:
            detail.append(f"observed {self.observed_value}")
        if self.example_rows:
            detail.append("e.g. " + "; ".join(", ".join(f"{k}={_short(v)}" for k, v in r.items()) for r in self.example_rows))
        return (f"{self.expectation}{where}: " + (", ".join(detail) or "failed")
                + (f". Setting: {self.setting}" if self.setting else ""))


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    success: bool
    evaluated: int
    outcomes: tuple[ExpectationOutcome, ...] = field(default_factory=tuple)
    # Tokens each row needs in training (the token-length check); None when it did not run.
    token_lengths: np.ndarray | None = field(default=None, repr=False, compare=False)
    max_length: int | None = None

    @property
    def truncated_share(self) -> float | None:
        """Share of rows longer than max_length tokens, or None when token lengths were not measured."""
        if self.token_lengths is None or not len(self.token_lengths):
            return None
        return float((self.token_lengths > self.max_length).mean())

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "evaluated": self.evaluated,
            "failed": len(self.failures),
            "outcomes": [o.__dict__ | {"example_rows": list(o.example_rows)} for o in self.outcomes],
            "truncated_share": self.truncated_share,
            "max_length": self.max_length,
        }

    def to_markdown(self) -> str:
        lines = [
            f"### Validation: suite `{self.suite}`: {'passed' if self.success else 'FAILED'}",
            "",
            "| expectation | column | result | unexpected | observed | setting |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for o in self.outcomes:
            lines.append(
                f"| {o.expectation}{f' ({o.note})' if o.note else ''} | {o.column or ''} | {'ok' if o.success else '**failed**'} "
                f"| {'' if o.unexpected_count is None else o.unexpected_count} "
                f"| {'' if o.observed_value is None else o.observed_value} | {o.setting or ''} |"
            )
        return "\n".join(lines)


def resolve_suite_path(suite: str) -> Path:
    """A bare name means `expectations/<name>.json`; anything else is a path to a suite file."""
    path = Path(suite) if suite.endswith(".json") else EXPECTATIONS_DIR / f"{suite}.json"
    if not path.is_file():
        raise ConfigError(f"expectation suite {suite!r} not found at {path}")
    return path


def load_suite(path: Path):
    """Load a GE `ExpectationSuite` from its JSON file (GE is imported here: it takes seconds)."""
    import great_expectations as gx

    try:
        return gx.ExpectationSuite(**json.loads(path.read_text()))
    except Exception as exc:
        raise ConfigError(f"expectation suite {path} is not a valid suite: {exc}") from exc


def _json_safe(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, float) and pd.isna(value):
        return None
    return value


def _outcome(result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    details = result.result or {}
    rows = details.get("unexpected_index_list") or []
    examples = tuple({k: _json_safe(v) for k, v in row.items()} for row in rows[:EXAMPLE_ROWS] if isinstance(row, dict))
    observed = details.get("observed_value")
    if observed is None and result.exception_info.get("raised_exception"):
        observed = result.exception_info.get("exception_message")
    mostly = config.kwargs.get("mostly")
    if observed is None and mostly is not None and details.get("unexpected_percent") is not None:
        # A share-bounded check: say the share found next to the share allowed.
        observed = f"{details['unexpected_percent']:.1f}% of rows (allowed {100 * (1 - mostly):.1f}%)"
    return ExpectationOutcome(
        expectation=config.type,
        column=config.kwargs.get("column"),
        success=bool(result.success),
        unexpected_count=details.get("unexpected_count"),
        observed_value=_json_safe(observed),
        example_rows=examples,
        note=(config.meta or {}).get(TEXT_CHECK_NOTE),
        setting=(config.meta or {}).get(SETTING_META),
    )


TEXT_CHECK_NOTE = "tuneline_check"  # meta key naming what a check is for, in reports (text checks, some suite entries)
# Meta key naming the setting that governs an expectation: `key=value` (text checks), or a bare key (suite files:
# `data.labels`), whose current value validation fills in. Without one, a suite's expectation names the suite.
SETTING_META = "tuneline_setting"


@dataclass(frozen=True)
class _Settings:
    """The settings a validation runs under, to name them with their values in each outcome."""

    data: DataConfig
    split: SplitConfig | None = None
    max_length: int | None = None
    suite_path: Path | None = None
    suite_name: str | None = None  # as data.expectation_suite gives it

    def value(self, key: str) -> Any:
        if key == "train.max_length":
            return self.max_length
        root, *parts = key.split(".")
        value = {"data": self.data, "split": self.split}.get(root)
        for part in parts:
            value = getattr(value, part, None)
        return value

    def named(self, *keys: str) -> str:
        """`key=value` of each key, comma-separated: what a user would override."""
        return ", ".join(f"{key}={setting_value(self.value(key))}" for key in keys)

    def suite(self) -> str:
        where = self.suite_path.relative_to(PROJECT_ROOT) if self.suite_path and self.suite_path.is_relative_to(
            PROJECT_ROOT) else self.suite_path
        return f"data.expectation_suite={self.suite_name or self.data.expectation_suite} ({where})"

    def columns(self) -> dict[str, str]:
        """Canonical column -> the user's column."""
        return {"text": self.data.text_column, "label": self.data.label_column, "label_value": self.data.label_column,
                "source_row": "row", "source_text": "text", "source_label": "label"}


def _text_check_expectations(frame: pd.DataFrame, task: str, checks: TextChecksConfig, max_length: int | None,
                             tokenizer, split: SplitConfig | None,
                             settings: _Settings) -> tuple[pd.DataFrame, list, np.ndarray | None]:
    """The frame with the columns the text checks read (`token_count`, `pii_found`) and the GE expectations on them.

    Built-in GE expectations on derived columns: the report shows them like the suite's own,
    with counts, shares and example rows (the PII column holds only the kinds found, never the value).
    """
    import great_expectations as gx

    from tuneline.data.text import pii_column
    from tuneline.validation.lengths import template_regex, token_lengths

    expectations, lengths = [], None
    if "text" not in frame.columns or "label" not in frame.columns:
        return frame, expectations, lengths  # the suite's own column checks report that
    if tokenizer is not None and max_length is not None:
        lengths = token_lengths(frame, task, tokenizer)
        frame = frame.assign(token_count=lengths)
        what = kind(task).length_counted
        expectations.append(gx.expectations.ExpectColumnValuesToBeBetween(
            column="token_count", max_value=max_length, mostly=1.0 - checks.max_truncated_share,
            meta={TEXT_CHECK_NOTE: f"tokens of the {what} vs train.max_length {max_length}: longer rows are truncated",
                  SETTING_META: settings.named("data.checks.max_truncated_share", "train.max_length")}))
    pii_columns = list(kind(task).checked_for_pii)
    frame = frame.assign(pii_found=pii_column(frame, pii_columns, checks.pii_kinds))
    expectations.append(gx.expectations.ExpectColumnValuesToBeInSet(
        column="pii_found", value_set=[""], mostly=1.0 if checks.pii == "fail" else 0.0,
        meta={TEXT_CHECK_NOTE: f"PII in {' and '.join(pii_columns)}, policy {checks.pii}",
              SETTING_META: settings.named("data.checks.pii", "data.checks.pii_kinds")}))
    if kind(task).keeps_prompt_format:
        for column, role in (("text", "prompt"), ("label", "response")):
            key = "data.text_column" if column == "text" else "data.label_column"
            expectations.append(gx.expectations.ExpectColumnValuesToMatchRegex(
                column=column, regex=r"\S", meta={TEXT_CHECK_NOTE: f"the {role} is not empty",
                                                  SETTING_META: settings.named(key)}))
        if checks.chat_template:
            expectations.append(gx.expectations.ExpectColumnValuesToMatchRegex(
                column="text", regex=template_regex(checks.chat_template, tokenizer),
                meta={TEXT_CHECK_NOTE: f"prompts follow the chat template {checks.chat_template!r}",
                      SETTING_META: settings.named("data.checks.chat_template")}))
    if split is not None:
        for key, column in (("split.group_column", split.group_column), ("split.time_column", split.time_column)):
            if column:
                named = settings.named("split.strategy", key)
                expectations.append(gx.expectations.ExpectColumnToExist(
                    column=column, meta={TEXT_CHECK_NOTE: f"split.{split.strategy} needs it", SETTING_META: named}))
                if column in frame.columns:
                    expectations.append(gx.expectations.ExpectColumnValuesToNotBeNull(
                        column=column, meta={TEXT_CHECK_NOTE: f"every row needs one for split.strategy {split.strategy}",
                                             SETTING_META: named}))
    return frame, expectations, lengths


def _row_ids(frame: pd.DataFrame) -> np.ndarray:
    return frame["row"].to_numpy() if "row" in frame.columns else np.arange(len(frame))


# Columns validation adds to the frame, never one of the user's.
_DERIVED_COLUMNS = {"row", "text", "token_count", "pii_found", "label_value"}


def _mapping_hint(frame: pd.DataFrame, settings: _Settings) -> str:
    """Which of the file's columns looks like the text, for a text column that does not: the fix is the mapping."""
    from tuneline.data.text import look_at_column

    names = settings.columns()
    looks = [look_at_column(frame[column], names.get(column, str(column)))
             for column in frame.columns if column not in _DERIVED_COLUMNS]
    texts = [look for look in looks if look.looks_like_text]
    best = max(texts, key=lambda look: (look.mean_words, look.word_share), default=None)
    others = ", ".join(look.describe() for look in looks[:6]) + (", ..." if len(looks) > 6 else "") or "none"
    advice = (f"{best.column!r} looks like the text: set data.text_column={best.column}" if best else
              "none of them looks like text: check the file")
    return f"is data.text_column={settings.data.text_column} the text? The file's other columns: {others}; {advice}"


def _repeat_outcome(frame: pd.DataFrame, task: str, checks: TextChecksConfig, keys: list[str],
                    settings: _Settings) -> ExpectationOutcome:
    """Rows repeating an earlier row (`duplicate_key`: what cleaning drops), against data.checks.max_duplicate_share."""
    from tuneline.data.text import normalise_text, repeated_rows

    generative = kind(task).generative  # one input with several targets is fine there
    if generative:
        keys = [f"{k}\x1f{normalise_text(t)}" if k else "" for k, t in zip(keys, frame["label"])]
    repeats = repeated_rows((), keys=keys)
    rows, texts = _row_ids(frame), frame["text"].to_numpy(dtype=object)
    share = len(repeats) / len(frame) if len(frame) else 0.0
    note = ("text" + (" and target" if generative else "") + " equal to an earlier row's up to markup, case, "
            "punctuation and spacing; cleaning drops them (data/dropped_rows.csv) and no copy crosses splits, but many "
            "mean a broken export or a file appended to itself")
    if share > 0.5 and not generative:
        note += "; so few distinct texts: " + _mapping_hint(frame, settings)
    return ExpectationOutcome(
        expectation="expect_repeated_rows_share_to_be_at_most", column="text",
        success=share <= checks.max_duplicate_share, unexpected_count=len(repeats),
        observed_value=f"{share:.1%} of rows (allowed {checks.max_duplicate_share:.1%})",
        example_rows=tuple({"row": _json_safe(rows[i]), "repeats_row": _json_safe(rows[j]), "text": texts[i]}
                           for i, j in repeats[:EXAMPLE_ROWS]),
        note=note, setting=settings.named("data.checks.max_duplicate_share"))


def _text_column_outcomes(frame: pd.DataFrame, checks: TextChecksConfig, keys: list[str],
                          settings: _Settings) -> list[ExpectationOutcome]:
    """Classification and regression: a text column of numbers (ids, dates) or of one repeated value is a column
    mapping mistake; the message says which column looks like the text."""
    from tuneline.data.text import holds_words

    texts = frame["text"]
    present = texts.notna() & (texts.fillna("").str.strip() != "")
    wordless = present & ~texts.map(holds_words)
    rows = _row_ids(frame)
    share = float(wordless.sum() / max(int(present.sum()), 1))
    numbers = share > checks.max_numeric_text_share
    counts = pd.Series([k for k in keys if k]).value_counts()
    top_share = float(counts.iloc[0] / len(frame)) if len(counts) and len(frame) else 0.0
    constant = top_share > checks.max_top_text_share
    top = np.flatnonzero(np.asarray(keys, dtype=object) == counts.index[0]) if len(counts) else np.array([], dtype=int)
    return [
        ExpectationOutcome(
            expectation="expect_text_column_to_hold_words", column="text", success=not numbers,
            unexpected_count=int(wordless.sum()),
            observed_value=f"{share:.1%} of texts hold no word: numbers, ids or dates (allowed "
                           f"{checks.max_numeric_text_share:.0%})",
            example_rows=tuple({"row": _json_safe(r), "text": t} for r, t in
                               zip(rows[wordless.to_numpy()][:EXAMPLE_ROWS], texts[wordless].head(EXAMPLE_ROWS))),
            note="a text column of numbers is a mapped id, score or date column" + (
                ": " + _mapping_hint(frame, settings) if numbers else ""),
            setting=settings.named("data.checks.max_numeric_text_share", "data.text_column")),
        ExpectationOutcome(
            expectation="expect_text_column_to_vary", column="text", success=not constant,
            unexpected_count=len(top) if constant else None,
            observed_value=(f"one text fills {top_share:.1%} of rows (allowed {checks.max_top_text_share:.0%})"
                            if len(top) else None),
            example_rows=tuple({"row": _json_safe(rows[i]), "text": texts.iloc[i]} for i in top[:EXAMPLE_ROWS])
            if constant else (),
            note="a text column mostly holding one value (N/A, a category) is the wrong column" + (
                ": " + _mapping_hint(frame, settings) if constant else ""),
            setting=settings.named("data.checks.max_top_text_share", "data.text_column")),
    ]


def _first_rows(frame: pd.DataFrame, labels: list[str]) -> dict[str, Any]:
    """The first row holding each label."""
    rows, values = _row_ids(frame), frame["label"].to_numpy(dtype=object)
    first: dict[str, Any] = {}
    for row, value in zip(rows, values):
        if value in labels and value not in first:
            first[value] = _json_safe(row)
    return first


def _label_form_outcomes(frame: pd.DataFrame, checks: TextChecksConfig, keys: list[str],
                         settings: _Settings) -> list[ExpectationOutcome]:
    """Classification: one label spelt several ways, numbers mixed with words, a text given different labels."""
    from tuneline.data.text import label_conflicts, label_kinds, label_spellings

    data = settings.data
    outcomes = []
    spellings = label_spellings(frame["label"])
    spelt = [spelling for group in spellings for spelling, _ in group]
    first = _first_rows(frame, spelt)
    described = "; ".join(", ".join(f"{spelling!r} ({rows} rows)" for spelling, rows in group) for group in spellings)
    outcomes.append(ExpectationOutcome(
        expectation="expect_label_spellings_to_be_consistent", column="label", success=not spellings,
        unexpected_count=sum(rows for group in spellings for _, rows in group[1:]) if spellings else None,
        observed_value=(f"one label spelt several ways: {described}" if len(spellings) == 1 else
                        f"{len(spellings)} labels spelt several ways: {described}" if spellings else None),
        example_rows=tuple({"label": spelling, "rows": rows, "row": first[spelling]}
                           for group in spellings for spelling, rows in group)[: 2 * EXAMPLE_ROWS],
        note="labels equal up to case and surrounding whitespace, or one number written two ways, would train as "
             "different classes: fix the file, or set data.normalize_labels=true to keep one spelling (the one "
             "data.labels lists, else the most frequent)",
        setting=settings.named("data.normalize_labels")))
    numbers, words = label_kinds(frame["label"])
    mixed = bool(numbers and words) and data.labels is None
    if numbers and words:
        first = _first_rows(frame, [*numbers, *words])

        def shown(kind: dict[str, int]) -> str:
            return ", ".join(f"{label!r} ({rows} rows)" for label, rows in list(kind.items())[:EXAMPLE_ROWS])

        outcomes.append(ExpectationOutcome(
            expectation="expect_labels_to_be_all_numbers_or_all_words", column="label", success=not mixed,
            unexpected_count=sum(words.values()) if mixed else None,
            observed_value=f"labels that are numbers: {shown(numbers)}; labels that are words: {shown(words)}"
                           + ("" if mixed else "; data.labels lists the labels"),
            example_rows=tuple({"label": label, "rows": rows, "row": first[label]}
                               for label, rows in [*numbers.items(), *words.items()])[: 2 * EXAMPLE_ROWS] if mixed else (),
            note="numbers mixed with words are usually two label encodings in one file (0/1 and neg/pos), each of "
                 "which would train as its own class: map them to one, or list the labels you mean in data.labels "
                 "(then any other label is an error naming its rows)",
            setting=settings.named("data.labels")))
    labels = frame["label"].to_numpy(dtype=object)
    groups = label_conflicts(keys, labels)
    conflicting = sum(len(group) for group in groups)
    share = conflicting / len(frame) if len(frame) else 0.0
    bound = checks.max_label_conflict_share
    rows, texts = _row_ids(frame), frame["text"].to_numpy(dtype=object)
    examples = []
    for group in groups[:EXAMPLE_ROWS]:
        other = next(i for i in group if labels[i] != labels[group[0]])
        examples.append({"row": _json_safe(rows[group[0]]), "label": labels[group[0]],
                         "conflicts_row": _json_safe(rows[other]), "conflicting_label": labels[other],
                         "text": texts[group[0]]})
    outcomes.append(ExpectationOutcome(
        expectation="expect_no_label_conflicts", column="label", success=share <= bound,
        unexpected_count=conflicting,
        observed_value=(f"label conflicts: {len(groups)} texts appear with different labels, {conflicting} rows "
                        f"({share:.1%} of rows, allowed {bound:.1%})" if groups else None),
        example_rows=tuple(examples),
        note="the same text (up to markup, case, punctuation and spacing) with different labels: a join or merge "
             "that paired texts with the wrong labels; cleaning would keep the first row's label",
        setting=settings.named("data.checks.max_label_conflict_share")))
    return outcomes


def _label_outcomes(frame: pd.DataFrame, checks: TextChecksConfig, allowed_labels: list[str] | None,
                    settings: _Settings) -> list[ExpectationOutcome]:
    """Classification: enough distinct classes, and enough rows of every label to put some in each split."""
    from tuneline.data.text import is_number

    counts = frame["label"].dropna().value_counts()
    distinct = ", ".join(f"{label!s}: {n} rows" for label, n in counts.head(EXAMPLE_ROWS).items()) or "no labels"
    # One split's worth per split, whatever the fractions: the split stage checks the exact counts.
    needed = 3 * max(checks.min_rows_per_label, 1)
    every = counts.reindex(list(dict.fromkeys([*(allowed_labels or []), *counts.index])), fill_value=0)
    short = every[every < needed]
    rows = _row_ids(frame)
    first_row = {label: _json_safe(rows[np.flatnonzero((frame["label"] == label).to_numpy())[0]])
                 for label in short.index if short[label]}
    scores = len(counts) > 10 and all(is_number(str(label)) for label in counts.index)
    return [
        ExpectationOutcome(
            expectation="expect_label_classes_to_be_at_least", column="label",
            success=len(counts) >= checks.min_classes,
            observed_value=f"{len(counts)} distinct labels ({distinct}); at least {checks.min_classes} needed",
            note="a file of one class is a filtered or truncated export",
            setting=settings.named("data.checks.min_classes")),
        ExpectationOutcome(
            expectation="expect_every_label_to_have_enough_rows", column="label", success=short.empty,
            unexpected_count=int(short.sum()),
            observed_value=f"{len(short)} labels with fewer than {needed} rows" if len(short) else None,
            example_rows=tuple({"label": label, "rows": int(n), **({"row": first_row[label]} if n else {})}
                               for label, n in short.head(EXAMPLE_ROWS).items()),
            note=f"{needed} rows or more, for data.checks.min_rows_per_label in each of train, validation and test; "
                 "a rare label is often a typo or a mapped id column"
                 + ("; these labels are many distinct numbers: a score to predict? set task=regression" if scores else ""),
            setting=settings.named("data.checks.min_rows_per_label")),
    ]


def _custom_outcomes(frame: pd.DataFrame, task: str, checks: TextChecksConfig | None,
                     split: SplitConfig | None, allowed_labels: list[str] | None,
                     settings: _Settings) -> list[ExpectationOutcome]:
    """Checks GE has no expectation for, reported like one: repeated rows, a text column that is not text, label
    spellings, kinds and conflicts, classes, rare labels and imbalance, near-duplicates, time parsing."""
    from tuneline.data.text import duplicate_keys, find_near_duplicates, imbalance_ratio

    outcomes: list[ExpectationOutcome] = []
    if "text" not in frame.columns or "label" not in frame.columns:
        return outcomes
    if checks is not None:
        keys = duplicate_keys(list(frame["text"]))  # "the same text", as cleaning drops it: computed once
        outcomes.append(_repeat_outcome(frame, task, checks, keys, settings))
        # Generation inputs can be numbers (number to words) or one instruction for many targets; the generation
        # suite bounds its distinct inputs instead.
        if not kind(task).generative:
            outcomes += _text_column_outcomes(frame, checks, keys, settings)
        if kind(task).has_classes:
            outcomes += _label_form_outcomes(frame, checks, keys, settings)
            outcomes += _label_outcomes(frame, checks, allowed_labels, settings)
    if checks is not None and kind(task).has_classes and frame["label"].notna().any():
        ratio = imbalance_ratio(frame["label"].dropna())
        counts = frame["label"].value_counts()
        bound = checks.max_imbalance_ratio
        outcomes.append(ExpectationOutcome(
            expectation="expect_label_imbalance_ratio_to_be_at_most", column="label",
            success=bound is None or ratio <= bound,
            observed_value=f"{ratio:.2f} ({counts.index[0]!s}: {counts.iloc[0]} rows, {counts.index[-1]!s}: "
                           f"{counts.iloc[-1]} rows)" + ("" if bound is None else f", allowed {bound:.2f}"),
            note="most over least frequent label" + (" (reported only)" if bound is None else ""),
            setting=settings.named("data.checks.max_imbalance_ratio")))
    if split is not None and split.near_duplicates != "ignore":
        near = find_near_duplicates(frame["text"], split.near_duplicate_threshold, split.near_duplicate_ngram)
        rows = frame["row"].to_numpy() if "row" in frame.columns else np.arange(len(frame))
        examples = tuple({"row": _json_safe(rows[a]), "near_row": _json_safe(rows[b]), "similarity": sim}
                         for a, b, sim in near.pairs[:EXAMPLE_ROWS])
        largest = int(np.bincount(near.groups).max()) if len(near.groups) else 0
        handling = {"group": "the split keeps each group in one split", "drop": "the split keeps one row per group"}
        outcomes.append(ExpectationOutcome(
            expectation="expect_near_duplicates_to_stay_in_one_split", column="text", success=True,
            unexpected_count=near.grouped_rows,
            observed_value=f"{near.group_count} groups of near-duplicates ({near.grouped_rows} rows, largest "
                           f"{largest}); {handling[split.near_duplicates]}",
            example_rows=examples,
            note=f"normalised {split.near_duplicate_ngram}-gram Jaccard >= {split.near_duplicate_threshold}",
            setting=settings.named("split.near_duplicates", "split.near_duplicate_threshold")))
    if split is not None and split.strategy == "time" and split.time_column in frame.columns:
        from tuneline.data.splitting import time_order
        from tuneline.errors import SplitError

        try:
            time_order(frame.dropna(subset=[split.time_column]), split.time_column)
            success, observed = True, None
        except SplitError as exc:
            success, observed = False, str(exc)
        outcomes.append(ExpectationOutcome(
            expectation="expect_column_values_to_be_times", column=split.time_column, success=success,
            observed_value=observed, note="split.strategy time orders rows by it",
            setting=settings.named("split.time_column")))
    return outcomes


def validate_frame(
    frame: pd.DataFrame, suite: str, allowed_labels: list[str] | None = None, task: str = "classification",
    checks: TextChecksConfig | None = None, max_length: int | None = None, tokenizer=None,
    split: SplitConfig | None = None, *, data: DataConfig | None = None,
) -> ValidationReport:
    """Run the suite on the frame; return every expectation's outcome (does not raise on failure).

    `allowed_labels` fills the suite parameter `allowed_labels` (classification suites).
    For `regression` the suite also sees `label_value`, the label parsed as a float (NaN
    where it is not a number), so a suite can bound the target with
    `expect_column_values_to_be_between` on that column.

    With `checks` (data.checks), the text checks run in the same validation: PII, prompt and
    response of causal_lm data and the chat template, label imbalance and the number of classes,
    repeated rows (data.checks.max_duplicate_share); token lengths too when `tokenizer` and
    `max_length` are given; with `split` the group / time column, labels too rare to reach every
    split and the near-duplicate groups the split will keep together. Classification and
    regression: a text column of numbers or of one repeated value (with the column that looks
    like text). Classification: labels spelt several ways, numbers mixed with words (unless
    data.labels lists the labels), and texts given different labels.

    `data` (the run's DataConfig; `checks` defaults to its `checks`) names the settings and the
    user's columns in each outcome; without it, the defaults are named.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.exceptions import SuiteParameterError

    from tuneline.config import DataConfig, TextChecksConfig

    if data is None:
        listed = list(allowed_labels or [])
        data = DataConfig(expectation_suite=suite, checks=checks or TextChecksConfig(),
                          labels=listed if len(listed) >= 2 and len(set(listed)) == len(listed) else None)
    elif checks is None:
        checks = data.checks
    if kind(task).numeric and "label" in frame.columns:
        frame = frame.assign(label_value=pd.to_numeric(frame["label"], errors="coerce").astype(float))
    suite_path = resolve_suite_path(suite)
    settings = _Settings(data=data, split=split, max_length=max_length, suite_path=suite_path, suite_name=suite)
    expectation_suite = load_suite(suite_path)
    lengths, extra = None, []
    if checks is not None:
        frame, extra, lengths = _text_check_expectations(frame, task, checks, max_length, tokenizer, split, settings)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    expectation_suite = context.suites.add(expectation_suite)
    for expectation in extra:  # the text checks join the suite's own expectations, in this run only
        expectation_suite.add_expectation(expectation)
    batch_definition = (
        context.data_sources.add_pandas("tuneline")
        .add_dataframe_asset("ingested")
        .add_batch_definition_whole_dataframe("whole")
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    index_columns = ["row"] if "row" in frame.columns else []
    try:
        result = batch.validate(
            expectation_suite,
            expectation_parameters={} if allowed_labels is None else {"allowed_labels": list(allowed_labels)},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns},
        )
    except SuiteParameterError as exc:
        raise ConfigError(
            f"expectation suite {suite!r} needs a parameter this {task} run does not give ({exc}); "
            "a classification suite takes allowed_labels: check data.expectation_suite matches the task"
        ) from None
    outcomes = [_outcome(r) for r in result.results]
    # A suite's own expectation is governed by the suite file, or by the setting its meta names (data.labels).
    outcomes = [replace(o, setting=settings.suite() if o.setting is None else
                        o.setting if "=" in o.setting else settings.named(o.setting)) for o in outcomes]
    if "pii_found" in frame.columns:
        found = frame["pii_found"][frame["pii_found"] != ""].str.split(", ").explode().value_counts()
        counts = ", ".join(f"{kind}: {int(n)} rows" for kind, n in found.items()) or "none found"
        outcomes = [replace(o, observed_value=counts) if o.column == "pii_found" else o for o in outcomes]
    outcomes += _custom_outcomes(frame, task, checks, split, allowed_labels, settings)
    outcomes = [_in_user_columns(o, settings.columns()) for o in outcomes]
    return ValidationReport(
        suite=expectation_suite.name,
        success=all(o.success for o in outcomes),
        evaluated=len(outcomes),
        outcomes=tuple(outcomes),
        token_lengths=lengths,
        max_length=max_length if lengths is not None else None,
    )


def _in_user_columns(outcome: ExpectationOutcome, names: dict[str, str]) -> ExpectationOutcome:
    """The outcome with the user's column names (`score`, not `label` or `label_value`), in its column and rows."""
    def name(key: str) -> str:
        return names.get(key, key) if key in ("text", "label", "label_value") else key

    return replace(outcome, column=name(outcome.column) if outcome.column else outcome.column,
                   example_rows=tuple({name(key): value for key, value in row.items()} for row in outcome.example_rows))


def check_splits(splits: SplitResult, checks: TextChecksConfig, task: str, near_duplicates: str = "group",
                 split: SplitConfig | None = None) -> ValidationReport:
    """The checks that need the split: every label in every split (classification), and no near-duplicate across.

    The near-duplicate outcome reports what `split_dataset` did; the split itself refuses a result
    with a near-duplicate across splits unless `near_duplicates` is `ignore`.
    """
    from tuneline.data.text import imbalance_ratio, label_counts

    outcomes: list[ExpectationOutcome] = []
    if kind(task).has_classes and splits.labels:
        counts = label_counts(splits.parts(), splits.labels)
        short = [{"label": label, "split": name, "rows": int(counts.loc[label, name])}
                 for name in counts.columns for label in counts.index if counts.loc[label, name] < checks.min_rows_per_label]
        ratios = ", ".join(f"{name} {imbalance_ratio(part['label']):.2f}" for name, part in splits.parts().items() if len(part))
        outcomes.append(ExpectationOutcome(
            expectation="expect_every_label_in_every_split", column="label", success=not short,
            unexpected_count=len(short),
            observed_value=f"fewest rows of a label in a split: {int(counts.min().min())}; imbalance ratio {ratios}",
            example_rows=tuple(short[:EXAMPLE_ROWS]),
            note=f"at least {checks.min_rows_per_label} rows of each label in train, validation and test",
            setting=f"data.checks.min_rows_per_label={checks.min_rows_per_label}" + (
                f", split.train_fraction={split.train_fraction}, split.validation_fraction="
                f"{split.validation_fraction}, split.test_fraction={split.test_fraction}" if split is not None else "")))
    if near_duplicates == "ignore":
        observed, note = "not looked for", "split.near_duplicates=ignore"
    else:
        observed = (f"{splits.near_duplicate_groups} near-duplicate groups, {splits.regrouped_rows} rows moved to "
                    f"their group's split, {splits.rows_dropped} rows removed")
        note = f"checked after the {splits.strategy} split (split.near_duplicates={near_duplicates})"
    outcomes.append(ExpectationOutcome(
        expectation="expect_no_near_duplicates_across_splits", column="text", success=True,
        unexpected_count=None if near_duplicates == "ignore" else 0, observed_value=observed, note=note,
        setting=f"split.near_duplicates={near_duplicates}"))
    return ValidationReport(suite="split checks", success=all(o.success for o in outcomes),
                            evaluated=len(outcomes), outcomes=tuple(outcomes))


def raise_for_failures(report: ValidationReport, source: str) -> None:
    """Raise `DataValidationError` naming each failed expectation with counts and example rows."""
    if report.success:
        return
    lines = [f"{source} failed {len(report.failures)} of {report.evaluated} expectations of suite {report.suite!r}:"]
    lines += [f"  - {failure.describe()}" for failure in report.failures]
    lines.append("Nothing was trained or registered. Fix the data (rows are 0-based positions in the file), or, if the "
                 "data is right, change the setting named on its line (for an expectation of a suite file, point "
                 "data.expectation_suite at a copy of the file with the expectation changed).")
    raise DataValidationError("\n".join(lines), failures=[f.__dict__ for f in report.failures])
