"""A model card (markdown) written from the facts a run recorded, never by hand."""

from __future__ import annotations

from tuneline.evaluation import ClassificationReport


def render_model_card(
    *, model_name: str, base_model: str, base_model_hash: str, data_source: str, data_hash: str,
    rows: dict[str, int], validation_suite: str, validation_success: bool, torch_report: ClassificationReport,
    int8_report: ClassificationReport | None, code_version: str, device: str, steps: int, max_length: int,
    method: str = "full", trainable_params: int | None = None, total_params: int | None = None,
) -> str:
    """Intended use, data, training, metrics of both models, and the limits the numbers show."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    weakest = min(torch_report.per_class.items(), key=lambda item: item[1]["recall"])
    lines = [
        f"# {model_name}",
        "",
        "## Intended use",
        f"Text classification into {', '.join(f'`{label}`' for label in torch_report.labels)}, for text like "
        f"the training data below. Served as the INT8 ONNX model (`model.int8.onnx`) with its tokenizer "
        f"(`hf_model/`); texts longer than {max_length} tokens are truncated.",
        "",
        "## Data",
        f"- source: `{data_source}` (sha256 `{data_hash[:16]}`)",
        f"- rows: {rows['raw']} read, {rows['dropped']} dropped by cleaning; "
        f"train {rows['train']}, validation {rows['validation']}, test {rows['test']}",
        f"- validation: suite `{validation_suite}` {'passed' if validation_success else 'FAILED'}",
        "",
        "## Training",
        f"- base model: `{base_model}` ({base_model_hash[:23]})",
        f"- {'full fine-tuning' if method == 'full' else method + ' (peft adapter, merged for export)'}, "
        f"{steps} steps on {device}; code `{code_version}`",
        *([f"- trained parameters: {trainable_params:,} of {total_params:,} ({trainable_params / total_params:.2%})"]
          if trainable_params and total_params else []),
        "",
        f"## Metrics (held-out test split, {torch_report.rows} rows)",
        "| model | accuracy | macro-F1 | weighted F1 | ROC-AUC |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, report in (("PyTorch FP32", torch_report), ("ONNX INT8", int8_report)):
        if report is not None:
            lines.append(f"| {name} | {pct(report.accuracy)} | {pct(report.macro_f1)} | "
                         f"{pct(report.weighted_f1)} | {pct(report.roc_auc)} |")
    lines += [
        "",
        "## Limits",
        f"- Measured on {torch_report.rows} test rows from the same source as the training data; "
        "other domains or writing styles were not evaluated.",
        f"- Weakest class: `{weakest[0]}` (recall {pct(weakest[1]['recall'])}%, "
        f"{weakest[1]['support']} test rows).",
        "- Per-slice metrics and the highest-loss examples are in the run's `evaluation/` folder.",
    ]
    return "\n".join(lines) + "\n"
