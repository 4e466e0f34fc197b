"""Training: a base model per task type with its peft method (`modeling`), the Trainer run with resumable checkpoints
(`engine`, `checkpoints`), multi-process launches (`distributed`) and what the training tasks call (`stage`).

Imports `tuneline.data`, `tuneline.kinds` and, for the MLflow metric logger and the stage's records,
`tuneline.registry`; never Prefect.
"""
