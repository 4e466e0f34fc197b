"""Stage: score the fine-tuned model and its INT8 ONNX export on the held-out test split."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks.common import TRANSIENT_RETRIES
from tuneline import registry
from tuneline.config import EvaluationConfig
from tuneline.data import SplitResult
from tuneline.evaluation import (
    ClassificationReport,
    classification_report,
    plot_confusion_matrix,
    side_by_side,
    sliced_metrics,
    worst_examples,
)
from tuneline.onnx_classifier import OnnxClassifier
from tuneline.training import TrainResult, predict_proba


@task(name="evaluate", **TRANSIENT_RETRIES)
def evaluate_model(
    trained: TrainResult, splits: SplitResult, config: EvaluationConfig, max_length: int, batch_size: int,
    work_dir: Path, run_id: str,
) -> ClassificationReport:
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and worst errors of the PyTorch model."""
    test = splits.test
    probabilities = predict_proba(trained.model_dir, list(test["text"]), max_length, batch_size, trained.device)
    report = classification_report(list(test["label"]), probabilities, splits.labels)
    registry.log_metrics(run_id, report.metrics("test_"))
    registry.log_json(run_id, report.__dict__, "evaluation/torch_report.json")
    registry.log_artifact(run_id, plot_confusion_matrix(report, work_dir / "confusion_matrix.png"), "evaluation")
    worst = worst_examples(test, probabilities, splits.labels, config.worst_examples)
    worst_path = work_dir / "worst_examples.csv"
    worst.to_csv(worst_path, index=False)
    registry.log_artifact(run_id, worst_path, "evaluation")
    create_table_artifact(
        worst.head(20).to_dict("records"), key="worst-examples",
        description="Test rows with the highest loss (more in MLflow: evaluation/worst_examples.csv)",
    )
    slices = sliced_metrics(test, probabilities, splits.labels, config.slice_column)
    slices_path = work_dir / "sliced_metrics.csv"
    slices.to_csv(slices_path, index=False)
    registry.log_artifact(run_id, slices_path, "evaluation")
    create_table_artifact(slices.to_dict("records"), key="test-metrics-by-slice",
                          description="Test accuracy and macro-F1 per slice (text length, and data.slice_column)")
    create_table_artifact(
        [{"label": label, **{k: round(v, 4) for k, v in scores.items()}} for label, scores in report.per_class.items()],
        key="test-metrics-per-class",
        description=f"PyTorch model on {report.rows} test rows: accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}",
    )
    return report


@task(name="evaluate-int8", **TRANSIENT_RETRIES)
def evaluate_onnx(
    onnx_path: Path, trained: TrainResult, splits: SplitResult, torch_report: ClassificationReport,
    max_length: int, batch_size: int, run_id: str,
) -> ClassificationReport:
    """The same test metrics for the INT8 ONNX model, run the way serving runs it, side by side with PyTorch's."""
    classifier = OnnxClassifier(onnx_path, trained.model_dir, max_length)
    probabilities = classifier.predict_proba(list(splits.test["text"]), batch_size)
    report = classification_report(list(splits.test["label"]), probabilities, splits.labels)
    registry.log_metrics(run_id, report.metrics("int8_test_"))
    registry.log_json(run_id, report.__dict__, "evaluation/int8_report.json")
    table = side_by_side({"PyTorch FP32": torch_report, "ONNX INT8": report})
    registry.log_json(run_id, table, "evaluation/side_by_side.json")
    create_table_artifact(table, key="pytorch-vs-int8", description="The same test split, both models")
    return report
