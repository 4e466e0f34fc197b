"""Validate a canonical frame against a Great Expectations suite stored as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tuneline.errors import ConfigError, DataValidationError
from tuneline.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from tuneline.config import SplitConfig, TextChecksConfig
    from tuneline.data import SplitResult

EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
EXAMPLE_ROWS = 5


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
        return f"{self.expectation}{where}: " + (", ".join(detail) or "failed")


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
            "| expectation | column | result | unexpected | observed |",
            "| --- | --- | --- | --- | --- |",
        ]
        for o in self.outcomes:
            lines.append(
                f"| {o.expectation}{f' ({o.note})' if o.note else ''} | {o.column or ''} | {'ok' if o.success else '**failed**'} "
                f"| {'' if o.unexpected_count is None else o.unexpected_count} "
                f"| {'' if o.observed_value is None else o.observed_value} |"
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
    )


TEXT_CHECK_NOTE = "tuneline_check"  # meta key naming what a check is for, in reports (text checks, some suite entries)


def _text_check_expectations(frame: pd.DataFrame, task: str, checks: TextChecksConfig, max_length: int | None,
                             tokenizer, split: SplitConfig | None) -> tuple[pd.DataFrame, list, np.ndarray | None]:
    """The frame with the columns the text checks read (`token_count`, `pii_found`) and the GE expectations on them.

    Built-in GE expectations on derived columns: the report shows them like the suite's own,
    with counts, shares and example rows (the PII column holds only the kinds found, never the value).
    """
    import great_expectations as gx

    from tuneline.text_checks import pii_column, template_regex, token_lengths

    expectations, lengths = [], None
    if "text" not in frame.columns or "label" not in frame.columns:
        return frame, expectations, lengths  # the suite's own column checks report that
    if tokenizer is not None and max_length is not None:
        lengths = token_lengths(frame, task, tokenizer)
        frame = frame.assign(token_count=lengths)
        what = {"causal_lm": "prompt + response", "seq2seq": "longer of input and target"}.get(task, "input")
        expectations.append(gx.expectations.ExpectColumnValuesToBeBetween(
            column="token_count", max_value=max_length, mostly=1.0 - checks.max_truncated_share,
            meta={TEXT_CHECK_NOTE: f"tokens of the {what} vs train.max_length {max_length}: longer rows are truncated"}))
    pii_columns = ["text", "label"] if task in ("seq2seq", "causal_lm") else ["text"]
    frame = frame.assign(pii_found=pii_column(frame, pii_columns, checks.pii_kinds))
    expectations.append(gx.expectations.ExpectColumnValuesToBeInSet(
        column="pii_found", value_set=[""], mostly=1.0 if checks.pii == "fail" else 0.0,
        meta={TEXT_CHECK_NOTE: f"PII in {' and '.join(pii_columns)}, policy {checks.pii}"}))
    if task == "causal_lm":
        for column, role in (("text", "prompt"), ("label", "response")):
            expectations.append(gx.expectations.ExpectColumnValuesToMatchRegex(
                column=column, regex=r"\S", meta={TEXT_CHECK_NOTE: f"the {role} is not empty"}))
        if checks.chat_template:
            expectations.append(gx.expectations.ExpectColumnValuesToMatchRegex(
                column="text", regex=template_regex(checks.chat_template, tokenizer),
                meta={TEXT_CHECK_NOTE: f"prompts follow the chat template {checks.chat_template!r}"}))
    if split is not None:
        for column in (split.group_column, split.time_column):
            if column:
                expectations.append(gx.expectations.ExpectColumnToExist(
                    column=column, meta={TEXT_CHECK_NOTE: f"split.{split.strategy} needs it"}))
                if column in frame.columns:
                    expectations.append(gx.expectations.ExpectColumnValuesToNotBeNull(
                        column=column, meta={TEXT_CHECK_NOTE: f"every row needs one for split.strategy {split.strategy}"}))
    return frame, expectations, lengths


def _row_ids(frame: pd.DataFrame) -> np.ndarray:
    return frame["row"].to_numpy() if "row" in frame.columns else np.arange(len(frame))


def _repeat_outcome(frame: pd.DataFrame, task: str, checks: TextChecksConfig) -> ExpectationOutcome:
    """Rows repeating an earlier row up to case, punctuation and spacing, against data.checks.max_duplicate_share."""
    from tuneline.text_checks import repeated_rows

    generative = task in ("seq2seq", "causal_lm")  # one input with several targets is fine there
    repeats = repeated_rows(list(frame["text"]), list(frame["label"]) if generative else None)
    rows, texts = _row_ids(frame), frame["text"].to_numpy(dtype=object)
    share = len(repeats) / len(frame) if len(frame) else 0.0
    return ExpectationOutcome(
        expectation="expect_repeated_rows_share_to_be_at_most", column="text",
        success=share <= checks.max_duplicate_share, unexpected_count=len(repeats),
        observed_value=f"{share:.1%} of rows (allowed {checks.max_duplicate_share:.1%})",
        example_rows=tuple({"row": _json_safe(rows[i]), "repeats_row": _json_safe(rows[j]), "text": texts[i]}
                           for i, j in repeats[:EXAMPLE_ROWS]),
        note="text" + (" and target" if generative else "") + " equal to an earlier row's up to case, punctuation "
             "and spacing; cleaning keeps one, but many mean a broken export or a file appended to itself")


def _label_outcomes(frame: pd.DataFrame, checks: TextChecksConfig,
                    allowed_labels: list[str] | None) -> list[ExpectationOutcome]:
    """Classification: enough distinct classes, and enough rows of every label to put some in each split."""
    counts = frame["label"].dropna().value_counts()
    distinct = ", ".join(f"{label!s}: {n} rows" for label, n in counts.head(EXAMPLE_ROWS).items()) or "no labels"
    # One split's worth per split, whatever the fractions: the split stage checks the exact counts.
    needed = 3 * max(checks.min_rows_per_label, 1)
    every = counts.reindex(list(dict.fromkeys([*(allowed_labels or []), *counts.index])), fill_value=0)
    short = every[every < needed]
    rows = _row_ids(frame)
    first_row = {label: _json_safe(rows[np.flatnonzero((frame["label"] == label).to_numpy())[0]])
                 for label in short.index if short[label]}
    return [
        ExpectationOutcome(
            expectation="expect_label_classes_to_be_at_least", column="label",
            success=len(counts) >= checks.min_classes,
            observed_value=f"{len(counts)} distinct labels ({distinct}); at least {checks.min_classes} needed",
            note="data.checks.min_classes: a file of one class is a filtered or truncated export"),
        ExpectationOutcome(
            expectation="expect_every_label_to_have_enough_rows", column="label", success=short.empty,
            unexpected_count=int(short.sum()),
            observed_value=f"{len(short)} labels with fewer than {needed} rows" if len(short) else None,
            example_rows=tuple({"label": label, "rows": int(n), **({"row": first_row[label]} if n else {})}
                               for label, n in short.head(EXAMPLE_ROWS).items()),
            note=f"{needed} rows or more, for data.checks.min_rows_per_label in each of train, validation and test; "
                 "a rare label is often a typo or a mapped id column"),
    ]


def _leak_outcome(frame: pd.DataFrame, split: SplitConfig) -> ExpectationOutcome:
    """split.near_duplicates=ignore: rows equal up to case or punctuation would be split independently (leakage)."""
    from tuneline.text_checks import repeats_cleaning_keeps

    leaks = repeats_cleaning_keeps(list(frame["text"]))
    rows, texts = _row_ids(frame), frame["text"].to_numpy(dtype=object)
    return ExpectationOutcome(
        expectation="expect_no_copies_across_splits", column="text", success=not leaks, unexpected_count=len(leaks),
        observed_value=f"{len(leaks)} row(s) copy another row up to case, punctuation or spacing" if leaks else None,
        example_rows=tuple({"row": _json_safe(rows[i]), "copies_row": _json_safe(rows[j]), "text": texts[i],
                            "copied_text": texts[j]} for i, j in leaks[:EXAMPLE_ROWS]),
        note="split.near_duplicates=ignore splits them independently, so the test split would hold copies of "
             "training rows; set split.near_duplicates=group (the default) or drop, or dedupe the file")


def _custom_outcomes(frame: pd.DataFrame, task: str, checks: TextChecksConfig | None,
                     split: SplitConfig | None, allowed_labels: list[str] | None = None) -> list[ExpectationOutcome]:
    """Checks GE has no expectation for, reported like one: label imbalance, classes and rare labels, repeated
    rows, near-duplicates (and copies a split that ignores them would leak), time parsing."""
    from tuneline.text_checks import find_near_duplicates, imbalance_ratio

    outcomes: list[ExpectationOutcome] = []
    if "text" not in frame.columns or "label" not in frame.columns:
        return outcomes
    if checks is not None:
        outcomes.append(_repeat_outcome(frame, task, checks))
        if task == "classification":
            outcomes += _label_outcomes(frame, checks, allowed_labels)
    if split is not None and split.near_duplicates == "ignore":
        outcomes.append(_leak_outcome(frame, split))
    if checks is not None and task == "classification" and frame["label"].notna().any():
        ratio = imbalance_ratio(frame["label"].dropna())
        counts = frame["label"].value_counts()
        bound = checks.max_imbalance_ratio
        outcomes.append(ExpectationOutcome(
            expectation="expect_label_imbalance_ratio_to_be_at_most", column="label",
            success=bound is None or ratio <= bound,
            observed_value=f"{ratio:.2f} ({counts.index[0]!s}: {counts.iloc[0]} rows, {counts.index[-1]!s}: "
                           f"{counts.iloc[-1]} rows)" + ("" if bound is None else f", allowed {bound:.2f}"),
            note="most over least frequent label" + (" (reported only)" if bound is None else "")))
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
            note=f"normalised {split.near_duplicate_ngram}-gram Jaccard >= {split.near_duplicate_threshold}"))
    if split is not None and split.strategy == "time" and split.time_column in frame.columns:
        from tuneline.data import time_order
        from tuneline.errors import SplitError

        try:
            time_order(frame.dropna(subset=[split.time_column]), split.time_column)
            success, observed = True, None
        except SplitError as exc:
            success, observed = False, str(exc)
        outcomes.append(ExpectationOutcome(
            expectation="expect_column_values_to_be_times", column=split.time_column, success=success,
            observed_value=observed, note="split.strategy time orders rows by it"))
    return outcomes


def validate_frame(
    frame: pd.DataFrame, suite: str, allowed_labels: list[str] | None = None, task: str = "classification",
    checks: TextChecksConfig | None = None, max_length: int | None = None, tokenizer=None,
    split: SplitConfig | None = None,
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
    split, the near-duplicate groups the split will keep together, and (split.near_duplicates=ignore)
    the copies it would leak across splits.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.exceptions import SuiteParameterError

    if task == "regression" and "label" in frame.columns:
        frame = frame.assign(label_value=pd.to_numeric(frame["label"], errors="coerce").astype(float))
    suite_path = resolve_suite_path(suite)
    expectation_suite = load_suite(suite_path)
    lengths, extra = None, []
    if checks is not None:
        frame, extra, lengths = _text_check_expectations(frame, task, checks, max_length, tokenizer, split)
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
    if "pii_found" in frame.columns:
        found = frame["pii_found"][frame["pii_found"] != ""].str.split(", ").explode().value_counts()
        counts = ", ".join(f"{kind}: {int(n)} rows" for kind, n in found.items()) or "none found"
        outcomes = [replace(o, observed_value=counts) if o.column == "pii_found" else o for o in outcomes]
    outcomes += _custom_outcomes(frame, task, checks, split, allowed_labels)
    return ValidationReport(
        suite=expectation_suite.name,
        success=all(o.success for o in outcomes),
        evaluated=len(outcomes),
        outcomes=tuple(outcomes),
        token_lengths=lengths,
        max_length=max_length if lengths is not None else None,
    )


def check_splits(splits: SplitResult, checks: TextChecksConfig, task: str, near_duplicates: str = "group") -> ValidationReport:
    """The checks that need the split: every label in every split (classification), and no near-duplicate across.

    The near-duplicate outcome reports what `split_dataset` did; the split itself refuses a result
    with a near-duplicate across splits unless `near_duplicates` is `ignore`.
    """
    from tuneline.text_checks import imbalance_ratio, label_counts

    outcomes: list[ExpectationOutcome] = []
    if task == "classification" and splits.labels:
        counts = label_counts(splits.parts(), splits.labels)
        short = [{"label": label, "split": name, "rows": int(counts.loc[label, name])}
                 for name in counts.columns for label in counts.index if counts.loc[label, name] < checks.min_rows_per_label]
        ratios = ", ".join(f"{name} {imbalance_ratio(part['label']):.2f}" for name, part in splits.parts().items() if len(part))
        outcomes.append(ExpectationOutcome(
            expectation="expect_every_label_in_every_split", column="label", success=not short,
            unexpected_count=len(short),
            observed_value=f"fewest rows of a label in a split: {int(counts.min().min())}; imbalance ratio {ratios}",
            example_rows=tuple(short[:EXAMPLE_ROWS]),
            note=f"at least {checks.min_rows_per_label} rows of each label in train, validation and test"))
    if near_duplicates == "ignore":
        observed, note = "not looked for", "split.near_duplicates=ignore"
    else:
        observed = (f"{splits.near_duplicate_groups} near-duplicate groups, {splits.regrouped_rows} rows moved to "
                    f"their group's split, {splits.rows_dropped} rows removed")
        note = f"checked after the {splits.strategy} split (split.near_duplicates={near_duplicates})"
    outcomes.append(ExpectationOutcome(
        expectation="expect_no_near_duplicates_across_splits", column="text", success=True,
        unexpected_count=None if near_duplicates == "ignore" else 0, observed_value=observed, note=note))
    return ValidationReport(suite="split checks", success=all(o.success for o in outcomes),
                            evaluated=len(outcomes), outcomes=tuple(outcomes))


def raise_for_failures(report: ValidationReport, source: str) -> None:
    """Raise `DataValidationError` naming each failed expectation with counts and example rows."""
    if report.success:
        return
    lines = [f"{source} failed {len(report.failures)} of {report.evaluated} expectations of suite {report.suite!r}:"]
    lines += [f"  - {failure.describe()}" for failure in report.failures]
    lines.append("Nothing was trained or registered. Fix the data (rows are 0-based positions in the file) or the suite.")
    raise DataValidationError("\n".join(lines), failures=[f.__dict__ for f in report.failures])
