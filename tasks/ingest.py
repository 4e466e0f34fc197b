"""Stage: read the data and hash it. Also the events that tell Prefect about data.

Two events, on purpose distinct:
- `tuneline.data.landed` (from `tuneline land`, never from a flow) says new data is there; the
  retrain deployment's trigger (deployments/prefect.yaml) listens for it.
- `tuneline.data.ingested` (from every ingest) records what a run read. No trigger listens for it,
  so a retrain started by new data cannot start another one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prefect import task
from prefect.events import emit_event
from prefect.logging import get_run_logger

from tuneline.tasks.common import data_stage_cache, publish
from tuneline.config import DataConfig
from tuneline.data import stages
from tuneline.data.loading import IngestResult
from tuneline.data.stages import LandedData, dataset_resource_id
from tuneline.errors import DataLoadError
from tuneline.settings import answering_prefect_api

DATA_LANDED = "tuneline.data.landed"
DATA_INGESTED = "tuneline.data.ingested"


@task(name="ingest", **data_stage_cache(stages.ingest_key))
def ingest_data(config: DataConfig, run_id: str, task: str = "classification") -> IngestResult:
    """Load the configured file into the canonical frame (labels as the task reads them, respelt under
    data.normalize_labels) and hash it (`file_hash`, the hash `tuneline land` announces).

    Cached on that hash and the read settings; `record_ingest` logs it to each run. A file that
    cannot be read leaves an ingest report (`record_ingest_failure`) before the `DataLoadError` stops the flow.
    """
    try:
        return stages.ingest(config, task)
    except DataLoadError as error:  # never cached: report it here, where the flow stops
        try:  # best effort: the data error is the news, a lost report must not replace it
            publish(stages.record_ingest_failure(config, error, run_id))
        except Exception as exc:
            get_run_logger().warning("could not save the ingest report: %s: %s", type(exc).__name__, exc)
        raise


def record_ingest(result: IngestResult, run_id: str) -> None:
    """What a run read, in its MLflow run, the log and a `tuneline.data.ingested` event."""
    stages.record_ingest(result, run_id)
    # Prefect relates the event to this flow and task run by itself.
    emit_event(DATA_INGESTED, **stages.ingested_event(result, run_id))


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
    path, sha256 = stages.landed_file(path)  # the run it starts records the same hash as data.hash
    previous = last_landed_sha256(model_name)
    if previous == sha256 and not force:
        return LandedData(path, sha256, previous, announced=False)
    event = Event(event=DATA_LANDED, resource=stages.landed_resource(path, model_name, sha256))

    async def send() -> None:
        # The client, not the background `emit_event`, so a server that refuses it is an error here.
        async with get_events_client(reconnection_attempts=2) as client:
            await client.emit(event)

    asyncio.run(send())
    return LandedData(path, sha256, previous, announced=True)
