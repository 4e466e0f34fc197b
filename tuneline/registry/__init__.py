"""Registry: runs, models, versions and aliases in MLflow (`store`), the model card a version carries
(`model_card`) and what re-exporting a registered version needs (`reexport`).

Imports `tuneline.config`, `tuneline.settings` and, in `reexport`, `tuneline.promotion`; never torch or Prefect.
"""
