"""Validation: the Great Expectations suites run on ingested, cleaned and split data (`suite`), the token-length
and prompt-template checks that need a tokenizer (`lengths`), drift against the champion's training data (`drift`),
and what the validate and drift tasks call (`stage`).

Imports `tuneline.data`, `tuneline.kinds` and, for a tokenizer's source only, `tuneline.training.modeling`; `stage`
also the registry. Never Prefect.
"""
