"""Stage: the quality gate, then the alias: `champion` if the candidate passes, else `challenger`.

When `promotion.signoff` asks for it, a candidate that passed waits as `challenger` while the flow
pauses for a person's approve/reject in the Prefect UI (`await_signoff`).
"""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.registry import store as registry
from tuneline.config import RetrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.evaluation.metrics import Baselines
from tuneline.promotion.gate import GateResult, apply_signoff, recorded_rows, run_gate
from tuneline.promotion.policy import ModelMetrics, comparison_rows, markdown_table


@task(name="gate-and-promote", **TRANSIENT_RETRIES)
def gate_and_promote(version: registry.RegisteredVersion, splits: SplitResult, test_metrics: dict[str, float],
                     config: RetrainConfig, baselines: Baselines | None = None) -> GateResult:
    """Hold the candidate to the floor (`baselines`, else those its run recorded) and compare it with the champion
    on its test split (a paired test on the per-row scores evaluate recorded); move the alias; record why."""
    candidate = ModelMetrics(dict(test_metrics), test_hash=splits.hashes["test"],
                             per_row=recorded_rows(version.run_id, len(splits.test)))
    result = run_gate(version.name, version.version, candidate, splits.test, config.promotion,
                      config.train.max_length, config.train.eval_batch_size, config.task, config.generation,
                      baselines)
    markdown = result.decision.to_markdown(f"{version.name} version {version.version}", result.champion_version)
    if result.awaiting_signoff:
        markdown += f"\n\nPassed the gate; waits as challenger for a sign-off (promotion.signoff.policy={config.promotion.signoff.policy})."
    registry.set_tags(version.run_id, {"alias": result.alias, "registered_version": version.version,
                                       "gate.verdict": result.decision.verdict,
                                       "gate.margin": "" if result.decision.margin is None else f"{result.decision.margin:.6f}",
                                       "signoff.status": "pending" if result.awaiting_signoff else "not asked"})
    registry.client().log_text(version.run_id, markdown, "gate.md")
    create_markdown_artifact(markdown, key="promotion-gate",
                             description="The floor (trivial baselines) and candidate vs champion, with the reasons")
    get_run_logger().info("%s version %s is now %s%s", version.name, version.version, result.alias,
                          " (awaiting sign-off)" if result.awaiting_signoff else "")
    return result


class SignoffForm(RunInput):
    """The form the Prefect UI shows on the paused run ("Resume"): approve or reject, with a comment."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: the candidate becomes champion; reject: it stays challenger and the champion stays."
    )
    comment: str = Field("", description="Why; recorded on the model version (signoff.comment).")
    approver: str = Field("", description="Your name; recorded on the model version (signoff.by).")


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


def await_signoff(version: registry.RegisteredVersion, gate: GateResult, test_metrics: dict[str, float],
                  config: RetrainConfig) -> GateResult:
    """Pause the flow run for a person's decision, then act on it (call from a flow, not a task).

    The metrics table goes to a Prefect table artifact and into the pause's form; the flow
    waits up to `promotion.signoff.timeout_seconds`, and no answer is a rejection.
    """
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run
    from prefect.states import Running

    settings = config.promotion.signoff
    candidate = gate.candidate_metrics or ModelMetrics(dict(test_metrics))  # on the rows the champion was scored on
    rows = list(gate.decision.table) or comparison_rows(candidate, gate.champion_metrics,
                                                        config.promotion.primary_metric, gate.baselines)
    create_table_artifact(rows, key="signoff-metrics",
                          description=f"{version.name} version {version.version} vs champion {gate.champion_version}")
    form = SignoffForm.with_initial_data(description=signoff_description(version, gate, rows, settings.timeout_seconds))
    logger = get_run_logger()
    logger.info("waiting up to %d s for a sign-off of %s version %s: resume this flow run in the Prefect UI",
                settings.timeout_seconds, version.name, version.version)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=settings.timeout_seconds,
                                poll_interval=settings.poll_seconds, key=f"signoff-{version.name}-{version.version}")
    except FlowPauseTimeout:
        outcome, approver, comment = "timed_out", "nobody", f"no decision within {settings.timeout_seconds} s"
        # The server fails a run that leaves an expired pause; the flow itself must still record the rejection
        # and finish, so its state is set back to Running on purpose.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.get_id(), Running(message="sign-off timed out: rejected"), force=True)
    else:
        outcome = "approved" if answer.decision == "approve" else "rejected"
        approver, comment = answer.approver.strip() or "unnamed (Prefect UI)", answer.comment.strip()
    return record_signoff(version, gate, outcome, approver, comment)


@task(name="record-signoff", **TRANSIENT_RETRIES)
def record_signoff(version: registry.RegisteredVersion, gate: GateResult, outcome: str, approver: str,
                   comment: str) -> GateResult:
    """Move `champion` on approval; record the decision, approver and comment on the version and the run."""
    result = apply_signoff(version.name, version.version, gate, outcome, approver, comment)
    markdown = result.decision.to_markdown(f"{version.name} version {version.version}", result.champion_version)
    registry.set_tags(version.run_id, {"alias": result.alias, "signoff.status": "done", "signoff.decision": result.signoff,
                                       "signoff.by": approver, "signoff.comment": comment})
    registry.client().log_text(version.run_id, markdown, "signoff.md")
    create_markdown_artifact(markdown, key="promotion-signoff", description="The sign-off and what it did")
    get_run_logger().info("sign-off %s by %s: %s version %s is now %s", result.signoff, approver, version.name,
                          version.version, result.alias)
    return result
