"""Drift of a new batch from the data the champion was trained on: label shares, text lengths, vocabulary.

`profile` summarises a frame in a small JSON-safe dict; every run logs its batch's profile with
its MLflow run, so the champion's run carries the reference the next batch is compared with.
`compare` measures three shifts, each against a bound of `DriftConfig`, and reports them as
expectation outcomes (`DriftReport` renders like a validation report):

- labels: total variation distance between the label shares (classification), or the two-sample
  Kolmogorov-Smirnov statistic of the target (regression);
- text length: the KS statistic between the character lengths of the texts;
- vocabulary: the share of the batch's word occurrences whose word is in the reference vocabulary.

A shift beyond its bound fails only when it is also unlikely to be sampling noise (its p-value
is below `DriftConfig.significance`): a batch of forty rows moves its label shares by chance
more than a batch of four thousand. Plain functions: no Prefect, no MLflow.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tuneline.kinds import kind
from tuneline.errors import DataDriftError
from tuneline.validation.suite import EXAMPLE_ROWS, ExpectationOutcome, ValidationReport, setting_value

if TYPE_CHECKING:
    from tuneline.config import DriftConfig

PROFILE_VERSION = 1
SAMPLE_SIZE = 2000  # lengths and targets kept per profile: quantiles, so a KS test sees the whole distribution
VOCABULARY_SIZE = 5000  # most frequent words kept: they cover nearly every occurrence of a batch in one language
_WORD = re.compile(r"[^\W\d_]+")  # letters only: numbers and ids change every batch without meaning drift


def _words(texts: pd.Series) -> Counter:
    counts: Counter = Counter()
    for text in texts.dropna():
        counts.update(_WORD.findall(str(text).lower()))
    return counts


def _quantile_sample(values: np.ndarray, size: int = SAMPLE_SIZE) -> list[float]:
    """`values` itself when small, else `size` evenly spaced quantiles: the same distribution in bounded JSON."""
    values = np.sort(np.asarray(values, dtype=float))
    if len(values) > size:
        values = np.quantile(values, np.linspace(0, 1, size))
    return [round(float(v), 6) for v in values]


def profile(frame: pd.DataFrame, task: str) -> dict[str, Any]:
    """A JSON-safe summary of a canonical frame (`text`, `label`): rows, label counts (classification) or a
    target sample (regression), a text-length sample and the most frequent lowercase words."""
    texts = frame["text"].dropna().astype(str)
    words = _words(texts)
    summary: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "task": task,
        "rows": int(len(frame)),
        "length_sample": _quantile_sample(texts.str.len().to_numpy()),
        "words": int(sum(words.values())),
        "vocabulary_size": len(words),
        "vocabulary": dict(words.most_common(VOCABULARY_SIZE)),
    }
    if kind(task).has_classes:
        summary["labels"] = {str(k): int(v) for k, v in frame["label"].dropna().value_counts().items()}
    elif kind(task).numeric:
        targets = pd.to_numeric(frame["label"], errors="coerce").to_numpy(dtype=float)
        summary["target_sample"] = _quantile_sample(targets[np.isfinite(targets)])
    return summary


@dataclass(frozen=True)
class DriftReport(ValidationReport):
    """A validation report of the drift measures, with what the batch was compared with and any notes."""

    reference: str = ""
    notes: tuple[str, ...] = ()
    measures: dict[str, float] = field(default_factory=dict)  # drift_label_shift, drift_length_ks, ...: metrics

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"reference": self.reference, "notes": list(self.notes), "measures": self.measures}

    def to_markdown(self) -> str:
        heading = f"### Drift vs {self.reference or 'no reference'}: {'passed' if self.success else 'FAILED'}"
        table = super().to_markdown().split("\n", 1)[1] if self.outcomes else ""
        notes = "\n".join(f"- {note}" for note in self.notes)
        examples = "\n".join(f"- {o.describe()}" for o in self.outcomes if o.example_rows)
        return "\n".join(part for part in (heading, table, notes, examples) if part)


def skipped(reference: str, note: str) -> DriftReport:
    """A passing report that compared nothing, saying why (no champion yet, drift disabled...)."""
    return DriftReport(suite="drift", success=True, evaluated=0, reference=reference, notes=(note,))


def _significant(p_value: float, config: DriftConfig) -> bool:
    return config.significance >= 1 or p_value < config.significance


def _label_outcome(reference: dict, current: dict, config: DriftConfig) -> tuple[ExpectationOutcome, float]:
    from scipy.stats import chi2_contingency

    labels = sorted(set(reference["labels"]) | set(current["labels"]))
    table = np.array([[reference["labels"].get(k, 0) for k in labels], [current["labels"].get(k, 0) for k in labels]],
                     dtype=float)
    shares = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    change = shares[1] - shares[0]
    distance = float(np.abs(change).sum() / 2)
    p_value = float(chi2_contingency(table)[1]) if len(labels) > 1 and table.sum(axis=1).all() else 0.0
    moved = np.argsort(-np.abs(change), kind="stable")[:EXAMPLE_ROWS]
    failed = distance > config.max_label_shift and _significant(p_value, config)
    return ExpectationOutcome(
        expectation="expect_label_shift_to_be_at_most", column="label", success=not failed,
        observed_value=f"total variation distance {distance:.3f} (allowed {config.max_label_shift}, p={p_value:.2g})",
        example_rows=tuple({"label": labels[i], "reference_share": round(float(shares[0, i]), 3),
                            "batch_share": round(float(shares[1, i]), 3)} for i in moved if change[i]),
        note="label shares vs the reference",
        setting=_named(config, "max_label_shift", "significance")), distance


def _named(config: DriftConfig, *fields: str) -> str:
    """The data.drift settings a measure is judged by, as `key=value` overrides."""
    return ", ".join(f"data.drift.{name}={setting_value(getattr(config, name))}" for name in fields)


def _ks_outcome(reference: list[float], current: list[float], bound: float, config: DriftConfig, expectation: str,
                column: str, unit: str, note: str, setting: str) -> tuple[ExpectationOutcome, float]:
    from scipy.stats import ks_2samp

    if not reference or not current:
        return ExpectationOutcome(expectation=expectation, column=column, success=True,
                                  observed_value="nothing to compare (an empty sample)", note=note, setting=setting), 0.0
    result = ks_2samp(reference, current)
    statistic, p_value = float(result.statistic), float(result.pvalue)
    quantiles = [(name, q) for name, q in (("p10", 10), ("median", 50), ("p90", 90))]
    examples = tuple({"quantile": name, "reference": round(float(np.percentile(reference, q)), 2),
                      "batch": round(float(np.percentile(current, q)), 2)} for name, q in quantiles)
    failed = statistic > bound and _significant(p_value, config)
    return ExpectationOutcome(
        expectation=expectation, column=column, success=not failed, example_rows=examples if failed else (),
        observed_value=f"KS statistic {statistic:.3f} (allowed {bound}, p={p_value:.2g}); median {unit} "
                       f"{examples[1]['reference']:g} -> {examples[1]['batch']:g}",
        note=note, setting=setting), statistic


def _vocabulary_outcome(reference: dict, current: dict, config: DriftConfig) -> tuple[ExpectationOutcome, float]:
    known = reference["vocabulary"]
    words = current["vocabulary"]
    total = sum(words.values())
    overlap = sum(n for word, n in words.items() if word in known) / total if total else 1.0
    new = sorted(((n, w) for w, n in words.items() if w not in known), key=lambda item: (-item[0], item[1]))
    failed = overlap < config.min_vocabulary_overlap
    return ExpectationOutcome(
        expectation="expect_vocabulary_overlap_to_be_at_least", column="text", success=not failed,
        observed_value=f"{overlap:.1%} of the batch's word occurrences are known words (at least "
                       f"{config.min_vocabulary_overlap:.0%})",
        example_rows=tuple({"new_word": w, "occurrences": int(n)} for n, w in new[:EXAMPLE_ROWS]),
        note=f"words in the reference's {len(known)} most frequent",
        setting=_named(config, "min_vocabulary_overlap")), overlap


def compare(reference: dict[str, Any], current: dict[str, Any], config: DriftConfig,
            reference_name: str = "the reference") -> DriftReport:
    """Each drift measure of `current` against `reference` (both from `profile`) and its bound in `config`."""
    task = current["task"]
    if reference.get("task") != task:
        return skipped(reference_name, f"{reference_name} was profiled as task {reference.get('task')!r}, this batch "
                                        f"is {task!r}: nothing comparable")
    outcomes, measures = [], {}
    if kind(task).has_classes:
        outcome, measures["drift_label_shift"] = _label_outcome(reference, current, config)
        outcomes.append(outcome)
    elif kind(task).numeric:
        outcome, measures["drift_target_ks"] = _ks_outcome(
            reference["target_sample"], current["target_sample"], config.max_label_shift, config,
            "expect_target_shift_to_be_at_most", "label", "target",
            "the target's distribution vs the reference (max_label_shift as a KS statistic)",
            _named(config, "max_label_shift", "significance"))
        outcomes.append(outcome)
    outcome, measures["drift_length_ks"] = _ks_outcome(
        reference["length_sample"], current["length_sample"], config.max_length_ks, config,
        "expect_text_length_shift_to_be_at_most", "text", "characters",
        "text lengths in characters vs the reference", _named(config, "max_length_ks", "significance"))
    outcomes.append(outcome)
    outcome, measures["drift_vocabulary_overlap"] = _vocabulary_outcome(reference, current, config)
    outcomes.append(outcome)
    notes = (f"reference: {reference['rows']} rows; batch: {current['rows']} rows",)
    if kind(task).generative:
        notes += (f"task {task}: targets are text, so no label measure",)
    return DriftReport(suite="drift", success=all(o.success for o in outcomes), evaluated=len(outcomes),
                       outcomes=tuple(outcomes), reference=reference_name, notes=notes,
                       measures={k: round(v, 6) for k, v in measures.items() if math.isfinite(v)})


def raise_for_drift(report: DriftReport, source: str) -> None:
    """`DataDriftError` naming each measure beyond its bound, with the labels or words that moved most."""
    if report.success:
        return
    lines = [f"{source} drifted from {report.reference} beyond the data.drift bounds on {len(report.failures)} of "
             f"{report.evaluated} measures:"]
    lines += [f"  - {failure.describe()}" for failure in report.failures]
    lines.append("Nothing was trained or registered. If the change is real (a new product line, a new season), "
                 "compare with data of its kind (data.drift.reference=<file>), loosen the setting named on the line "
                 "that failed, or set data.drift.enabled=false for this run.")
    raise DataDriftError("\n".join(lines), failures=[f.__dict__ for f in report.failures])
