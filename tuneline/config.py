"""The retrain flow's configuration: one pydantic model, nested by stage.

Prefect renders it as the run form in the UI; the CLI reads it from YAML plus
`key=value` overrides. Defaults are the embedded default: the shipped sample
data and the built-in MiniLM-L6 model on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneline.errors import ConfigError


class _Section(BaseModel):
    # A misspelt key (train.epoch=1) must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    path: str = Field(
        "builtin:sample-reviews",
        description="CSV, TSV, JSONL or Parquet file, a folder saved by `datasets`, "
        "or `builtin:sample-reviews` (the shipped sample).",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "datasets"] = Field(
        "auto", description="File format; `auto` picks it from the extension."
    )
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field("label", description="Column holding the class label.")
    labels: list[str] | None = Field(
        None,
        description="Allowed labels, in class-id order. Empty: the sorted distinct labels of the data.",
    )
    expectation_suite: str = Field(
        "text_classification",
        description="Great Expectations suite: a name in expectations/ or a path to a suite JSON file.",
    )

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("a classifier needs at least two labels")
            if len(set(labels)) != len(labels):
                raise ValueError(f"labels must be distinct, got {labels}")
        return labels


class SplitConfig(_Section):
    train_fraction: float = Field(0.8, gt=0, lt=1, description="Share of rows for training.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of rows for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="Share of rows for the held-out test.")
    seed: int = Field(42, description="Seed of the shuffle; the same seed gives the same splits.")
    stratify: bool = Field(True, description="Keep label proportions equal across splits.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.4f}")
        return self


class TrainConfig(_Section):
    base_model: str = Field(
        "builtin:minilm-l6",
        description="`builtin:minilm-l6` (shipped, offline), a local folder, or a Hugging Face model id.",
    )
    method: Literal["full"] = Field("full", description="Fine-tuning method.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, le=4096, description="Training batch size per device.")
    eval_batch_size: int = Field(64, ge=1, le=4096, description="Batch size for evaluation and export checks.")
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0, lt=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    max_length: int = Field(128, ge=8, le=8192, description="Tokens kept per text; longer texts are truncated.")
    seed: int = Field(42, description="Seed of initialisation, shuffling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` uses CUDA when present.")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every this many steps.")


class EvaluationConfig(_Section):
    worst_examples: int = Field(20, ge=0, le=10_000, description="Highest-loss test rows kept in the report.")
    slice_column: str | None = Field(
        None, description="Data column to slice test metrics by (e.g. `domain` in the sample); length buckets always."
    )


class ExportConfig(_Section):
    opset: int = Field(17, ge=14, le=21, description="ONNX opset version.")
    quantization: Literal["dynamic", "none"] = Field(
        "dynamic", description="`dynamic`: INT8 weights, activations quantized at run time (onnxruntime)."
    )
    per_channel: bool = Field(
        True, description="One INT8 scale per output channel of each weight: slower to build, far less accuracy lost."
    )
    parity_atol: float = Field(
        1e-4, gt=0, description="Largest allowed absolute logit difference between ONNX FP32 and PyTorch."
    )
    parity_rows: int = Field(64, ge=1, description="Validation rows used for the parity check.")


class RegistryConfig(_Section):
    experiment: str = Field("tuneline", description="MLflow experiment name.")
    model_name: str = Field("tuneline-classifier", min_length=1, description="Registered model name in MLflow.")


class PromotionConfig(_Section):
    """The quality gate a candidate must pass to take the `champion` alias."""

    primary_metric: Literal["accuracy", "macro_f1"] = Field(
        "accuracy", description="Test metric (PyTorch model) the candidate must not be worse on."
    )
    min_improvement: float = Field(
        0.0, ge=-1, le=1, description="Required gain over the champion on the primary metric (0.01 = one point)."
    )
    guarded_metrics: list[Literal["accuracy", "macro_f1"]] = Field(
        ["macro_f1"], description="Metrics that may not drop by more than max_guarded_drop."
    )
    max_guarded_drop: float = Field(0.01, ge=0, le=1, description="Largest allowed drop on any guarded metric.")
    max_int8_accuracy_drop: float = Field(
        0.01, ge=0, le=1, description="Largest allowed accuracy loss of the INT8 ONNX model vs the PyTorch model."
    )


class RetrainConfig(_Section):
    """Everything one `retrain` run needs; each section belongs to one stage."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    export: ExportConfig = ExportConfig()
    registry: RegistryConfig = RegistryConfig()
    promotion: PromotionConfig = PromotionConfig()

    def to_yaml(self) -> str:
        """The resolved config as YAML, loadable by `load_config`."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """`{"train.epochs": 1.0, ...}`: the form MLflow params take."""
        out: dict[str, Any] = {}
        for section, values in self.model_dump(mode="json").items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `["train.epochs=1", "data.labels=[neg, pos]"]` into a nested dict.

    Values are read as YAML scalars or lists, so numbers, booleans and lists
    keep their type; pydantic then validates them.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> RetrainConfig:
    """Read a YAML config (optional), apply `key=value` overrides, validate.

    Raises `ConfigError` naming the file and each invalid field.
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
        source += " + overrides"
    try:
        return RetrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid config ({source}): {problems}") from None
