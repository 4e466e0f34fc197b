"""The export flow: re-export and re-quantize an already registered version with new export settings.

The result is a new version of the same registered model: the same fine-tuned weights and lineage,
new ONNX / INT8 files, measured and checked like a retrain's. It takes no alias; promote it with
`tuneline promote` (or the `promote` flow) once you have looked at it.

    tuneline export NAME [--version champion] [export.quantization=static ...]
"""

from __future__ import annotations

import shutil

import tuneline.flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow, task
from prefect.runtime import flow_run

from tuneline.tasks.common import TRANSIENT_RETRIES
from tuneline.tasks.export import compare_exported, export_model, triton_repository
from tuneline.tasks.tracking import load_secrets
from tuneline.registry import store as registry
from tuneline.config import ExportConfig
from tuneline.errors import ConfigError
from tuneline.registry.reexport import (
    SourceVersion,
    fetch_version,
    find_reexport,
    reexport_identity,
    reexport_tags,
    require_calibration,
)
from tuneline.settings import state_dir
from tuneline.runs import note_mlflow_run


@task(name="find-reexport", **TRANSIENT_RETRIES)
def earlier_reexport(name: str, version: str, settings: ExportConfig) -> tuple[str, str | None]:
    """The source version's number, and the version already re-exported from it with these settings, if any."""
    return find_reexport(name, version, settings)


@task(name="fetch-version", **TRANSIENT_RETRIES)
def fetch_source(name: str, version: str, quantization: str) -> SourceVersion:
    """Download the version's fine-tuned model and the test rows it was scored on."""
    source = fetch_version(name, version, state_dir() / "exports")
    try:
        require_calibration(source, quantization)
    except ConfigError:
        shutil.rmtree(source.folder, ignore_errors=True)
        raise
    return source


@task(name="register-reexport", **TRANSIENT_RETRIES)
def register_reexport(source: SourceVersion, exported, variants, settings: ExportConfig, run_id: str, triton):
    """A new version of the same model: the source's lineage and test metrics, the new files and their measurements."""
    identity = reexport_identity(source.version, settings)
    tags = reexport_tags(source, exported, variants) | identity
    table = "\n".join(["| " + " | ".join(map(str, row.values())) + " |" for row in
                       [v.row(source.task, variants[0]) for v in variants]])
    description = (source.description.rstrip() + f"\n\n## Re-exported from version {source.version}\n"
                   f"Export settings: `{settings.model_dump_json()}`\n\n{table}\n")
    extras = {"triton": triton} if triton is not None else {}
    if exported.int8_path is not None and exported.int8_onnx_path is None:
        extras["torch_int8"] = exported.int8_path
    return registry.register_model(run_id, source.name, source.model_dir, exported.onnx_path, exported.int8_onnx_path,
                                   source.max_length, tags, description=description, extras=extras, task=source.task,
                                   generation=source.generation.model_dump(mode="json"), same_as=identity)


@flow(name="export", log_prints=True)
def export(name: str, version: str = "champion", settings: ExportConfig = ExportConfig(),
           experiment: str = "tuneline") -> str:
    """Export version (number or alias) of `name` again with `settings`; return the new version number.

    Running it again for the same source version and settings returns the version the first run registered.
    """
    load_secrets()  # MLflow / S3 credentials from Prefect Secret blocks where the environment has none
    source_version, existing = earlier_reexport(name, version, settings)
    if existing is not None:
        print(f"{name} version {existing} already is version {source_version} re-exported with these settings: "
              "nothing registered")
        return existing
    source = fetch_source(name, source_version, settings.quantization)  # the number: an alias may move meanwhile
    run_id = registry.start_run(
        experiment, run_name=flow_run.get_name() or "export",
        params={f"export.{k}": v for k, v in settings.model_dump(mode="json").items()} | {"source.version": source.version},
        config_yaml=settings.model_dump_json(indent=2),
        tags={"code_version": registry.code_version(), "exported_from": f"{name}/{source.version}", "orchestrator": "prefect"},
        on_created=note_mlflow_run,
    )
    work_dir = state_dir() / "runs" / run_id
    try:
        exported = export_model(source.model_dir, source.parity_texts, source.calibration_texts, settings, source.task,
                                source.max_length, work_dir, run_id)
        variants = compare_exported(source.model_dir, source.test, source.labels, exported, settings, source.task,
                                    source.max_length, source.batch_size, run_id, source.generation)
        triton = triton_repository(exported, name, work_dir) if settings.triton else None
        registered = register_reexport(source, exported, variants, settings, run_id, triton)
    except BaseException as error:
        registry.finish_run(run_id, failed=True, error=f"{type(error).__name__}: {error}")
        raise
    finally:
        shutil.rmtree(source.folder, ignore_errors=True)
    registry.finish_run(run_id)
    shutil.rmtree(work_dir, ignore_errors=True)
    print(f"{name} version {registered.version}: version {source.version} re-exported "
          f"({settings.quantization}{', optimised' if settings.optimize else ''}); no alias moved")
    return registered.version
