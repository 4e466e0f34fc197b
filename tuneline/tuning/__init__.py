"""Tuning: hyperparameter search with optuna, each trial a training run of its own (`search`).

Imports `tuneline.config`, `tuneline.registry` and `tuneline.training`; Prefect only through the flow that calls it.
"""
