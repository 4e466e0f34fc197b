"""Promote a registered version (through the quality gate) or roll the champion back, as Prefect flows."""

from __future__ import annotations

import tuneline.flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from tuneline.promotion import gate as gating
from tuneline.registry import store as registry
from tuneline.config import PromotionConfig


@task(name="promote-version")
def promote_version(name: str, version: str, policy: PromotionConfig, reason: str, force: bool) -> str:
    """Run the gate and move `champion`; raise `GateError` with the reasons on a hold."""
    result = gating.promote(name, version, policy, reason, force)
    create_markdown_artifact(result.decision.to_markdown(f"{name} version {version}", result.champion_version),
                             key="promotion-gate")
    return result.alias


@flow(name="promote", log_prints=True)
def promote(name: str, version: str, reason: str = "promoted from Prefect", force: bool = False,
            policy: PromotionConfig = PromotionConfig()) -> str:
    """Make `version` the champion of `name` if it passes the gate (or `force`)."""
    return promote_version(name, version, policy, reason, force)


@flow(name="rollback", log_prints=True)
def rollback(name: str, reason: str = "rolled back from Prefect") -> str:
    """Move `champion` of `name` back to the version that held it before; return that version."""
    left, restored = registry.rollback(name, reason)
    print(f"{name}: champion moved from version {left} back to version {restored}")
    return restored
