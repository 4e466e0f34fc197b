"""The quality gate: should a candidate version take the `champion` alias?

`decide` is pure: metrics in, decision out. Fetching metrics and moving
aliases is the registry's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneline.config import LOWER_IS_BETTER, PromotionConfig, SignoffConfig
from tuneline.evaluation.metrics import PAIRED_SERIES, Baselines, PairedTest, paired_test

# The best value each metric can take: a baseline already there cannot be beaten, only matched.
PERFECT = {"accuracy": 1.0, "macro_f1": 1.0, "r2": 1.0, "mse": 0.0, "mae": 0.0,
           "bleu": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


@dataclass(frozen=True)
class ModelMetrics:
    """Test metrics of one version on one test split: `{"accuracy": 0.91, "macro_f1": 0.90}`, `{"mse": ...}`.

    Fractions, except BLEU (0-100) and errors in the target's own unit. `per_row`: the per-row scores
    (`tuneline.evaluation.metrics.row_scores`: `correct`, `squared_error`, ...) the gate's paired test runs on; without
    them the gate judges by the point bound alone.
    """

    values: dict[str, float]
    test_hash: str | None = None  # content hash of the test split they were measured on
    per_row: dict[str, tuple[float, ...]] | None = None

    def get(self, name: str) -> float:
        if name not in self.values:
            raise KeyError(f"no test metric {name!r} recorded; recorded: {sorted(self.values)}")
        return self.values[name]


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    # How far the candidate cleared the bar (champion + min_improvement) on the primary metric, in its unit,
    # positive = better; None when there was no champion to compare with.
    margin: float | None = None
    # Candidate, champion and baselines side by side, one row per metric (`comparison_rows`)
    table: tuple[dict[str, object], ...] = ()

    @property
    def verdict(self) -> str:
        return "promote" if self.promote else "hold"

    def to_markdown(self, candidate: str, champion: str | None, forced: bool = False) -> str:
        """The decision as Markdown; `forced`: the candidate was made champion past a hold (promote --force)."""
        outcome = "-> champion" if self.promote else "-> champion, forced past the gate" if forced else "stays challenger"
        title = f"### Gate: {candidate} {outcome}"
        against = f" (against champion {champion})" if champion else ""
        lines = [title + against, ""] + [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines + (["", *markdown_table(list(self.table))] if self.table else []))


def markdown_table(rows: list[dict[str, object]]) -> list[str]:
    """Rows of dicts as Markdown table lines, columns in the first row's order."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return lines + ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]


def decide(candidate: ModelMetrics, champion: ModelMetrics | None, policy: PromotionConfig,
           baselines: Baselines | None, floor_metrics: ModelMetrics | None = None) -> Decision:
    """Promote only if the candidate clears the floor and is no worse than the champion on the same test data.

    The floor, first version included: the primary metric beats the trivial baseline (majority class, train
    mean, copied input) and, for classification unless `require_beat_bow` is false, the bag-of-words baseline
    (a baseline already at the metric's perfect score need only be matched); every `min_metrics` minimum is
    met (a maximum for mse and mae). `floor_metrics`: the candidate's metrics on the whole test split the
    baselines were scored on, when `candidate` covers fewer rows (rows the champion trained on left out).
    Against the champion: the primary metric improved by at least `min_improvement`; no guarded metric got
    worse by more than `max_guarded_drop`. A loss (the candidate worse than the champion) fails only when
    the paired test on the per-row scores also finds it significant at `significance`; a required gain
    (`min_improvement` > 0) must be met as it is. For errors (mse, mae) lower is better. Every check adds
    a reason, passed or failed, so a hold explains itself. (Whether the INT8 copy kept its accuracy was
    checked before registration: `tuneline.export.variants.check_quantized`.)
    """
    # Reasons: failed checks first (the floor's, then the champion comparison's), then passed ones (the other way)
    failed, floor_passed = _floor(floor_metrics or candidate, policy, baselines)
    passed: list[str] = []
    table = tuple(comparison_rows(candidate, champion, policy.primary_metric, baselines, floor_metrics))
    if champion is None:
        passed.append("no version holds champion yet")
        return Decision(promote=not failed, reasons=tuple(failed + passed + floor_passed), table=table)
    if candidate.test_hash and champion.test_hash and candidate.test_hash != champion.test_hash:
        raise ValueError(
            "candidate and champion metrics come from different test splits; re-evaluate the champion "
            "on the candidate's test split before deciding"
        )
    name = policy.primary_metric
    gain = _gain(name, candidate, champion)
    line = (f"{name} {candidate.get(name):.4f} vs champion {champion.get(name):.4f}: "
            f"{'improvement' if name in LOWER_IS_BETTER else 'change'} {gain:+.4f}, "
            f"required at least {policy.min_improvement:+.4f}")
    short = gain < policy.min_improvement - 1e-12
    if short and gain < -1e-12 and policy.min_improvement <= 0:  # a loss beyond the allowance: is it chance?
        short, line = _judged(name, candidate, champion, policy.significance, line)
    (failed if short else passed).append(line)
    margin = gain - policy.min_improvement
    for guarded in policy.guarded_metrics:
        drop = -_gain(guarded, candidate, champion)
        line = (f"{guarded} {candidate.get(guarded):.4f} vs champion {champion.get(guarded):.4f}: "
                f"{'worse by' if guarded in LOWER_IS_BETTER else 'drop'} {drop:+.4f}, allowed {policy.max_guarded_drop:.4f}")
        worse = drop > policy.max_guarded_drop + 1e-12
        if worse:
            worse, line = _judged(guarded, candidate, champion, policy.significance, line)
        (failed if worse else passed).append(line)
    return Decision(promote=not failed, reasons=tuple(failed + passed + floor_passed), margin=margin, table=table)


