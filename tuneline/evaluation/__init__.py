"""Evaluation: metrics and reports per task type, baselines and paired tests (`metrics`) and PyTorch generation with
the run's decoding settings (`generation`).

Imports `tuneline.data` and `tuneline.training`; never MLflow or Prefect.
"""
