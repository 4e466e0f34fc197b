"""What a stage hands its Prefect task to publish: tables, markdown and links for the flow run's artifacts.

The stage modules (`tuneline/<stage>/stage.py`, `data/stages.py`, `registry/registration.py`, ...) compute these
and never import Prefect; `tuneline.tasks.common.publish` turns each into the Prefect artifact it describes.
Imports nothing of tuneline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Table:
    """A table artifact: one dict per row."""

    key: str
    rows: list[dict[str, Any]]
    description: str | None = None


@dataclass(frozen=True)
class Markdown:
    """A markdown artifact."""

    key: str
    markdown: str
    description: str | None = None


@dataclass(frozen=True)
class Link:
    """A link artifact (no key: one per run, such as the MLflow run's page)."""

    link: str
    text: str


Published = Table | Markdown | Link
