"""Promote a registered version (through the quality gate) or roll the champion back, as Prefect flows."""

from __future__ import annotations

import tuneline.flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow

from tuneline.tasks.promote import promote_version
from tuneline.registry import store as registry
from tuneline.config import PromotionConfig


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
