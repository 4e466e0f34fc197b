"""The promotion stages as the retrain and promote flows run them: the gate and the alias it moves, what a person
signing off reads, the sign-off acted on, and what each records in the candidate's MLflow run. The Prefect tasks of
`tuneline.tasks` call these and publish what they return; pausing for the sign-off is Prefect's, in the task module.

Beyond the rest of `tuneline.promotion`, imports `tuneline.data` (the split) and `tuneline.registry`; never Prefect.
"""

from __future__ import annotations

import logging

from tuneline.config import PromotionConfig, RetrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.evaluation.metrics import Baselines
from tuneline.promotion.gate import GateResult, apply_signoff, promote, recorded_rows, run_gate
from tuneline.promotion.policy import ModelMetrics, comparison_rows, markdown_table
from tuneline.published import Markdown, Table
from tuneline.registry import store as registry

log = logging.getLogger(__name__)


def gate_and_promote(version: registry.RegisteredVersion, splits: SplitResult, test_metrics: dict[str, float],
                     config: RetrainConfig, baselines: Baselines | None = None) -> tuple[GateResult, Markdown]:
    """Hold the candidate to the floor (`baselines`, else those its run recorded) and compare it with the champion
    on its test split (a paired test on the per-row scores evaluate recorded); move the alias; record why (tags,
    `gate.md`). Returns the result and the `promotion-gate` artifact."""
    candidate = ModelMetrics(dict(test_metrics), test_hash=splits.hashes["test"],
                             per_row=recorded_rows(version.run_id, len(splits.test)))
    result = run_gate(version.name, version.version, candidate, splits.test, config.promotion,
                      config.train.max_length, config.train.eval_batch_size, config.task, config.generation,
                      baselines)
    markdown = result.decision.to_markdown(f"{version.name} version {version.version}", result.champion_version)
    if result.awaiting_signoff:
        markdown += ("\n\nPassed the gate; waits as challenger for a sign-off "
                     f"(promotion.signoff.policy={config.promotion.signoff.policy}).")
    registry.set_tags(version.run_id, {
        "alias": result.alias, "registered_version": version.version, "gate.verdict": result.decision.verdict,
        "gate.margin": "" if result.decision.margin is None else f"{result.decision.margin:.6f}",
        "signoff.status": "pending" if result.awaiting_signoff else "not asked"})
    registry.client().log_text(version.run_id, markdown, "gate.md")
    log.info("%s version %s is now %s%s", version.name, version.version, result.alias,
             " (awaiting sign-off)" if result.awaiting_signoff else "")
    return result, Markdown("promotion-gate", markdown,
                            "The floor (trivial baselines) and candidate vs champion, with the reasons")


def signoff_metrics(version: registry.RegisteredVersion, gate: GateResult, test_metrics: dict[str, float],
                    config: RetrainConfig) -> Table:
    """The table a person signing off compares: candidate vs champion on the rows both were scored on, baselines."""
    candidate = gate.candidate_metrics or ModelMetrics(dict(test_metrics))  # on the rows the champion was scored on
    rows = list(gate.decision.table) or comparison_rows(candidate, gate.champion_metrics,
                                                        config.promotion.primary_metric, gate.baselines)
    return Table("signoff-metrics", rows,
                 f"{version.name} version {version.version} vs champion {gate.champion_version}")


def signoff_description(version: registry.RegisteredVersion, gate: GateResult, rows: list[dict[str, object]],
                        timeout_seconds: int) -> str:
    """The markdown a person reads before approving: the metrics table and the gate's reasons."""
    table = markdown_table(rows)
    against = f"champion version {gate.champion_version}" if gate.champion_version else "no champion yet"
    return "\n".join([
        f"## Sign-off: {version.name} version {version.version} vs {against}",
        "",
        "Test split of this run, less any rows the champion trained on; both models scored on the same rows. "
        "Baselines: trivial models scored on this run's whole test split (the floor).",
        "",
        *table,
        "",
        "Gate: " + "; ".join(gate.decision.reasons),
        "",
        f"**approve** makes version {version.version} the champion; **reject** keeps it challenger. "
        f"No answer within {timeout_seconds} s counts as a rejection.",
    ])


def record_signoff(version: registry.RegisteredVersion, gate: GateResult, outcome: str, approver: str,
                   comment: str) -> tuple[GateResult, Markdown]:
    """Move `champion` on approval; record the decision, approver and comment on the version and the run (tags,
    `signoff.md`). Returns the result and the `promotion-signoff` artifact."""
    result = apply_signoff(version.name, version.version, gate, outcome, approver, comment)
    markdown = result.decision.to_markdown(f"{version.name} version {version.version}", result.champion_version)
    registry.set_tags(version.run_id, {"alias": result.alias, "signoff.status": "done",
                                       "signoff.decision": result.signoff, "signoff.by": approver,
                                       "signoff.comment": comment})
    registry.client().log_text(version.run_id, markdown, "signoff.md")
    log.info("sign-off %s by %s: %s version %s is now %s", result.signoff, approver, version.name, version.version,
             result.alias)
    return result, Markdown("promotion-signoff", markdown, "The sign-off and what it did")


def promote_version(name: str, version: str, policy: PromotionConfig, reason: str,
                    force: bool) -> tuple[str, Markdown]:
    """Run the gate on a registered version and move `champion`; `GateError` with the reasons on a hold. Returns the
    alias the version holds and the `promotion-gate` artifact."""
    result = promote(name, version, policy, reason, force)
    return result.alias, Markdown("promotion-gate",
                                  result.decision.to_markdown(f"{name} version {version}", result.champion_version))
