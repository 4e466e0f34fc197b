"""The data stages as the flow runs them, for the tasks beyond classification: Prefect tasks, a real MLflow run."""

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from flows.retrain import prepare_data
from tuneline import registry
from tuneline.config import load_config
from tuneline.data import BUILTIN_SEQ2SEQ_SAMPLE
from tuneline.errors import DataValidationError


@flow
def data_stages(config, run_id: str):
    _, _, cleaned, splits = prepare_data(config, run_id)
    return cleaned, splits


def _run_id() -> str:
    return registry.start_run("data-stages", "test", params={}, config_yaml="", tags={})


@pytest.fixture
def scores_csv(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "scores.csv"
    frame = pd.DataFrame({"review": [f"review {i} of this kettle" for i in range(100)],
                          "stars": rng.integers(1, 6, 100)})
    frame.loc[7, "review"] = frame.loc[3, "review"]  # one duplicate text, with its own score
    frame.to_csv(path, index=False)
    return path


def test_regression_data_stages(prefect_harness, state, scores_csv):
    config = load_config(overrides=["task=regression", f"data.path={scores_csv}", "data.text_column=review",
                                    "data.label_column=stars"])
    assert config.data.expectation_suite == "text_regression"
    run_id = _run_id()
    cleaned, splits = data_stages(config, run_id)
    assert cleaned.rows_out == 99 and splits.labels == ()
    assert sum(splits.sizes().values()) == 99
    tags = registry.client().get_run(run_id).data.tags
    assert tags["validation.suite"] == "text_regression" and tags["validation.success"] == "True"
    assert "labels" not in tags and "data.hash.test" in tags


def test_regression_data_stages_stop_on_a_word_for_a_score(prefect_harness, state, scores_csv):
    frame = pd.read_csv(scores_csv, dtype=str)
    frame.loc[11, "stars"] = "five"
    frame.to_csv(scores_csv, index=False)
    config = load_config(overrides=["task=regression", f"data.path={scores_csv}", "data.text_column=review",
                                    "data.label_column=stars"])
    with pytest.raises(DataValidationError, match="label='five', row=11"):
        data_stages(config, _run_id())


def test_seq2seq_data_stages_on_the_shipped_sample(prefect_harness, state):
    config = load_config(overrides=["task=seq2seq", f"data.path={BUILTIN_SEQ2SEQ_SAMPLE}", "data.label_column=target"])
    cleaned, splits = data_stages(config, _run_id())
    assert cleaned.rows_out == 2000 and splits.labels == ()
    assert splits.sizes() == {"train": 1600, "validation": 200, "test": 200}
