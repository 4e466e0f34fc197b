"""A model card (markdown) written from the facts a run recorded, never by hand."""

from __future__ import annotations

from tuneline.evaluation.metrics import ClassificationReport
from tuneline.kinds import kind



def _table(rows: list[dict[str, object]]) -> list[str]:
    if not rows:
        return []
    columns = list(rows[0])
    return ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |",
            *("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows)]


def render_model_card(
    *, model_name: str, task: str, labels: tuple[str, ...], base_model: str, base_model_hash: str, data_source: str,
    data_hash: str, rows: dict[str, int], validation_suite: str, validation_success: bool,
    test_metrics: dict[str, float], variants: list[dict[str, object]], served_file: str, code_version: str,
    device: str, steps: int, max_length: int, method: str = "full", trainable_params: int | None = None,
    total_params: int | None = None, classification: ClassificationReport | None = None,
) -> str:
    """Intended use, data, training, the test metrics of every exported variant, and the limits the numbers show."""
    use = kind(task).card_use.format(labels=", ".join(f"`{label}`" for label in labels))
    lines = [
        f"# {model_name}",
        "",
        "## Intended use",
        f"{use}, for text like the training data below. Served as `{served_file}` with its tokenizer "
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
        f"## Metrics (held-out test split, {rows['test']} rows)",
        "PyTorch model: " + ", ".join(f"{name} {value:.4f}" for name, value in test_metrics.items()) + ".",
        "",
        "Each exported variant, measured on the machine that trained it:",
        "",
        *_table(variants),
        "",
        "## Limits",
        f"- Measured on {rows['test']} test rows from the same source as the training data; "
        "other domains or writing styles were not evaluated.",
    ]
    if classification is not None:
        weakest = min(classification.per_class.items(), key=lambda item: item[1]["recall"])
        lines.append(f"- Weakest class: `{weakest[0]}` (recall {100 * weakest[1]['recall']:.2f}%, "
                     f"{weakest[1]['support']} test rows).")
    lines.append("- Per-slice metrics and the worst examples are in the run's `evaluation/` folder.")
    return "\n".join(lines) + "\n"
