"""The data stages as the retrain runs them: ingest, clean and split with the settings they read (their cache keys),
and what each records in the run's MLflow run. The Prefect tasks of `tuneline.tasks` call these and publish what they
return.

Beyond the rest of `tuneline.data`, imports `tuneline.registry` (to record), `tuneline.validation` (the split checks)
and `tuneline.promotion` (the rows the gate reads back); never Prefect.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuneline.config import DataConfig, SplitConfig, TextChecksConfig
from tuneline.data.cleaning import CleanResult, clean_dataset
from tuneline.data.loading import (
    IngestResult,
    content_hash,
    file_hash,
    load_dataset,
    missing_path_problem,
    resolve_data_path,
)
from tuneline.data.splitting import SplitResult, label_names, split_dataset, split_lineage
from tuneline.errors import DataLoadError, SplitError
from tuneline.kinds import kind
from tuneline.promotion.gate import TRAINED_ON_ARTIFACT, trained_on_keys
from tuneline.published import Markdown
from tuneline.registry import store as registry
from tuneline.validation.suite import ValidationReport, check_splits

log = logging.getLogger(__name__)

INGEST_REPORT = "validation/ingest.json"
CALIBRATION_ROWS = 1000  # training rows kept with the run for re-export; export.calibration_rows picks from them


# --- ingest ------------------------------------------------------------------------------------------------------

def ingest_key(parameters: dict) -> str | None:
    """The file's bytes and how they are read; None for what has no bytes here (a Hub dataset id, a missing file)."""
    config: DataConfig = parameters["config"]
    try:
        path = resolve_data_path(config.path)
    except DataLoadError:
        return None
    if not path.exists():
        return None
    read = config.model_dump_json(include={"path", "format", "text_column", "label_column", "labels",
                                           "normalize_labels"})
    return f"{file_hash(path)}|{read}|{parameters.get('task', 'classification')}"


def ingest(config: DataConfig, task: str = "classification") -> IngestResult:
    """The configured file as the canonical frame, labels as the task reads them (respelt: data.normalize_labels)."""
    return load_dataset(config.path, config.text_column, config.label_column, config.format, task,
                        normalize_labels=config.normalize_labels, labels=config.labels)


def record_ingest(result: IngestResult, run_id: str) -> None:
    """What a run read, in its MLflow run and the log."""
    registry.set_tags(run_id, {"data.source": result.source, "data.hash": result.content_hash})
    registry.log_metrics(run_id, {"rows_raw": result.rows, "rows_relabelled": result.rows_relabelled})
    log.info("read %d rows from %s (sha256 %s)", result.rows, result.source, result.content_hash[:12])
    if result.relabelled:
        log.info("data.normalize_labels=true rewrote the label of %d rows: %s", result.rows_relabelled,
                 ", ".join(f"{old!r} -> {new!r}" for old, new in result.relabelled.items()))


def ingested_event(result: IngestResult, run_id: str) -> dict[str, Any]:
    """The resource and related resources of the event that records what a run read."""
    return {"resource": {
        "prefect.resource.id": f"tuneline.data.{result.content_hash}",
        "prefect.resource.name": result.source,
        "tuneline.data.source": result.source,
        "tuneline.data.hash": result.content_hash,
        "tuneline.data.rows": str(result.rows),
    }, "related": [{"prefect.resource.id": f"mlflow.run.{run_id}", "prefect.resource.role": "mlflow-run"}]}


def ingest_failure_report(config: DataConfig, error: DataLoadError) -> dict:
    """What could not be read and why; `line` and `byte_offset` where the reader could tell (else None)."""
    try:
        source = str(resolve_data_path(config.path))
    except DataLoadError:
        source = config.path
    message = str(error)
    rest = message.replace(source, "")  # a folder named "line 3" must not read as a line number
    line, offset = re.search(r"\bline (\d+)", rest), re.search(r"byte offset (\d+)", rest)
    return {"stage": "ingest", "success": False, "source": source, "format": config.format,
            "text_column": config.text_column, "label_column": config.label_column, "error": type(error).__name__,
            "problem": message, "line": int(line.group(1)) if line else None,
            "byte_offset": int(offset.group(1)) if offset else None}


