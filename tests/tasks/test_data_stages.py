"""The data stages as the flow runs them, for the tasks beyond classification: Prefect tasks, a real MLflow run."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from tuneline.flows.retrain import prepare_data
from tuneline.registry import store as registry
from tuneline.config import load_config
from tuneline.data.loading import BUILTIN_SEQ2SEQ_SAMPLE
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
    with pytest.raises(DataValidationError, match="on column 'stars'") as caught:
        data_stages(config, _run_id())
    # The user's column, not the internal `label` / `label_value`.
    assert "stars='five', row=11" in str(caught.value) and "'label_value'" not in str(caught.value)
    assert "column 'label'" not in str(caught.value)


def test_seq2seq_data_stages_on_the_shipped_sample(prefect_harness, state):
    config = load_config(overrides=["task=seq2seq", f"data.path={BUILTIN_SEQ2SEQ_SAMPLE}", "data.label_column=target"])
    cleaned, splits = data_stages(config, _run_id())
    assert cleaned.rows_out == 2000 and splits.labels == ()
    assert splits.sizes() == {"train": 1600, "validation": 200, "test": 200}


def test_land_ingest_and_the_lineage_hash_a_file_alike(prefect_harness, state, scores_csv, monkeypatch):
    """One hash per data file: the run's data.hash, the ingest cache key and what `tuneline land` announces."""
    import tuneline.tasks.ingest as ingest
    from tuneline.data.loading import file_hash
    from tuneline.data.stages import ingest_key

    config = load_config(overrides=["task=regression", f"data.path={scores_csv}", "data.text_column=review",
                                    "data.label_column=stars"])
    run_id = _run_id()
    data_stages(config, run_id)
    recorded = registry.client().get_run(run_id).data.tags["data.hash"]
    assert recorded == file_hash(scores_csv) == hashlib.sha256(scores_csv.read_bytes()).hexdigest()
    assert ingest_key({"config": config.data, "task": "regression"}).startswith(f"{recorded}|")
    # land: no server here, so the last announcement is said to be this content (nothing is sent either way).
    monkeypatch.setattr(ingest, "answering_prefect_api", lambda url: None)
    monkeypatch.setattr(ingest, "last_landed_sha256", lambda model: recorded)
    landed = ingest.announce_landed_data(scores_csv, "tuneline-classifier")
    assert landed.sha256 == recorded and not landed.announced


def test_labels_spelt_several_ways_stop_the_stages_or_are_normalised_when_asked(prefect_harness, state, tmp_path):
    from tuneline.data.samples import generate_reviews

    frame = generate_reviews(120, seed=5, label_noise=0.0)[["text", "label"]]
    frame.loc[frame.index[frame["label"] == "positive"][:15], "label"] = " POSITIVE"
    path = tmp_path / "spelt.csv"
    frame.to_csv(path, index=False)
    overrides = [f"data.path={path}", "train.max_length=64"]
    with pytest.raises(DataValidationError, match="expect_label_spellings_to_be_consistent") as caught:
        data_stages(load_config(overrides=overrides), _run_id())
    assert "' POSITIVE' (15 rows)" in str(caught.value) and "Setting: data.normalize_labels=false" in str(caught.value)
    run_id = _run_id()
    cleaned, splits = data_stages(load_config(overrides=[*overrides, "data.normalize_labels=true"]), run_id)
    assert splits.labels == ("negative", "positive") and set(cleaned.frame["label"]) == {"negative", "positive"}
    run = registry.client().get_run(run_id)
    assert run.data.metrics["rows_relabelled"] == 15 and run.data.tags["labels"] == "negative,positive"
