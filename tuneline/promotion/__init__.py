"""Promotion: the policy that decides whether a candidate may become champion (`policy`: bounds, baselines, paired
tests), the gate that scores the candidate and the champion on the same rows and moves the aliases (`gate`), and what
the promotion tasks call (`stage`).

Imports `tuneline.data`, `tuneline.evaluation`, `tuneline.registry` and, to score a model, `tuneline.training`; never
Prefect.
"""