def record_ingest_failure(config: DataConfig, error: DataLoadError, run_id: str) -> Markdown:
    """The ingest report in the MLflow run (`validation/ingest.json`, tags); returns it as the `ingest-report`."""
    report = ingest_failure_report(config, error)
    where = ", ".join(f"{key.replace('_', ' ')} {report[key]}" for key in ("line", "byte_offset") if report[key])
    markdown = "\n".join([
        "### Ingest: FAILED", "", f"- file: `{report['source']}` (format {report['format']}, columns "
        f"{report['text_column']!r} / {report['label_column']!r})", *([f"- where: {where}"] if where else []),
        "", "```", report["problem"], "```",
    ])
    registry.log_json(run_id, report, INGEST_REPORT)
    registry.set_tags(run_id, {"validation.success": False, "validation.stage": "ingest"})
    return Markdown("ingest-report", markdown, f"Why {report['source']} could not be read")


def dataset_resource_id(model_name: str) -> str:
    """The Prefect resource a model's new data is announced on; its retrain trigger matches it."""
    return f"tuneline.dataset.{model_name}"


@dataclass(frozen=True)
class LandedData:
    """What announcing a landed file (`tuneline land`) saw and did."""

    path: Path
    sha256: str
    previous_sha256: str | None
    announced: bool


def landed_file(path: Path) -> tuple[Path, str]:
    """The announced file, resolved, and its content hash (the one the run it starts records as data.hash)."""
    path = path.expanduser().absolute()  # not resolve(): a symbolic link loop must be named, not raise
    if not path.exists():
        raise DataLoadError(f"{missing_path_problem(path)}: nothing to announce")
    path = path.resolve()
    return path, file_hash(path)


def landed_resource(path: Path, model_name: str, sha256: str) -> dict[str, str]:
    """The resource of the event that says new data for `model_name` landed at `path`."""
    return {
        "prefect.resource.id": dataset_resource_id(model_name),
        "prefect.resource.name": path.name,
        "tuneline.model": model_name,
        "tuneline.data.path": str(path),
        "tuneline.data.sha256": sha256,
    }


# --- clean -------------------------------------------------------------------------------------------------------

def clean_key(parameters: dict) -> str:
    """The rows as read, the task and data.checks."""
    checks: TextChecksConfig = parameters.get("checks") or TextChecksConfig()
    # The rows as read, not the file's hash: one file read with another column mapping or label spelling is other data.
    task = parameters.get("task", "classification")
    return f"{content_hash(parameters['ingested'].frame)}|{task}|{checks.model_dump_json()}"


def clean(ingested: IngestResult, task: str = "classification", checks: TextChecksConfig | None = None) -> CleanResult:
    """Strip markup and noise from the text, drop empty and duplicate rows (per task), mask PII if asked."""
    checks = checks or TextChecksConfig()
    return clean_dataset(ingested.frame, task, pii=checks.pii, pii_kinds=tuple(checks.pii_kinds))


def record_clean(result: CleanResult, run_id: str) -> None:
    """Counts in the MLflow run; every dropped row, with its reason, as `data/dropped_rows.csv`."""
    repeats = int(result.dropped["reason"].str.startswith("duplicate of row").sum()) if result.rows_dropped else 0
    registry.log_metrics(run_id, {"rows_clean": result.rows_out, "rows_dropped": result.rows_dropped,
                                  "rows_dropped_as_duplicates": repeats,
                                  "rows_changed_by_cleaning": result.changed, "rows_pii_masked": result.masked})
    if result.rows_dropped:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "dropped_rows.csv"
            result.dropped.to_csv(path, index=False)
            registry.log_artifact(run_id, path, "data")
    log.info("cleaning rewrote %d texts, masked PII in %d and dropped %d of %d rows, %d of them repeats of an earlier "
             "row (kept in MLflow: data/dropped_rows.csv)", result.changed, result.masked, result.rows_dropped,
             result.rows_in, repeats)


# --- split -------------------------------------------------------------------------------------------------------

