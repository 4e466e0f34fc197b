"""Stage: the quality gate, then the alias: `champion` if the candidate passes, else `challenger`."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import RetrainConfig
from tuneline.data import SplitResult
from tuneline.gating import GateResult, run_gate
from tuneline.promotion import ModelMetrics


@task(name="gate-and-promote", **TRANSIENT_RETRIES)
def gate_and_promote(version: registry.RegisteredVersion, splits: SplitResult, test_metrics: dict[str, float],
                     config: RetrainConfig) -> GateResult:
    """Compare the candidate with the champion on the candidate's test split; move the alias; record why."""
    candidate = ModelMetrics(dict(test_metrics), test_hash=splits.hashes["test"])
    result = run_gate(version.name, version.version, candidate, splits.test, config.promotion,
                      config.train.max_length, config.train.eval_batch_size, config.task, config.generation)
    markdown = result.decision.to_markdown(f"{version.name} version {version.version}", result.champion_version)
    registry.set_tags(version.run_id, {"alias": result.alias, "registered_version": version.version,
                                       "gate.verdict": result.decision.verdict})
    registry.client().log_text(version.run_id, markdown, "gate.md")
    create_markdown_artifact(markdown, key="promotion-gate", description="Candidate vs champion")
    get_run_logger().info("%s version %s is now %s", version.name, version.version, result.alias)
    return result
