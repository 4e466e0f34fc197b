"""The validation stages as the retrain runs them: the suite and text checks with the settings they read (their cache
key), drift against the reference profile, and what each records in the run's MLflow run. The Prefect tasks of
`tuneline.tasks` call these and publish what they return.

Beyond the rest of `tuneline.validation`, imports `tuneline.data` and `tuneline.registry` (to record and to read the
champion's profile); never Prefect.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tuneline.config import DataConfig, SplitConfig, TrainConfig
from tuneline.data.loading import IngestResult, load_dataset
from tuneline.data.splitting import label_names
from tuneline.errors import ConfigError
from tuneline.kinds import kind
from tuneline.published import Markdown, Published, Table
from tuneline.registry import store as registry
from tuneline.validation.drift import DriftReport, compare, profile, skipped
from tuneline.validation.lengths import length_histogram, load_tokenizer, plot_length_histogram
from tuneline.validation.suite import ValidationReport, resolve_suite_path, validate_frame

# What the checks read of split: a new seed or new fractions leave a validation valid.
_SPLIT_SETTINGS_CHECKED = {"strategy", "group_column", "time_column", "near_duplicates", "near_duplicate_threshold",
                           "near_duplicate_ngram"}

# Logged by every run: once the run's model is champion, the reference the next batch is compared with.
PROFILE_ARTIFACT = "data/profile.json"
DRIFT_REPORT = "validation/drift.json"


# --- validate ----------------------------------------------------------------------------------------------------

def validate_key(parameters: dict) -> str | None:
    """The data's hash, the suite file's bytes and every setting the checks read."""
    ingested: IngestResult = parameters["ingested"]
    config: DataConfig = parameters["config"]
    train: TrainConfig | None = parameters.get("train")
    split: SplitConfig | None = parameters.get("split")
    try:
        suite = hashlib.sha256(resolve_suite_path(config.expectation_suite).read_bytes()).hexdigest()
    except (OSError, ConfigError):
        return None  # the task itself says what is wrong with the suite
    return "|".join([
        ingested.content_hash, suite, parameters.get("task", "classification"),
        config.model_dump_json(exclude={"drift", "cache"}),
        "" if train is None else train.model_dump_json(include={"base_model", "max_length"}),
        "" if split is None else split.model_dump_json(include=_SPLIT_SETTINGS_CHECKED),
    ])


def validate(ingested: IngestResult, config: DataConfig, task: str = "classification",
             train: TrainConfig | None = None, split: SplitConfig | None = None) -> ValidationReport:
    """The task's suite and the text checks; with `train`, token lengths with the real tokenizer against
    train.max_length; with `split`, the group / time column and the near-duplicate groups."""
    # Only a classifier has a closed set of labels; regression and generation suites take no parameter.
    allowed = list(label_names(ingested.frame, config.labels)) if kind(task).has_classes else None
    tokenizer = load_tokenizer(train.base_model) if train is not None else None
    return validate_frame(ingested.frame, config.expectation_suite, allowed, task, config.checks,
                          train.max_length if train is not None else None, tokenizer, split, data=config)


def record_validation(report: ValidationReport, config: DataConfig, run_id: str) -> list[Published]:
    """The report in the MLflow run (JSON, tags, token-length histogram); returns its Prefect artifacts."""
    published: list[Published] = []
    registry.log_json(run_id, report.to_dict(), "validation/report.json")
    tags = {"validation.success": report.success, "validation.suite": report.suite,
            "validation.pii_policy": config.checks.pii}
    pii = next((o for o in report.outcomes if o.column == "pii_found"), None)
    if pii is not None:
        tags["validation.pii_rows"] = pii.unexpected_count or 0
    if report.truncated_share is not None:
        tags["validation.truncated_share"] = f"{report.truncated_share:.4f}"
        registry.log_metrics(run_id, {"rows_truncated_share": report.truncated_share,
                                      "tokens_p95": float(np.percentile(report.token_lengths, 95))})
        published.append(Table("token-lengths", length_histogram(report.token_lengths, report.max_length),
                               f"Rows per token length; train.max_length = {report.max_length}, "
                               f"{report.truncated_share:.1%} of rows truncated"))
        with tempfile.TemporaryDirectory() as folder:
            plot = plot_length_histogram(report.token_lengths, report.max_length, Path(folder) / "token_lengths.png")
            registry.log_artifact(run_id, plot, "validation")
    registry.set_tags(run_id, tags)
    return [*published, Markdown("validation-report", report.to_markdown(), "Great Expectations result")]


# --- drift -------------------------------------------------------------------------------------------------------

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


def check_drift(ingested: IngestResult, config: DataConfig, model_name: str, run_id: str,
                task: str = "classification") -> tuple[DriftReport, Markdown]:
    """Log the batch's profile, compare it with the reference and record the report; returns it and its artifact.

    The caller raises (`raise_for_drift`) once the artifact is published.
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
    return report, Markdown("drift-report", report.to_markdown(),
                            "Label, length and vocabulary drift vs the champion's training data")
