"""The quality gate: should a candidate version take the `champion` alias?

`decide` is pure: metrics in, decision out. Fetching metrics and moving
aliases is the registry's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneline.config import LOWER_IS_BETTER, PromotionConfig, SignoffConfig


@dataclass(frozen=True)
class ModelMetrics:
    """Test metrics of one version on one test split: `{"accuracy": 0.91, "macro_f1": 0.90}`, `{"mse": ...}`.

    Fractions, except BLEU (0-100) and errors in the target's own unit.
    """

    values: dict[str, float]
    test_hash: str | None = None  # content hash of the test split they were measured on

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

    @property
    def verdict(self) -> str:
        return "promote" if self.promote else "hold"

    def to_markdown(self, candidate: str, champion: str | None, forced: bool = False) -> str:
        """The decision as Markdown; `forced`: the candidate was made champion past a hold (promote --force)."""
        outcome = "-> champion" if self.promote else "-> champion, forced past the gate" if forced else "stays challenger"
        title = f"### Gate: {candidate} {outcome}"
        against = f" (against champion {champion})" if champion else ""
        return "\n".join([title + against, ""] + [f"- {reason}" for reason in self.reasons])


def decide(candidate: ModelMetrics, champion: ModelMetrics | None, policy: PromotionConfig) -> Decision:
    """Promote only if the candidate is no worse than the champion on the same test data.

    Checks, all of which must pass: the primary metric improved by at least
    `min_improvement`; no guarded metric got worse by more than
    `max_guarded_drop`. For errors (mse, mae) lower is better, so improving
    means going down. Every check adds a reason, passed or failed, so a hold
    explains itself. (Whether the INT8 copy kept its accuracy was checked
    before registration: `tuneline.variants.check_quantized`.)
    """
    failed: list[str] = []
    passed: list[str] = []
    if champion is None:
        return Decision(promote=True, reasons=("no version holds champion yet",))
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
    (failed if gain < policy.min_improvement - 1e-12 else passed).append(line)
    margin = gain - policy.min_improvement
    for guarded in policy.guarded_metrics:
        drop = -_gain(guarded, candidate, champion)
        line = (f"{guarded} {candidate.get(guarded):.4f} vs champion {champion.get(guarded):.4f}: "
                f"{'worse by' if guarded in LOWER_IS_BETTER else 'drop'} {drop:+.4f}, allowed {policy.max_guarded_drop:.4f}")
        (failed if drop > policy.max_guarded_drop + 1e-12 else passed).append(line)
    return Decision(promote=not failed, reasons=tuple(failed + passed), margin=margin)


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


def comparison_rows(candidate: ModelMetrics, champion: ModelMetrics | None, primary: str) -> list[dict[str, object]]:
    """Candidate vs champion, one row per metric (primary first): what a person signing off looks at.

    `better` says whether the candidate is better on that metric, whichever way it points.
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
        rows.append(row)
    return rows


def _gain(name: str, candidate: ModelMetrics, champion: ModelMetrics) -> float:
    """How much better the candidate is on `name`: positive is better, whichever way the metric points."""
    difference = candidate.get(name) - champion.get(name)
    return -difference if name in LOWER_IS_BETTER else difference
