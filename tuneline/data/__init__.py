"""Data: ingest a file into canonical rows, clean them, split them (`loading`, `cleaning`, `splitting`),
the text measurements every stage shares (`text`: duplicates, PII, label spellings) and the shipped samples (`samples`).
`stages` is what the Prefect tasks of these stages call: the work, its MLflow records, the tables they publish.

Imports `tuneline.config`, `tuneline.errors` and `tuneline.kinds`; `stages` also the registry, validation and the
gate's artifact names. Never torch or Prefect.
"""
