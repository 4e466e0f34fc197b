"""Fixtures of the reliability tests: a champion trained once per session by the real flow (drift and corpus)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.bad_inputs import run_overrides, use_store, write_champion_data
from tuneline.config import load_config


@dataclass(frozen=True)
class Champion:
    """A store whose CHAMPION_MODEL has a first version, trained by the real flow on `write_champion_data`."""

    store: Path
    data: Path
    summary: object  # the flow's RetrainSummary


@pytest.fixture(scope="session")
def drift_champion(prefect_harness, tiny_bert, tmp_path_factory) -> Champion:
    """Trained once (a tiny random BERT, 2 steps) and shared by the drift tests and the corpus's drift case."""
    store = tmp_path_factory.mktemp("champion-store")
    written = write_champion_data(tmp_path_factory.mktemp("champion-data"))
    with use_store(store):
        from tuneline.flows.retrain import retrain

        summary = retrain(config=load_config(overrides=run_overrides(written, tiny_bert, "champion")))
        if summary.alias != "champion":
            # Two steps leave tiny BERT at chance, below the gate's floor (it must beat the majority class): these
            # tests need a champion's data to compare with, not a good model, so a person's promotion stands in.
            from tuneline.registry import store as registry

            registry.move_alias(summary.model_name, registry.CHAMPION, str(summary.version), "the reliability tests' reference data")
    return Champion(store, written.path, summary)
