"""The quality gate: should a candidate version take the `champion` alias?

`decide` is pure: metrics in, decision out. Fetching metrics and moving
aliases is the registry's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneline.config import PromotionConfig


@dataclass(frozen=True)
class ModelMetrics:
    """Test metrics of one version on one test split (fractions, not percent)."""

    accuracy: float
    macro_f1: float
    int8_accuracy: float | None = None
    test_hash: str | None = None  # content hash of the test split they were measured on

    def get(self, name: str) -> float:
        return getattr(self, name)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]

    @property
    def verdict(self) -> str:
        return "promote" if self.promote else "hold"

    def to_markdown(self, candidate: str, champion: str | None) -> str:
        title = f"### Gate: {candidate} {'-> champion' if self.promote else 'stays challenger'}"
        against = f" (against champion {champion})" if champion else ""
        return "\n".join([title + against, ""] + [f"- {reason}" for reason in self.reasons])


def decide(candidate: ModelMetrics, champion: ModelMetrics | None, policy: PromotionConfig) -> Decision:
    """Promote only if the candidate is no worse than the champion on the same test data.

    Checks, all of which must pass: the INT8 copy kept its accuracy; the
    primary metric improved by at least `min_improvement`; no guarded metric
    dropped by more than `max_guarded_drop`. Every check adds a reason,
    passed or failed, so a hold explains itself.
    """
    failed: list[str] = []
    passed: list[str] = []
    if candidate.int8_accuracy is not None:
        loss = candidate.accuracy - candidate.int8_accuracy
        line = (f"INT8 accuracy {candidate.int8_accuracy:.4f} vs PyTorch {candidate.accuracy:.4f}: "
                f"loss {loss:+.4f}, allowed {policy.max_int8_accuracy_drop:.4f}")
        (failed if loss > policy.max_int8_accuracy_drop + 1e-12 else passed).append(line)
    if champion is None:
        passed.append("no version holds champion yet")
        return Decision(promote=not failed, reasons=tuple(failed + passed))
    if candidate.test_hash and champion.test_hash and candidate.test_hash != champion.test_hash:
        raise ValueError(
            "candidate and champion metrics come from different test splits; re-evaluate the champion "
            "on the candidate's test split before deciding"
        )
    name = policy.primary_metric
    gain = candidate.get(name) - champion.get(name)
    line = (f"{name} {candidate.get(name):.4f} vs champion {champion.get(name):.4f}: "
            f"change {gain:+.4f}, required at least {policy.min_improvement:+.4f}")
    (failed if gain < policy.min_improvement - 1e-12 else passed).append(line)
    for guarded in policy.guarded_metrics:
        drop = champion.get(guarded) - candidate.get(guarded)
        line = (f"{guarded} {candidate.get(guarded):.4f} vs champion {champion.get(guarded):.4f}: "
                f"drop {drop:+.4f}, allowed {policy.max_guarded_drop:.4f}")
        (failed if drop > policy.max_guarded_drop + 1e-12 else passed).append(line)
    return Decision(promote=not failed, reasons=tuple(failed + passed))
