"""The export flow: re-export and re-quantize an already registered version with new export settings.

The result is a new version of the same registered model: the same fine-tuned weights and lineage,
new ONNX / INT8 files, measured and checked like a retrain's. It takes no alias; promote it with
`tuneline promote` (or the `promote` flow) once you have looked at it.

    tuneline export NAME [--version champion] [export.quantization=static ...]
"""

from __future__ import annotations

import shutil

import tuneline.flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow
from prefect.runtime import flow_run

from tuneline.tasks.export import compare_exported, earlier_reexport, export_model, fetch_source, register_reexport
from tuneline.tasks.tracking import load_secrets
from tuneline.registry import store as registry
from tuneline.config import ExportConfig
from tuneline.export.stage import triton_repository
from tuneline.registry.registration import start_reexport_run
from tuneline.settings import state_dir


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
    run_id = start_reexport_run(source, settings, experiment, flow_run.get_name() or "export")
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
