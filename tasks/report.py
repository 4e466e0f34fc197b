"""Stage: the run's closing summary, in the log and as a Prefect artifact."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.registry import tracking
from tuneline.summary import RetrainSummary


@task(name="publish-summary", **TRANSIENT_RETRIES)
def publish_summary(summary: RetrainSummary) -> None:
    """Print the summary table, attach it to the flow run and to the MLflow run."""
    markdown = summary.to_markdown()
    print(markdown)
    create_markdown_artifact(markdown, key="retrain-summary", description="Metrics, sizes, version and alias")
    tracking.log_summary(summary)
