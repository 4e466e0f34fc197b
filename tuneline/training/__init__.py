"""Training: a base model per task type with its peft method (`modeling`), the Trainer run with resumable checkpoints
(`engine`, `checkpoints`) and multi-process launches (`distributed`).

Imports `tuneline.data` (the splits it trains on) and, for the MLflow metric logger, `tuneline.registry`; never Prefect.
"""
