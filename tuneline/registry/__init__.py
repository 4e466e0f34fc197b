"""Registry: runs, models, versions and aliases in MLflow (`store`), the model card a version carries
(`model_card`), what re-exporting a registered version needs (`reexport`), and the run's records gathered from every
stage: the MLflow run of a flow (`tracking`) and the registered version with its lineage (`registration`).

`store` imports `tuneline.config`, `tuneline.settings` and `tuneline.kinds`; `registration`, `tracking` and `reexport`
read the stages' results. Never torch at import time, never Prefect.
"""
