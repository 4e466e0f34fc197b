"""Stage: read the data and hash it. Also the events that tell Prefect about data.

Two events, on purpose distinct:
- `tuneline.data.landed` (from `tuneline land`, never from a flow) says new data is there; the
  retrain deployment's trigger (deployments/prefect.yaml) listens for it.
- `tuneline.data.ingested` (from every ingest) records what a run read. No trigger listens for it,
  so a retrain started by new data cannot start another one.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger

from tuneline.tasks.common import data_stage_cache
from tuneline.registry import store as registry
from tuneline.config import DataConfig
from tuneline.data.loading import IngestResult, file_hash, load_dataset, missing_path_problem, resolve_data_path
from tuneline.errors import DataLoadError
from tuneline.settings import answering_prefect_api

DATA_LANDED = "tuneline.data.landed"
DATA_INGESTED = "tuneline.data.ingested"


def dataset_resource_id(model_name: str) -> str:
    """The Prefect resource a model's new data is announced on; its retrain trigger matches it."""
    return f"tuneline.dataset.{model_name}"


def _ingest_key(parameters: dict) -> str | None:
    """The file's bytes and how they are read; None for what has no bytes here (a Hub dataset id, a missing file)."""
    config: DataConfig = parameters["config"]
    try:
        path = resolve_data_path(config.path)
    except DataLoadError:
        return None
    if not path.exists():
        return None
    read = config.model_dump_json(include={"path", "format", "text_column", "label_column", "labels", "normalize_labels"})
    return f"{file_hash(path)}|{read}|{parameters.get('task', 'classification')}"


@task(name="ingest", **data_stage_cache(_ingest_key))
def ingest_data(config: DataConfig, run_id: str, task: str = "classification") -> IngestResult:
    """Load the configured file into the canonical frame (labels as the task reads them, respelt under
    data.normalize_labels) and hash it (`file_hash`, the hash `tuneline land` announces).

    Cached on that hash and the read settings; `record_ingest` logs it to each run. A file that
    cannot be read leaves an ingest report (`record_ingest_failure`) before the `DataLoadError` stops the flow.
    """
    try:
        return load_dataset(config.path, config.text_column, config.label_column, config.format, task,
                            normalize_labels=config.normalize_labels, labels=config.labels)
    except DataLoadError as error:  # never cached: report it here, where the flow stops
        record_ingest_failure(config, error, run_id)
        raise


def record_ingest(result: IngestResult, run_id: str) -> None:
    """What a run read, in its MLflow run, the task log and a `tuneline.data.ingested` event."""
    registry.set_tags(run_id, {"data.source": result.source, "data.hash": result.content_hash})
    registry.log_metrics(run_id, {"rows_raw": result.rows, "rows_relabelled": result.rows_relabelled})
    get_run_logger().info("read %d rows from %s (sha256 %s)", result.rows, result.source, result.content_hash[:12])
    if result.relabelled:
        get_run_logger().info("data.normalize_labels=true rewrote the label of %d rows: %s", result.rows_relabelled,
                              ", ".join(f"{old!r} -> {new!r}" for old, new in result.relabelled.items()))
    # Prefect relates the event to this flow and task run by itself.
    emit_event(DATA_INGESTED, resource={
        "prefect.resource.id": f"tuneline.data.{result.content_hash}",
        "prefect.resource.name": result.source,
        "tuneline.data.source": result.source,
        "tuneline.data.hash": result.content_hash,
        "tuneline.data.rows": str(result.rows),
    }, related=[{"prefect.resource.id": f"mlflow.run.{run_id}", "prefect.resource.role": "mlflow-run"}])


INGEST_REPORT = "validation/ingest.json"


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


def record_ingest_failure(config: DataConfig, error: DataLoadError, run_id: str) -> None:
    """The ingest report in the MLflow run (`validation/ingest.json`, tags) and as the Prefect artifact `ingest-report`.

    Best effort: a report that cannot be saved is logged, and the `DataLoadError` still stops the flow.
    """
    report = ingest_failure_report(config, error)
    where = ", ".join(f"{key.replace('_', ' ')} {report[key]}" for key in ("line", "byte_offset") if report[key])
    markdown = "\n".join([
        "### Ingest: FAILED", "", f"- file: `{report['source']}` (format {report['format']}, columns "
        f"{report['text_column']!r} / {report['label_column']!r})", *([f"- where: {where}"] if where else []),
        "", "```", report["problem"], "```",
    ])
    try:
        registry.log_json(run_id, report, INGEST_REPORT)
        registry.set_tags(run_id, {"validation.success": False, "validation.stage": "ingest"})
        create_markdown_artifact(markdown, key="ingest-report", description=f"Why {report['source']} could not be read")
    except Exception as exc:  # the data error is the news; a lost report must not replace it
        get_run_logger().warning("could not save the ingest report: %s: %s", type(exc).__name__, exc)


@dataclass(frozen=True)
class LandedData:
    """What `announce_landed_data` saw and did."""

    path: Path
    sha256: str
    previous_sha256: str | None
    announced: bool


def last_landed_sha256(model_name: str) -> str | None:
    """The content hash of the last `tuneline.data.landed` event the Prefect server holds for this model."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOrder, EventResourceFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(
            event=EventNameFilter(name=[DATA_LANDED]),
            resource=EventResourceFilter(id=[dataset_resource_id(model_name)]),
            order=EventOrder.DESC,
        ), limit=1)
    return page.events[0].resource.get("tuneline.data.sha256") if page.events else None


def announce_landed_data(path: Path, model_name: str, force: bool = False) -> LandedData:
    """Emit `tuneline.data.landed` for `path` unless the last announcement for this model had the same content.

    Needs a Prefect server (PREFECT_API_URL): the event is sent over its events API, and the last
    announcement is read back from it, so repeating the command (say, from cron) is harmless.
    """
    from prefect.events import Event
    from prefect.events.clients import get_events_client
    from prefect.settings import PREFECT_API_URL

    answering_prefect_api(PREFECT_API_URL.value())
    path = path.expanduser().absolute()  # not resolve(): a symbolic link loop must be named, not raise
    if not path.exists():
        raise DataLoadError(f"{missing_path_problem(path)}: nothing to announce")
    path = path.resolve()
    sha256 = file_hash(path)  # the run it starts records the same hash as data.hash
    previous = last_landed_sha256(model_name)
    if previous == sha256 and not force:
        return LandedData(path, sha256, previous, announced=False)
    event = Event(event=DATA_LANDED, resource={
        "prefect.resource.id": dataset_resource_id(model_name),
        "prefect.resource.name": path.name,
        "tuneline.model": model_name,
        "tuneline.data.path": str(path),
        "tuneline.data.sha256": sha256,
    })

    async def send() -> None:
        # The client, not the background `emit_event`, so a server that refuses it is an error here.
        async with get_events_client(reconnection_attempts=2) as client:
            await client.emit(event)

    asyncio.run(send())
    return LandedData(path, sha256, previous, announced=True)
