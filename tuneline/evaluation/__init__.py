"""Evaluation: metrics and reports per task type, baselines and paired tests (`metrics`), PyTorch generation with
the run's decoding settings (`generation`) and what the evaluation tasks call (`stage`: the reports, their files and
MLflow records).

Imports `tuneline.data`, `tuneline.kinds` and `tuneline.training`; `stage` also the registry and the gate's artifact
names. Never Prefect.
"""
