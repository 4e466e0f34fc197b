"""Stage: profile the batch and compare it with the data the champion was trained on (data.drift)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.registry import store as registry
from tuneline.config import DataConfig
from tuneline.data.loading import IngestResult, load_dataset
from tuneline.validation.drift import DriftReport, compare, profile, raise_for_drift, skipped

# Logged by every run: once the run's model is champion, the reference the next batch is compared with.
PROFILE_ARTIFACT = "data/profile.json"
DRIFT_REPORT = "validation/drift.json"


def champion_profile(model_name: str) -> tuple[dict[str, Any] | None, str]:
    """The data profile logged with the champion's run, and a name for it; (None, why) when there is none."""
    version = registry.version_by_alias(model_name, registry.CHAMPION)
    if version is None:
        return None, f"no version of {model_name!r} holds the champion alias yet: nothing to compare with"
    name = f"champion {model_name} version {version.version} (run {version.run_id})"
    logged = {a.path for a in registry.client().list_artifacts(version.run_id, str(Path(PROFILE_ARTIFACT).parent))}
    if PROFILE_ARTIFACT not in logged:
        return None, (f"{name} has no {PROFILE_ARTIFACT} (trained before drift profiles were logged): "
                      "nothing to compare with")
    with tempfile.TemporaryDirectory() as folder:
        path = registry.client().download_artifacts(version.run_id, PROFILE_ARTIFACT, folder)
        return json.loads(Path(path).read_text()), name


def reference_profile(config: DataConfig, model_name: str, task: str) -> tuple[dict[str, Any] | None, str]:
    """data.drift.reference: the champion's profile, or the profile of a data file read like data.path."""
    if config.drift.reference == "champion":
        return champion_profile(model_name)
    reference = load_dataset(config.drift.reference, config.text_column, config.label_column, "auto", task)
    return profile(reference.frame, task), f"data.drift.reference {reference.source}"


@task(name="check-drift", **TRANSIENT_RETRIES)
def check_drift(ingested: IngestResult, config: DataConfig, model_name: str, run_id: str,
                task: str = "classification") -> DriftReport:
    """Log the batch's profile, compare it with the reference, publish the report; `DataDriftError` beyond the bounds.

    Never cached (the champion moves between runs); the verdict is deterministic, so only a
    transient fault reading MLflow is retried.
    """
    batch = profile(ingested.frame, task)
    registry.log_json(run_id, batch, PROFILE_ARTIFACT)
    if not config.drift.enabled:
        report = skipped("nothing", "data.drift.enabled=false: the batch's profile is logged, nothing is compared")
    else:
        reference, name = reference_profile(config, model_name, task)
        report = compare(reference, batch, config.drift, name) if reference is not None else skipped("nothing", name)
    registry.log_json(run_id, report.to_dict(), DRIFT_REPORT)
    registry.set_tags(run_id, {"drift.success": report.success, "drift.reference": report.reference})
    if report.measures:
        registry.log_metrics(run_id, report.measures)
    create_markdown_artifact(report.to_markdown(), key="drift-report",
                             description="Label, length and vocabulary drift vs the champion's training data")
    raise_for_drift(report, ingested.source)
    return report
