"""The short summary a retrain run ends with: console text and a markdown table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetrainSummary:
    model_name: str
    version: str
    alias: str
    gate_reasons: tuple[str, ...]
    run_id: str
    model_uri: str
    tracking_uri: str
    data_source: str
    data_hash: str
    rows: dict[str, int]  # raw, clean, dropped, train, validation, test
    task: str
    torch_metrics: dict[str, float]  # the task's test metrics (accuracy, macro_f1 / mse, mae, r2 / bleu, rouge...)
    int8_metrics: dict[str, float] | None
    variants: list[dict[str, object]]  # one table row per exported variant (size, latency, rows/s, metrics)
    onnx_bytes: int
    int8_bytes: int | None
    parity_max_abs_diff: float
    parity_atol: float
    train_seconds: float
    device: str

    def __post_init__(self) -> None:
        from tuneline.settings import redact

        # The summary is printed, logged to MLflow and kept as the flow's result: no credentials in the URI.
        object.__setattr__(self, "tracking_uri", redact(self.tracking_uri))

    def mlflow_ui_hint(self) -> str:
        if self.tracking_uri.startswith("http"):
            return f"{self.tracking_uri.rstrip('/')}/#/models/{self.model_name}/versions/{self.version}"
        return f"mlflow ui --backend-store-uri {self.tracking_uri}  (then open http://127.0.0.1:5000)"

    def to_markdown(self) -> str:
        rows = self.rows
        columns = list(self.variants[0]) if self.variants else []
        table = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |",
                 *("| " + " | ".join(str(v.get(c, "")) for c in columns) + " |" for v in self.variants)]
        return "\n".join(
            [
                f"## {self.model_name} version {self.version} -> `{self.alias}` ({self.task})",
                "",
                "Test split, PyTorch model: " + ", ".join(f"{k} {v:.4f}" for k, v in self.torch_metrics.items()),
                "",
                *(table if self.variants else []),
                "",
                f"ONNX parity: max abs diff {self.parity_max_abs_diff:.1e} (tolerance {self.parity_atol:.0e}).",
                "Gate: " + "; ".join(self.gate_reasons),
                "",
                f"Data: `{self.data_source}` (sha256 `{self.data_hash[:12]}`): {rows['raw']} rows read, "
                f"{rows['dropped']} dropped by cleaning, split {rows['train']}/{rows['validation']}/{rows['test']}.",
                f"Training: {self.train_seconds:.0f} s on {self.device}.",
                f"MLflow run `{self.run_id}`, model files at `{self.model_uri}`.",
                f"Look at it: `{self.mlflow_ui_hint()}`",
            ]
        )
