"""The retrain flow: validated data in, a registered, exported, aliased model out.

Run it with `tuneline retrain [--config file.yaml] [key=value ...]`,
`python -m tuneline retrain [...]`, or from a Prefect deployment.
"""

from __future__ import annotations

import shutil

from tuneline.kinds import kind
import tuneline.flows  # noqa: F401  (sets up the environment before Prefect is imported)
from prefect import flow
from prefect.runtime import flow_run

from tuneline.tasks.clean import clean_data
from tuneline.tasks.drift import check_drift
from tuneline.tasks.evaluate import evaluate_generation, evaluate_model, evaluate_regression, measure_baselines
from tuneline.tasks.export import compare_exported, export_model
from tuneline.tasks.ingest import ingest_data
from tuneline.tasks.promote import await_signoff, gate_and_promote
from tuneline.tasks.record import record_data
from tuneline.tasks.register import register_version
from tuneline.tasks.report import publish_summary
from tuneline.tasks.split import split_data
from tuneline.tasks.tracking import finish_tracking, load_secrets, start_tracking
from tuneline.tasks.train import cross_validate_model, fine_tune_model
from tuneline.tasks.validate import validate_data
from tuneline.config import RetrainConfig
from tuneline.evaluation.stage import task_metrics
from tuneline.export.stage import triton_repository
from tuneline.registry.tracking import retrain_summary
from tuneline.settings import state_dir
from tuneline.summary import RetrainSummary


def evaluate_for_task(trained, splits, config: RetrainConfig, work_dir, run_id):
    """The evaluation stage of the configured task: its metrics, plots and worst examples."""
    evaluation, length, batch = config.evaluation, config.train.max_length, config.train.eval_batch_size
    if kind(config.task).has_classes:
        return evaluate_model(trained, splits, evaluation, length, batch, work_dir, run_id)
    if kind(config.task).numeric:
        return evaluate_regression(trained, splits, evaluation, length, batch, work_dir, run_id)
    return evaluate_generation(trained, splits, evaluation, config.generation, length, batch, work_dir, run_id)


def prepare_data(config: RetrainConfig, run_id: str):
    """The data stages every flow that trains shares: ingest, validate, clean, split, then record them in `run_id`.

    The four stages are cached on the data's hash and their settings (Prefect shows a re-run's as Cached);
    data.cache=false recomputes them and refreshes the cache.
    """
    cache = {} if config.data.cache else {"refresh_cache": True}
    ingested = ingest_data.with_options(**cache)(config.data, run_id, config.task)
    validation = validate_data.with_options(**cache)(ingested, config.data, run_id, config.task, config.train,
                                                     config.split)
    check_drift(ingested, config.data, config.registry.model_name, run_id, config.task)  # vs the champion's data
    cleaned = clean_data.with_options(**cache)(ingested, run_id, config.task, config.data.checks)
    splits = split_data.with_options(**cache)(cleaned, config.data, config.split, ingested.source, run_id, config.task)
    record_data(ingested, validation, cleaned, splits, config, run_id)
    return ingested, validation, cleaned, splits


@flow(name="retrain", log_prints=True)
def retrain(config: RetrainConfig = RetrainConfig()) -> RetrainSummary:
    """Ingest, validate, clean, split, fine-tune, evaluate, export, register, gate against the champion, and (when
    promotion.signoff asks) wait for a person's approval before the candidate takes `champion`."""
    load_secrets()  # MLflow / S3 / Hub credentials from Prefect Secret blocks where the environment has none
    run_id = start_tracking(config, run_name=flow_run.get_name() or "retrain")
    work_dir = state_dir() / "runs" / run_id
    try:
        ingested, validation, cleaned, splits = prepare_data(config, run_id)
        if config.train.cv_folds:
            cross_validate_model(splits, config.train, config.task, work_dir, run_id)
        trained = fine_tune_model(splits, config.train, config.task, work_dir, run_id)
        torch_report = evaluate_for_task(trained, splits, config, work_dir, run_id)
        test_metrics = task_metrics(torch_report, config.task)
        baselines = measure_baselines(splits, config.task, trained.model_dir, run_id)  # the gate's floor
        exported = export_model(trained.model_dir, list(splits.validation["text"]), list(splits.train["text"]),
                                config.export, config.task, config.train.max_length, work_dir, run_id)
        variants = compare_exported(trained.model_dir, splits.test, splits.labels, exported, config.export, config.task,
                                    config.train.max_length, config.train.eval_batch_size, run_id, config.generation)
        triton = triton_repository(exported, config.registry.model_name, work_dir) if config.export.triton else None
        version = register_version(config, ingested, validation, cleaned, splits, trained, test_metrics, exported,
                                   variants, run_id, triton=triton,
                                   classification=torch_report if kind(config.task).has_classes else None)
        gate = gate_and_promote(version, splits, test_metrics, config, baselines)
        if gate.awaiting_signoff:  # promotion.signoff: the flow pauses here until a person approves or rejects
            gate = await_signoff(version, gate, test_metrics, config)
    except BaseException as error:
        finish_tracking(run_id, error)
        raise
    finish_tracking(run_id)
    # Everything worth keeping now lives in MLflow; the scratch copies are ~200 MB a run.
    shutil.rmtree(work_dir, ignore_errors=True)
    shutil.rmtree(trained.checkpoint_dir, ignore_errors=True)  # kept until now: a failed run's re-run resumes from it
    summary = retrain_summary(config, run_id, version, gate, ingested, cleaned, splits, trained, test_metrics, exported,
                              variants)
    publish_summary(summary)
    return summary
