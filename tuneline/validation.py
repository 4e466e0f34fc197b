"""Validate a canonical frame against a Great Expectations suite stored as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tuneline.errors import ConfigError, DataValidationError
from tuneline.settings import PROJECT_ROOT

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

    def describe(self) -> str:
        where = f" on column {self.column!r}" if self.column else ""
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
                f"| {o.expectation} | {o.column or ''} | {'ok' if o.success else '**failed**'} "
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
    return ExpectationOutcome(
        expectation=config.type,
        column=config.kwargs.get("column"),
        success=bool(result.success),
        unexpected_count=details.get("unexpected_count"),
        observed_value=_json_safe(observed),
        example_rows=examples,
    )


def validate_frame(
    frame: pd.DataFrame, suite: str, allowed_labels: list[str] | None = None, task: str = "classification"
) -> ValidationReport:
    """Run the suite on the frame; return every expectation's outcome (does not raise on failure).

    `allowed_labels` fills the suite parameter `allowed_labels` (classification suites).
    For `regression` the suite also sees `label_value`, the label parsed as a float (NaN
    where it is not a number), so a suite can bound the target with
    `expect_column_values_to_be_between` on that column.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.exceptions import SuiteParameterError

    if task == "regression" and "label" in frame.columns:
        frame = frame.assign(label_value=pd.to_numeric(frame["label"], errors="coerce").astype(float))
    suite_path = resolve_suite_path(suite)
    expectation_suite = load_suite(suite_path)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    expectation_suite = context.suites.add(expectation_suite)
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
    outcomes = tuple(_outcome(r) for r in result.results)
    return ValidationReport(
        suite=expectation_suite.name,
        success=bool(result.success),
        evaluated=len(outcomes),
        outcomes=outcomes,
    )


def raise_for_failures(report: ValidationReport, source: str) -> None:
    """Raise `DataValidationError` naming each failed expectation with counts and example rows."""
    if report.success:
        return
    lines = [f"{source} failed {len(report.failures)} of {report.evaluated} expectations of suite {report.suite!r}:"]
    lines += [f"  - {failure.describe()}" for failure in report.failures]
    lines.append("Nothing was trained or registered. Fix the data (rows are 0-based positions in the file) or the suite.")
    raise DataValidationError("\n".join(lines), failures=[f.__dict__ for f in report.failures])
