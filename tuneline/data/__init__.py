"""Data: ingest a file into canonical rows, clean them, split them (`loading`, `cleaning`, `splitting`),
the text measurements every stage shares (`text`: duplicates, PII, label spellings) and the shipped samples (`samples`).

Imports only `tuneline.config` and `tuneline.errors` from tuneline; never torch, MLflow or Prefect.
"""
