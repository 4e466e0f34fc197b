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
    torch_metrics: dict[str, float]  # accuracy, macro_f1 on the test split
    int8_metrics: dict[str, float] | None
    onnx_bytes: int
    int8_bytes: int | None
    parity_max_abs_diff: float
    parity_atol: float
    train_seconds: float
    device: str

    def mlflow_ui_hint(self) -> str:
        if self.tracking_uri.startswith("http"):
            return f"{self.tracking_uri.rstrip('/')}/#/models/{self.model_name}/versions/{self.version}"
        return f"mlflow ui --backend-store-uri {self.tracking_uri}  (then open http://127.0.0.1:5000)"

    def to_markdown(self) -> str:
        def pct(metrics: dict[str, float] | None, key: str) -> str:
            return f"{100 * metrics[key]:.2f}" if metrics else "n/a"

        def mb(size: int | None) -> str:
            return f"{size / 1e6:.1f} MB" if size else "n/a"

        rows = self.rows
        return "\n".join(
            [
                f"## {self.model_name} version {self.version} -> `{self.alias}`",
                "",
                "| model | test accuracy (%) | test macro-F1 (%) | size |",
                "| --- | --- | --- | --- |",
                f"| PyTorch FP32 | {pct(self.torch_metrics, 'accuracy')} | {pct(self.torch_metrics, 'macro_f1')} | safetensors |",
                f"| ONNX FP32 | parity max abs diff {self.parity_max_abs_diff:.1e} (tolerance {self.parity_atol:.0e}) | | {mb(self.onnx_bytes)} |",
                f"| ONNX INT8 | {pct(self.int8_metrics, 'accuracy')} | {pct(self.int8_metrics, 'macro_f1')} | {mb(self.int8_bytes)} |",
                "",
                "Gate: " + "; ".join(self.gate_reasons),
                "",
                f"Data: `{self.data_source}` (sha256 `{self.data_hash[:12]}`): {rows['raw']} rows read, "
                f"{rows['dropped']} dropped by cleaning, split {rows['train']}/{rows['validation']}/{rows['test']}.",
                f"Training: {self.train_seconds:.0f} s on {self.device}.",
                f"MLflow run `{self.run_id}`, model files at `{self.model_uri}`.",
                f"Look at it: `{self.mlflow_ui_hint()}`",
            ]
        )
