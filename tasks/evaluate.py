"""Stage: score the fine-tuned PyTorch model on the held-out test split, with the reports people look at."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tuneline.tasks.common import TRANSIENT_RETRIES, publish
from tuneline.config import EvaluationConfig, GenerationConfig
from tuneline.data.splitting import SplitResult
from tuneline.evaluation import stage
from tuneline.evaluation.metrics import Baselines, ClassificationReport, GenerationReport, RegressionReport
from tuneline.training.engine import TrainResult


@task(name="score-baselines", **TRANSIENT_RETRIES)
def measure_baselines(splits: SplitResult, task_type: str, model_dir: Path, run_id: str) -> Baselines:
    """The gate's floor: trivial baselines fitted on the train split, scored on the test split, recorded with the run."""
    return stage.measure_baselines(splits, task_type, model_dir, run_id)


@task(name="evaluate", **TRANSIENT_RETRIES)
def evaluate_model(
    trained: TrainResult, splits: SplitResult, config: EvaluationConfig, max_length: int, batch_size: int,
    work_dir: Path, run_id: str,
) -> ClassificationReport:
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and worst errors of the PyTorch model."""
    report, tables = stage.evaluate_model(trained, splits, config, max_length, batch_size, work_dir, run_id)
    publish(*tables)
    return report


@task(name="evaluate-regression", **TRANSIENT_RETRIES)
def evaluate_regression(
    trained: TrainResult, splits: SplitResult, config: EvaluationConfig, max_length: int, batch_size: int,
    work_dir: Path, run_id: str,
) -> RegressionReport:
    """MSE, MAE and R² of the PyTorch model, predicted-vs-true plot, largest errors, metrics per slice."""
    report, tables = stage.evaluate_regression(trained, splits, config, max_length, batch_size, work_dir, run_id)
    publish(*tables)
    return report


@task(name="evaluate-generation", **TRANSIENT_RETRIES)
def evaluate_generation(
    trained: TrainResult, splits: SplitResult, config: EvaluationConfig, settings: GenerationConfig, max_length: int,
    batch_size: int, work_dir: Path, run_id: str,
) -> GenerationReport:
    """BLEU and ROUGE of the PyTorch model's generations with the config's decoding settings; lowest-ROUGE rows, slices."""
    report, tables = stage.evaluate_generation(trained, splits, config, settings, max_length, batch_size, work_dir,
                                               run_id)
    publish(*tables)
    return report
