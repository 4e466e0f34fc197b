"""Tuning: hyperparameter search with optuna, each trial a training run of its own (`search`), and the study the
tune flow runs (`study`: planning, trials on the flow's task runner, the summary).

Imports `tuneline.config`, `tuneline.kinds`, `tuneline.registry` and `tuneline.training`; Prefect only through the
flow, which hands `study` its task runner.
"""
