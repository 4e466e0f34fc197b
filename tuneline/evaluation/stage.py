"""The evaluation stages as the retrain runs them: the gate's baselines, and the PyTorch model scored on the test split
per task type, with what each records in the run's MLflow run (metrics, per-row scores, plots, worst rows, slices).
The Prefect tasks of `tuneline.tasks` call these and publish the tables they return.

Beyond the rest of `tuneline.evaluation`, imports `tuneline.data`, `tuneline.training`, `tuneline.registry` (to
record) and `tuneline.promotion.gate` (the names of what the gate reads back); never Prefect.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tuneline.config import EvaluationConfig, GenerationConfig
from tuneline.data.loading import regression_targets
from tuneline.data.splitting import SplitResult
from tuneline.evaluation.generation import generate, lowercases
from tuneline.evaluation.metrics import (
    Baselines,
    ClassificationReport,
    GenerationReport,
    RegressionReport,
    classification_report,
    generation_report,
    plot_confusion_matrix,
    plot_predicted_vs_true,
    regression_report,
    row_scores,
    score_baselines,
    sliced_generation_metrics,
    sliced_metrics,
    sliced_regression_metrics,
    worst_examples,
    worst_generation_examples,
    worst_regression_examples,
)
from tuneline.kinds import kind
from tuneline.promotion.gate import BASELINES_ARTIFACT, ROW_SCORES_ARTIFACT
from tuneline.published import Table
from tuneline.registry import store as registry
from tuneline.training.engine import TrainResult, predict_proba


def record_tables(worst: pd.DataFrame, worst_by: str, slices: pd.DataFrame, sliced: str, work_dir: Path,
                  run_id: str) -> list[Table]:
    """The worst test rows and the metrics per slice: CSVs in the MLflow run; returns them as tables."""
    for frame, name in ((worst, "worst_examples.csv"), (slices, "sliced_metrics.csv")):
        frame.to_csv(work_dir / name, index=False)
        registry.log_artifact(run_id, work_dir / name, "evaluation")
    return [Table("worst-examples", worst.head(20).to_dict("records"),
                  f"Test rows with {worst_by} (more in MLflow: evaluation/worst_examples.csv)"),
            Table("test-metrics-by-slice", slices.to_dict("records"),
                  f"Test {sliced} per slice (input length, and data.slice_column)")]


def log_row_scores(scores: dict[str, tuple[float, ...]], test: pd.DataFrame, work_dir: Path, run_id: str) -> None:
    """The model's per-row test scores, in the split's row order: what a later candidate's paired test reads."""
    folder, name = ROW_SCORES_ARTIFACT.rsplit("/", 1)
    rows = test["row"].to_numpy() if "row" in test.columns else range(len(test))
    pd.DataFrame({"row": rows, **scores}).to_csv(work_dir / name, index=False)
    registry.log_artifact(run_id, work_dir / name, folder)


def task_metrics(report: ClassificationReport | RegressionReport | GenerationReport, task: str) -> dict[str, float]:
    """The report's metrics the task's gate and registry tags read."""
    return {name: value for name, value in report.metrics().items() if name in kind(task).test_metrics}


def measure_baselines(splits: SplitResult, task_type: str, model_dir: Path, run_id: str) -> Baselines:
    """The gate's floor: trivial baselines fitted on the train split, scored on the test split, in the MLflow run."""
    lowercase = lowercases(model_dir) if kind(task_type).generative else False  # scored as the model's outputs are
    baselines = score_baselines(task_type, splits.train, splits.test, splits.labels, lowercase, splits.hashes["test"])
    registry.log_json(run_id, baselines.to_dict(), BASELINES_ARTIFACT)
    registry.log_metrics(run_id, {f"baseline_{b.name.replace('-', '_').replace(' ', '_')}_{metric}": value
                                  for b in baselines.all() for metric, value in b.metrics.items()})
    return baselines


def evaluate_model(
    trained: TrainResult, splits: SplitResult, config: EvaluationConfig, max_length: int, batch_size: int,
    work_dir: Path, run_id: str,
) -> tuple[ClassificationReport, list[Table]]:
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and worst errors of the PyTorch model."""
    test = splits.test
    probabilities = predict_proba(trained.model_dir, list(test["text"]), max_length, batch_size, trained.device)
    report = classification_report(list(test["label"]), probabilities, splits.labels)
    registry.log_metrics(run_id, report.metrics("test_"))
    log_row_scores(row_scores("classification", probabilities, list(test["label"]), splits.labels), test, work_dir,
                   run_id)
    registry.log_json(run_id, report.__dict__, "evaluation/torch_report.json")
    registry.log_artifact(run_id, plot_confusion_matrix(report, work_dir / "confusion_matrix.png"), "evaluation")
    tables = record_tables(worst_examples(test, probabilities, splits.labels, config.worst_examples),
                           "the highest loss", sliced_metrics(test, probabilities, splits.labels, config.slice_column),
                           "accuracy and macro-F1", work_dir, run_id)
    per_class = Table(
        "test-metrics-per-class",
        [{"label": label, **{k: round(v, 4) for k, v in scores.items()}} for label, scores in report.per_class.items()],
        f"PyTorch model on {report.rows} test rows: accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}",
    )
    return report, [*tables, per_class]


def evaluate_regression(
    trained: TrainResult, splits: SplitResult, config: EvaluationConfig, max_length: int, batch_size: int,
    work_dir: Path, run_id: str,
) -> tuple[RegressionReport, list[Table]]:
    """MSE, MAE and R² of the PyTorch model, predicted-vs-true plot, largest errors, metrics per slice."""
    test = splits.test
    predictions = predict_proba(trained.model_dir, list(test["text"]), max_length, batch_size, trained.device,
                                task="regression")
    targets = regression_targets(test)
    report = regression_report(targets, predictions)
    registry.log_metrics(run_id, report.metrics("test_"))
    log_row_scores(row_scores("regression", predictions, list(targets)), test, work_dir, run_id)
    registry.log_json(run_id, report.__dict__, "evaluation/torch_report.json")
    registry.log_artifact(run_id, plot_predicted_vs_true(targets, predictions, work_dir / "predicted_vs_true.png"),
                          "evaluation")
    return report, record_tables(worst_regression_examples(test, predictions, config.worst_examples),
                                 "the largest absolute error",
                                 sliced_regression_metrics(test, predictions, config.slice_column), "MSE, MAE and R²",
                                 work_dir, run_id)


def evaluate_generation(
    trained: TrainResult, splits: SplitResult, config: EvaluationConfig, settings: GenerationConfig, max_length: int,
    batch_size: int, work_dir: Path, run_id: str,
) -> tuple[GenerationReport, list[Table]]:
    """BLEU and ROUGE of the PyTorch model's generations with the config's decoding settings; lowest-ROUGE rows and
    metrics per slice."""
    test = splits.test
    outputs = generate(trained.model_dir, trained.task, list(test["text"]), settings, max_length, batch_size,
                       trained.device)
    lowercase = lowercases(trained.model_dir)
    report = generation_report(list(test["label"]), outputs, lowercase)
    registry.log_metrics(run_id, report.metrics("test_"))
    log_row_scores(row_scores(trained.task, outputs, list(test["label"]), (), lowercase), test, work_dir, run_id)
    registry.log_json(run_id, report.__dict__, "evaluation/torch_report.json")
    return report, record_tables(worst_generation_examples(test, outputs, config.worst_examples, lowercase),
                                 "the lowest ROUGE-L",
                                 sliced_generation_metrics(test, outputs, config.slice_column, lowercase),
                                 "BLEU and ROUGE-L", work_dir, run_id)