def split_key(parameters: dict) -> str:
    """The cleaned rows, the task, the source's name, the labels and checks, and every split setting."""
    data: DataConfig = parameters["data"]
    return "|".join([content_hash(parameters["cleaned"].frame), parameters.get("task", "classification"),
                     parameters["source"], data.model_dump_json(include={"labels", "checks"}),
                     parameters["config"].model_dump_json()])


def split(cleaned: CleanResult, data: DataConfig, config: SplitConfig, source: str,
          task: str = "classification") -> SplitResult:
    """The cleaned frame split, with its checks (labels per split, near-duplicates) as `checks`.

    A result whose checks failed is returned for its task to publish and stop on; one that passed must have the test
    split split.expected_test_hash names, else `SplitError`.
    """
    labels = label_names(cleaned.frame, data.labels) if kind(task).has_classes else ()
    result = split_dataset(
        cleaned.frame, labels, config.train_fraction, config.validation_fraction, config.test_fraction,
        config.seed, config.stratify, task, strategy=config.strategy, group_column=config.group_column,
        time_column=config.time_column, near_duplicates=config.near_duplicates,
        near_duplicate_threshold=config.near_duplicate_threshold, near_duplicate_ngram=config.near_duplicate_ngram,
        source=source,
    )
    report = check_splits(result, data.checks, task, config.near_duplicates, config)
    if report.success and config.expected_test_hash and result.hashes["test"] != config.expected_test_hash:
        raise SplitError(f"the test split of {source} has sha256 {result.hashes['test']}, not split.expected_test_hash "
                         f"{config.expected_test_hash}: the data, the cleaning or the split settings differ from the "
                         "run that made that test set")
    return replace(result, checks=report)  # cached with the split: record_split logs it without checking again


def record_split_checks(report: ValidationReport, run_id: str) -> Markdown:
    """The split checks in the MLflow run; returns them as the `split-checks` artifact."""
    registry.log_json(run_id, report.to_dict(), "validation/split_checks.json")
    return Markdown("split-checks", report.to_markdown(), "Labels per split, near-duplicates")


def record_split(result: SplitResult, config: SplitConfig, source: str, run_id: str,
                 task: str = "classification") -> Markdown:
    """Sizes, each split's hash and how it was split (lineage), the test and calibration rows, the split checks."""
    registry.log_metrics(run_id, {**{f"rows_{name}": size for name, size in result.sizes().items()},
                                  "rows_dropped_by_split": result.rows_dropped,
                                  "near_duplicate_groups": result.near_duplicate_groups})
    tags = {f"data.hash.{n}": h for n, h in result.hashes.items()} | split_lineage(result, config)
    if kind(task).has_classes:
        tags["labels"] = ",".join(result.labels)
    registry.set_tags(run_id, tags)
    registry.log_datasets(run_id, result.parts(), source)
    with tempfile.TemporaryDirectory() as folder:
        # The gate re-scores a champion on exactly these rows, long after this run, and leaves out of a later
        # candidate's test rows the ones this model trained on; a later re-export (the export flow) calibrates
        # static INT8 on the training rows.
        result.test[["row", "text", "label"]].to_csv(Path(folder) / "test.csv", index=False)
        trained_on = trained_on_keys([*result.train["text"], *result.validation["text"]])
        (Path(folder) / Path(TRAINED_ON_ARTIFACT).name).write_text("".join(f"{key}\n" for key in trained_on))
        result.train[["text"]].head(CALIBRATION_ROWS).to_csv(Path(folder) / "calibration.csv", index=False)
        names = ["test.csv", Path(TRAINED_ON_ARTIFACT).name, "calibration.csv"]
        if result.dropped is not None:
            result.dropped.to_csv(Path(folder) / "split_dropped_rows.csv", index=False)
            names.append("split_dropped_rows.csv")
        for name in names:
            registry.log_artifact(run_id, Path(folder) / name, "data")
    checks = record_split_checks(result.checks, run_id)
    log.info("split %s by %s: %s; %d near-duplicate groups kept together, %d rows removed",
             source, config.strategy, result.sizes(), result.near_duplicate_groups, result.rows_dropped)
    return checks