def champion_paired_test(name: str, candidate: ModelMetrics, champion: ModelMetrics) -> PairedTest | None:
    """The paired test of the candidate against the champion on `name`'s per-row series; None without them."""
    series = PAIRED_SERIES[name]
    ours, theirs = (candidate.per_row or {}).get(series), (champion.per_row or {}).get(series)
    if ours is None or theirs is None or len(ours) != len(theirs):
        return None
    return paired_test(series, theirs, ours)


def _judged(name: str, candidate: ModelMetrics, champion: ModelMetrics, level: float, line: str) -> tuple[bool, str]:
    """Whether a loss beyond its point bound fails, by the paired test when both models have per-row scores."""
    test = champion_paired_test(name, candidate, champion)
    if test is None:
        return True, line + " (no per-row scores for a paired test: the point bound decides)"
    significant = test.significant(level)
    verdict = "significant" if significant else "not significant, within chance on this many rows"
    return significant, (f"{line}; {test.describe('the champion', 'the candidate')}: {verdict} at "
                         f"promotion.significance {level:g}")


def _floor(candidate: ModelMetrics, policy: PromotionConfig, baselines: Baselines | None) -> tuple[list[str], list[str]]:
    """The floor's failed and passed checks: the baselines on the primary metric, then `min_metrics`."""
    failed: list[str] = []
    passed: list[str] = []
    name = policy.primary_metric
    if baselines is None:
        failed.append("floor: no baselines were scored on the candidate's test split, so it cannot be shown to beat "
                      "them; register it through the retrain flow (or promote --force, on the record)")
    else:
        if candidate.test_hash and baselines.test_hash and candidate.test_hash != baselines.test_hash:
            raise ValueError("the baselines were scored on another test split than the candidate's metrics")
        required = [baselines.trivial]
        if baselines.bag_of_words is not None and policy.require_beat_bow:
            required.append(baselines.bag_of_words)
        for baseline in baselines.all():
            if name not in baseline.metrics:
                raise KeyError(f"baseline {baseline.name!r} has no {name!r}; it has {sorted(baseline.metrics)}")
            ours, theirs = candidate.get(name), baseline.metrics[name]
            gain = theirs - ours if name in LOWER_IS_BETTER else ours - theirs
            beats = gain > 1e-12 or (abs(theirs - PERFECT[name]) <= 1e-12 and abs(gain) <= 1e-12)
            line = (f"floor: {name} {ours:.4f} vs {baseline.name} baseline {theirs:.4f} ({baseline.detail}, "
                    f"{baselines.rows} test rows): {'beats it' if beats else 'does not beat it'}")
            if baseline not in required:
                passed.append(line + " (not required: promotion.require_beat_bow=false)")
            elif beats:
                passed.append(line)
            else:
                failed.append(line + ("; set promotion.require_beat_bow=false to require only the trivial baseline"
                                      if baseline is baselines.bag_of_words else ""))
    for metric, bound in policy.min_metrics.items():
        if metric not in candidate.values:
            failed.append(f"floor: promotion.min_metrics names {metric}, which this version does not record "
                          f"(it records {sorted(candidate.values)})")
            continue
        value, lower = candidate.get(metric), metric in LOWER_IS_BETTER
        ok = value <= bound + 1e-12 if lower else value >= bound - 1e-12
        line = f"floor: {metric} {value:.4f}, promotion.min_metrics requires {'at most' if lower else 'at least'} {bound:.4f}"
        (passed if ok else failed).append(line)
    return failed, passed


def needs_signoff(decision: Decision, policy: SignoffConfig) -> bool:
    """Whether a person must approve this decision before the candidate takes `champion`.

    Only a candidate that passed the gate is asked about: `always` asks every time,
    `below_margin` when it cleared the bar by less than `policy.margin` (a first version,
    with no champion to compare with, is not asked), `never` never.
    """
    if not decision.promote or policy.policy == "never":
        return False
    if policy.policy == "always":
        return True
    return decision.margin is not None and decision.margin < policy.margin - 1e-12


def comparison_rows(candidate: ModelMetrics, champion: ModelMetrics | None, primary: str,
                    baselines: Baselines | None = None, whole: ModelMetrics | None = None) -> list[dict[str, object]]:
    """Candidate vs champion, one row per metric (primary first), then each baseline's score: what a person
    signing off looks at.

    `better` says whether the candidate is better on that metric, whichever way it points. `whole`: the
    candidate on its whole test split (where the baselines were scored), when `candidate` covers fewer rows.
    """
    names = [primary] + sorted(name for name in candidate.values if name != primary)
    rows = []
    for name in names:
        row: dict[str, object] = {"metric": name + (" (primary)" if name == primary else ""),
                                  "candidate": round(candidate.get(name), 4)}
        if champion is not None and name in champion.values:
            row["champion"] = round(champion.get(name), 4)
            gain = _gain(name, candidate, champion)
            row["change"] = f"{candidate.get(name) - champion.get(name):+.4f}"
            row["better"] = "yes" if gain > 1e-12 else ("same" if abs(gain) <= 1e-12 else "no")
        else:
            row |= {"champion": "", "change": "", "better": ""}
        if whole is not None:
            row["candidate, whole test split"] = round(whole.get(name), 4) if name in whole.values else ""
        for baseline in baselines.all() if baselines is not None else ():
            value = baseline.metrics.get(name)
            row[f"{baseline.name} baseline"] = "" if value is None else round(value, 4)
        rows.append(row)
    return rows


def _gain(name: str, candidate: ModelMetrics, champion: ModelMetrics) -> float:
    """How much better the candidate is on `name`: positive is better, whichever way the metric points."""
    difference = candidate.get(name) - champion.get(name)
    return -difference if name in LOWER_IS_BETTER else difference
