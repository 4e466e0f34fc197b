"""Validation: the Great Expectations suites run on ingested, cleaned and split data (`suite`), the token-length
and prompt-template checks that need a tokenizer (`lengths`), and drift against the champion's training data (`drift`).

Imports `tuneline.data` and, for a tokenizer's source only, `tuneline.training.modeling`; never Prefect.
"""
