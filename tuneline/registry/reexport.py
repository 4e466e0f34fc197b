"""What re-exporting a registered version needs: its fine-tuned model, its test rows, and its lineage."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException

from tuneline.registry import store as registry
from tuneline.errors import ConfigError, RegistrationError
from tuneline.config import ExportConfig, GenerationConfig
from tuneline.promotion.gate import TEST_SPLIT_ARTIFACT, generation_settings

CALIBRATION_ARTIFACT = "data/calibration.csv"
# Tags that describe the export, or an alias's history: the new version gets its own, not the source's.
_NOT_INHERITED = ("champion.", "challenger.", "rolled_back.", "int8.", "onnx.", "parity.", "quantization", "exported_from",
                  "reexport.")


@dataclass(frozen=True)
class SourceVersion:
    name: str
    version: str
    run_id: str
    task: str
    folder: Path  # scratch download, removed by the caller
    model_dir: Path  # hf_model/
    test: pd.DataFrame
    calibration_texts: list[str]  # training rows logged for calibration (empty for older versions)
    labels: tuple[str, ...]
    max_length: int
    batch_size: int
    tags: dict[str, str]
    description: str
    generation: GenerationConfig  # the decoding settings the source run evaluated with

    @property
    def parity_texts(self) -> list[str]:
        # Parity compares two implementations of one function, so test rows are fair inputs for it.
        return list(self.test["text"])


def fetch_version(name: str, version: str, scratch: Path) -> SourceVersion:
    """Download a version's `hf_model/`, its test split and calibration rows, and read its run's settings."""
    entry = registry.resolve_version(name, version)
    if "task" not in entry.tags and "test.accuracy" not in entry.tags:
        raise RegistrationError(f"{name} version {entry.version} was not registered by tuneline (no task or test tags)")
    mlflow_client = registry.client()
    params = mlflow_client.get_run(entry.run_id).data.params
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-{entry.version}-", dir=scratch))
    files = registry.download_version(name, str(entry.version), folder / "model")
    test = pd.read_csv(mlflow_client.download_artifacts(entry.run_id, TEST_SPLIT_ARTIFACT, str(folder)), dtype=str,
                       keep_default_na=False)
    try:
        calibration = pd.read_csv(mlflow_client.download_artifacts(entry.run_id, CALIBRATION_ARTIFACT, str(folder)),
                                  dtype=str, keep_default_na=False)["text"].tolist()
    except (MlflowException, OSError):
        calibration = []
    labels = tuple(label for label in entry.tags.get("labels", "").split(",") if label)
    return SourceVersion(
        name=name, version=str(entry.version), run_id=entry.run_id, task=entry.tags.get("task", "classification"),
        folder=folder, model_dir=files / "hf_model", test=test, calibration_texts=calibration, labels=labels,
        max_length=int(params.get("train.max_length", 128)), batch_size=int(params.get("train.eval_batch_size", 64)),
        tags=dict(entry.tags), description=entry.description or "", generation=generation_settings(params),
    )


def require_calibration(source: SourceVersion, quantization: str) -> None:
    """Static quantization calibrates on training rows; versions registered before they were logged have none."""
    if quantization == "static" and not source.calibration_texts:
        raise ConfigError(f"{source.name} version {source.version} carries no calibration rows "
                          f"({CALIBRATION_ARTIFACT} in its run); re-export it with quantization=dynamic, or retrain")


def reexport_tags(source: SourceVersion, exported, variants) -> dict[str, object]:
    """The source's lineage and test metrics, plus the new export's facts."""
    tags: dict[str, object] = {k: v for k, v in source.tags.items() if not k.startswith(_NOT_INHERITED)}
    tags |= {"exported_from": f"{source.name}/{source.version}", "parity.max_abs_diff": f"{exported.parity.max_abs_diff:.3e}",
             "onnx.bytes": exported.onnx_bytes, "onnx.optimized": exported.optimized, "quantization": exported.quantization,
             "export.code_version": registry.code_version()}
    quantized = next((v for v in variants if "INT8" in v.name), None)
    if quantized is not None:
        tags |= {f"int8.test.{name}": f"{value:.6f}" for name, value in quantized.metrics.items()}
        tags |= {"int8.bytes": exported.int8_bytes, "int8.latency_ms": f"{quantized.latency_ms:.3f}"}
    return tags


def export_config_hash(settings: ExportConfig) -> str:
    """A short, stable hash of the export settings (key order does not matter)."""
    canonical = json.dumps(settings.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def reexport_identity(source_version: str, settings: ExportConfig) -> dict[str, str]:
    """The tags that make two re-exports the same one: the same source version, the same export settings.

    A re-export carries them, so running the export flow again with both unchanged finds it instead of
    registering a duplicate.
    """
    return {"reexport.of": str(source_version), "reexport.config_hash": export_config_hash(settings)}


def find_reexport(name: str, version: str, settings: ExportConfig) -> tuple[str, str | None]:
    """The source's version number (`version` may be an alias), and the version that already is its re-export
    with `settings` (None when there is none yet)."""
    source = str(registry.resolve_version(name, version).version)
    with registry.reaching_server(f"looking for an earlier re-export of {name} version {source}"):
        earlier = registry.find_versions(name, None, reexport_identity(source, settings))
    return source, str(earlier[0].version) if earlier else None
