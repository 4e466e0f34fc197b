"""Drift of a batch from the champion's training data: the measures on plain values, then the stage in the real flow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from tuneline.tasks.drift import check_drift
from tests.reliability.bad_inputs import CHAMPION_MODEL, Written, base_frame, run_overrides, use_store
from tuneline.registry import store as registry
from tuneline.config import DataConfig, DriftConfig, load_config
from tuneline.data.loading import load_dataset
from tuneline.validation.drift import compare, profile, raise_for_drift
from tuneline.errors import ConfigError, DataDriftError

BOUNDS = DriftConfig()


@pytest.fixture(scope="module")
def reference() -> dict:
    return profile(base_frame(240, seed=1), "classification")


def _failed(report) -> dict[str, object]:
    return {o.expectation: o for o in report.failures}


def test_a_fresh_sample_of_the_same_data_passes(reference):
    report = compare(reference, profile(base_frame(240, seed=2), "classification"), BOUNDS, "champion 1")
    assert report.success and report.evaluated == 3
    assert report.measures["drift_label_shift"] < 0.05 and report.measures["drift_length_ks"] < 0.15
    assert report.measures["drift_vocabulary_overlap"] > 0.9
    raise_for_drift(report, "batch.csv")  # does not raise
    assert json.loads(json.dumps(report.to_dict()))["measures"] == report.measures


def test_a_label_shift_beyond_the_bound_fails_naming_the_labels(reference):
    batch = base_frame(240, seed=2)
    batch.loc[batch.index[batch["label"] == "positive"][:84], "label"] = "negative"  # 85% negative
    report = compare(reference, profile(batch, "classification"), BOUNDS, "champion 1")
    shift = _failed(report)["expect_label_shift_to_be_at_most"]
    assert list(_failed(report)) == ["expect_label_shift_to_be_at_most"]
    assert report.measures["drift_label_shift"] == pytest.approx(0.35, abs=0.01)
    assert shift.example_rows[0] == {"label": "negative", "reference_share": 0.5, "batch_share": 0.85}
    with pytest.raises(DataDriftError) as caught:
        raise_for_drift(report, "batch.csv")
    message = str(caught.value)
    assert message.startswith("batch.csv drifted from champion 1") and "total variation distance 0.350" in message
    assert "label='negative', reference_share=0.5, batch_share=0.85" in message
    assert "data.drift.reference" in message  # says what to do when the change is real


def test_a_length_shift_fails_with_the_quantiles_that_moved(reference):
    batch = base_frame(240, seed=2)
    batch["text"] = batch["text"] + " " + batch["text"] + " " + batch["text"]
    report = compare(reference, profile(batch, "classification"), BOUNDS)
    length = _failed(report)["expect_text_length_shift_to_be_at_most"]
    assert set(_failed(report)) == {"expect_text_length_shift_to_be_at_most"}
    assert report.measures["drift_length_ks"] > 0.7
    median = next(row for row in length.example_rows if row["quantile"] == "median")
    assert median["batch"] > 2.5 * median["reference"]


def test_a_batch_in_another_language_fails_on_vocabulary_naming_new_words(reference):
    batch = base_frame(240, seed=2)
    batch["text"] = [f"Le colis numéro {i} est arrivé en retard et le vendeur ne répond pas" for i in range(240)]
    report = compare(reference, profile(batch, "classification"), BOUNDS)
    vocabulary = _failed(report)["expect_vocabulary_overlap_to_be_at_least"]
    assert report.measures["drift_vocabulary_overlap"] < 0.2
    assert {"new_word": "le", "occurrences": 480} in vocabulary.example_rows


def test_a_small_batch_is_not_failed_for_sampling_noise(reference):
    """Ten rows, eight of one class: a shift of 0.3, beyond the bound, but ten rows do that by chance (p ~ 0.1)."""
    batch = base_frame(240, seed=2).head(10).assign(label=["negative"] * 8 + ["positive"] * 2)
    current = profile(batch, "classification")
    assert compare(reference, current, BOUNDS).success
    assert not compare(reference, current, DriftConfig(significance=1)).success  # the bound alone


def test_regression_targets_are_compared_with_a_ks_statistic():
    rng = np.random.default_rng(0)
    frame = base_frame(240, seed=1)
    scored = lambda values: frame.assign(label=[repr(float(v)) for v in values])  # noqa: E731
    reference = profile(scored(rng.normal(3, 0.5, 240)), "regression")
    assert compare(reference, profile(scored(rng.normal(3, 0.5, 240)), "regression"), BOUNDS).success
    shifted = compare(reference, profile(scored(rng.normal(4, 0.5, 240)), "regression"), BOUNDS)
    assert set(_failed(shifted)) == {"expect_target_shift_to_be_at_most"} and shifted.measures["drift_target_ks"] > 0.5


def test_a_profile_is_small_json_and_another_task_is_not_compared(reference):
    big = pd.DataFrame({"text": [f"review number {i} " + "word " * (i % 50) for i in range(5000)],
                        "label": ["a", "b"] * 2500})
    summary = profile(big, "classification")
    assert len(summary["length_sample"]) == 2000 and summary["rows"] == 5000
    assert summary["labels"] == {"a": 2500, "b": 2500} and len(json.dumps(summary)) < 100_000
    other = compare(reference, profile(base_frame(60), "regression"), BOUNDS)
    assert other.success and other.evaluated == 0 and "task 'classification'" in other.notes[0]


def test_drift_settings_are_checked_when_built():
    with pytest.raises(ConfigError, match="max_label_shift"):
        load_config(overrides=["data.drift.max_label_shift=0"])
    with pytest.raises(ConfigError, match="min_vocabulary_overlap"):
        load_config(overrides=["data.drift.min_vocabulary_overlap=1.5"])
    with pytest.raises(ConfigError, match="max_shift"):
        load_config(overrides=["data.drift.max_shift=0.1"])  # a misspelt knob fails, it is not ignored
    assert load_config(overrides=["data.drift.enabled=false"]).data.drift.enabled is False


# --- the stage, with a champion trained by the real flow -------------------------------------------------------------


@flow
def drift_stage(path: str, config: DataConfig, run_id: str):
    return check_drift(load_dataset(path, "text", "label"), config, CHAMPION_MODEL, run_id)


def _batch(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "batch.csv"
    frame.to_csv(path, index=False)
    return path


def _artifact(run_id: str, name: str) -> dict:
    return json.loads(Path(registry.client().download_artifacts(run_id, name)).read_text())


def test_a_fresh_batch_passes_the_champion_check_and_is_reported(drift_champion, tmp_path):
    with use_store(drift_champion.store):
        run_id = registry.start_run("drift-stage", "fresh", {}, "", {})
        report = drift_stage(str(_batch(tmp_path, base_frame(seed=3))), DataConfig(), run_id)
        assert report.success and report.reference.startswith(f"champion {CHAMPION_MODEL} version 1")
        run = registry.client().get_run(run_id)
        assert run.data.tags["drift.success"] == "True" and 0 <= run.data.metrics["drift_label_shift"] < 0.2
        assert _artifact(run_id, "validation/drift.json")["measures"] == report.measures
        assert _artifact(run_id, "data/profile.json")["rows"] == 120  # this batch is a reference in its turn


def test_a_file_reference_and_switching_drift_off(drift_champion, tmp_path):
    shifted = base_frame(seed=3)
    shifted.loc[shifted.index[shifted["label"] == "positive"][:45], "label"] = "negative"
    path = str(_batch(tmp_path, shifted))
    with use_store(drift_champion.store):
        # Compared with data of its own kind, the shifted batch is no drift at all.
        same_kind = DataConfig(drift=DriftConfig(reference=path))
        assert drift_stage(path, same_kind, registry.start_run("drift-stage", "file", {}, "", {})).success
        off = drift_stage(path, DataConfig(drift=DriftConfig(enabled=False)),
                          registry.start_run("drift-stage", "off", {}, "", {}))
        assert off.success and off.evaluated == 0 and "enabled=false" in off.notes[0]
        with pytest.raises(DataDriftError, match="label='negative'"):
            drift_stage(path, DataConfig(), registry.start_run("drift-stage", "champion", {}, "", {}))


@pytest.mark.e2e
def test_the_flow_stops_a_batch_in_another_language_and_registers_nothing(drift_champion, tiny_bert, tmp_path):
    from tuneline.flows.retrain import retrain

    batch = base_frame(seed=5)
    batch["text"] = [f"Avis {i}: le colis est arrivé {'vite' if good else 'cassé'}, le vendeur "
                     f"{'répond' if good else 'ne répond pas'}" for i, good in enumerate(batch["label"] == "positive")]
    written = Written(_batch(tmp_path, batch), (f"registry.model_name={CHAMPION_MODEL}",))
    with use_store(drift_champion.store):
        with pytest.raises(DataDriftError) as caught:
            retrain(config=load_config(overrides=run_overrides(written, tiny_bert, "drift-flow")))
        message = str(caught.value)
        assert str(written.path) in message and "expect_vocabulary_overlap_to_be_at_least" in message
        assert "new_word='le'" in message
        assert [str(v.version) for v in registry.client().search_model_versions(f"name='{CHAMPION_MODEL}'")] == ["1"]
        experiment = registry.client().get_experiment_by_name("drift-flow").experiment_id
        [run] = registry.client().search_runs([experiment])
        assert run.info.status == "FAILED" and "DataDriftError" in run.data.tags["error"]
        report = _artifact(run.info.run_id, "validation/drift.json")
        assert not report["success"] and report["measures"]["drift_vocabulary_overlap"] < 0.5
        assert "mean_train_loss" not in run.data.metrics
