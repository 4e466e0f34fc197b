"""Stage: the quality gate, then the alias: `champion` if the candidate passes, else `challenger`.

When `promotion.signoff` asks for it, a candidate that passed waits as `challenger` while the flow
pauses for a person's approve/reject in the Prefect UI (`await_signoff`).
"""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.registry import store as registry
from tuneline.config import PromotionConfig, RetrainConfig
from tuneline.data.splitting import SplitResult
from tuneline.evaluation.metrics import Baselines
from tuneline.promotion import stage
from tuneline.promotion.gate import GateResult


@task(name="gate-and-promote", **TRANSIENT_RETRIES)
def gate_and_promote(version: registry.RegisteredVersion, splits: SplitResult, test_metrics: dict[str, float],
                     config: RetrainConfig, baselines: Baselines | None = None) -> GateResult:
    """Hold the candidate to the floor (`baselines`, else those its run recorded) and compare it with the champion
    on its test split (a paired test on the per-row scores evaluate recorded); move the alias; record why."""
    result, markdown = stage.gate_and_promote(version, splits, test_metrics, config, baselines)
    publish(markdown)
    return result


@task(name="promote-version")
def promote_version(name: str, version: str, policy: PromotionConfig, reason: str, force: bool) -> str:
    """Run the gate and move `champion`; raise `GateError` with the reasons on a hold."""
    alias, markdown = stage.promote_version(name, version, policy, reason, force)
    publish(markdown)
    return alias


class SignoffForm(RunInput):
    """The form the Prefect UI shows on the paused run ("Resume"): approve or reject, with a comment."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: the candidate becomes champion; reject: it stays challenger and the champion stays."
    )
    comment: str = Field("", description="Why; recorded on the model version (signoff.comment).")
    approver: str = Field("", description="Your name; recorded on the model version (signoff.by).")


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
    table = stage.signoff_metrics(version, gate, test_metrics, config)
    publish(table)
    description = stage.signoff_description(version, gate, table.rows, settings.timeout_seconds)
    form = SignoffForm.with_initial_data(description=description)
    get_run_logger().info("waiting up to %d s for a sign-off of %s version %s: resume this flow run in the Prefect UI",
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
    result, markdown = stage.record_signoff(version, gate, outcome, approver, comment)
    publish(markdown)
    return result
