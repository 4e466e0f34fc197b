"""Every bad input of the corpus through the real retrain flow: a typed error that says what, where and which rows,
and which setting governs the check, a report saved with the failed run, nothing trained, nothing registered. And the
good run it is measured against."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.bad_inputs import (
    CASES,
    CHAMPION_MODEL,
    DROPPED_BY_CLEANING,
    BadInput,
    run_overrides,
    use_store,
    write_case,
)
from tuneline.config import load_config
from tuneline.registry.store import CHAMPION, client

pytestmark = pytest.mark.e2e

# The report each stage leaves with the failed run: (MLflow artifact, Prefect artifact key).
REPORTS = {"ingest": ("validation/ingest.json", "ingest-report"),
           "validate": ("validation/report.json", "validation-report"),
           "drift": ("validation/drift.json", "drift-report")}
_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory) -> Path:
    """One MLflow store for every case without a champion: no case may ever register a version in it."""
    return tmp_path_factory.mktemp("corpus-store")


@pytest.fixture(scope="module", autouse=True)
def report_corpus_time():
    yield
    if _SECONDS:
        slowest = sorted(_SECONDS.items(), key=lambda item: -item[1])[:3]
        print(f"\nbad-input corpus: {len(_SECONDS)} flow runs in {sum(_SECONDS.values()):.1f} s; slowest "
              + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in slowest))


def _prefect_markdown(flow_run_id, key: str) -> str:
    """The markdown artifact `key` that the flow run published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert found, f"no Prefect artifact {key!r} on flow run {flow_run_id}"
    return found[0].data


def _the_failed_run(experiment: str):
    runs = client().search_runs([client().get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


def _check_report(case: BadInput, run, message: str, path: Path, flow_run_id) -> None:
    """The stage's JSON report on the MLflow run and its markdown in Prefect say the same as the error."""
    artifact, key = REPORTS[case.stage]
    folder = artifact.rsplit("/", 1)[0]
    assert artifact in {a.path for a in client().list_artifacts(run.info.run_id, folder)}
    report = json.loads(Path(client().download_artifacts(run.info.run_id, artifact)).read_text())
    markdown = _prefect_markdown(flow_run_id, key)
    assert report["success"] is False and "FAILED" in markdown
    if case.stage == "ingest":
        assert report["source"] == str(path) and report["problem"] == message and str(path) in markdown
        named = [int(f.split()[1]) for f in case.fragments if f.startswith("line ")]
        assert report["line"] == (named[0] if named else report["line"])  # the line the parser named, as a field
    else:
        failed = [o["expectation"] for o in report["outcomes"] if not o["success"]]
        assert failed and all(name in message and name in markdown for name in failed)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_bad_input_stops_the_flow_with_a_report_and_registers_nothing(case, prefect_harness, tiny_bert,
                                                                      corpus_store, tmp_path, request):
    from tuneline.flows.retrain import retrain

    store = request.getfixturevalue("drift_champion").store if case.needs_champion else corpus_store
    written = write_case(case, tmp_path / "data")
    experiment = f"bad-input-{case.name}"
    with use_store(store):
        registered = {(v.name, v.version) for v in client().search_model_versions()}
        started = time.perf_counter()
        state = retrain(config=load_config(overrides=run_overrides(written, tiny_bert, experiment)), return_state=True)
        _SECONDS[case.name] = time.perf_counter() - started
        assert state.is_failed(), f"{case.name}: the flow did not fail"
        with pytest.raises(case.error) as caught:
            state.result()
        assert type(caught.value) is case.error  # a drift error is a validation error; each case names its own
        message = str(caught.value)
        # What is wrong, where (the file; line or row) and what: the case's fragments hold its line, rows or values.
        assert str(written.path) in message
        missing = [fragment for fragment in (*case.fragments, *([case.setting] if case.setting else []))
                   if fragment not in message]
        assert not missing, f"{case.name}: {missing} not in\n{message}"
        if case.stage != "ingest":
            assert all(f["example_rows"] or f["observed_value"] is not None for f in caught.value.failures)
            # Every failed check names the setting that governs it, with its value: the one override.
            failed_lines = [line for line in message.splitlines() if line.startswith("  - ")]
            assert failed_lines and all(". Setting: " in line for line in failed_lines), message
            assert all(f["setting"] for f in caught.value.failures)
        run = _the_failed_run(experiment)
        assert run.info.status == "FAILED" and run.data.tags["error"].startswith(case.error.__name__)
        assert "mean_train_loss" not in run.data.metrics  # nothing after the data checks ran
        _check_report(case, run, message, written.path, state.state_details.flow_run_id)
        assert {(v.name, v.version) for v in client().search_model_versions()} == registered
        if not case.needs_champion:
            assert registered == set()


def test_the_corpus_covers_the_issue_and_every_stage():
    names = {case.name for case in CASES}
    assert len(CASES) >= 60
    assert {"empty_file", "header_only", "missing_text_column", "missing_label_column", "wrong_delimiter",
            "latin1_file", "mixed_encodings", "null_texts", "whitespace_only_texts", "labels_outside_allowed_set",
            "single_class", "heavy_duplicates", "text_over_length_bound",
            "truncated_in_quoted_field", "parquet_integer_text", "label_distribution_shift"} <= names
    # Issue 21: what users get wrong with labels, columns and encodings.
    assert {"label_spellings_mixed", "labels_numbers_and_words_jsonl", "numbers_mapped_as_text",
            "text_mostly_placeholder", "all_identical_text", "each_text_twice_opposite_labels",
            "category_mapped_as_text", "label_trailing_spaces", "windows1252_file", "utf16_file",
            "exports_joined_with_cat", "header_only", "regression_words_for_scores"} <= names
    assert {case.stage for case in CASES} == set(REPORTS)
    # A data check always has a setting to name; a file the reader cannot parse sometimes has none.
    assert all(case.setting for case in CASES if case.stage != "ingest")


def test_the_good_run_registers_and_cleaning_counts_and_keeps_dropped_rows(drift_champion):
    """The control: the base data passes every check and registers; the rows cleaning drops are counted and saved."""
    with use_store(drift_champion.store):
        version = client().get_model_version_by_alias(CHAMPION_MODEL, CHAMPION)
        assert str(version.version) == "1" and version.run_id == drift_champion.summary.run_id
        run = client().get_run(version.run_id)
        assert run.data.metrics["rows_dropped"] == len(DROPPED_BY_CLEANING) == drift_champion.summary.rows["dropped"]
        dropped = pd.read_csv(client().download_artifacts(version.run_id, "data/dropped_rows.csv"))
        assert set(dropped["reason"]) == DROPPED_BY_CLEANING
        assert list(dropped["row"]) == [120, 121, 122]  # the rows appended to the base frame, by file position
        artifacts = {a.path for a in client().list_artifacts(version.run_id, "data")}
        assert "data/profile.json" in artifacts  # the next batch's drift reference
        drift = json.loads(Path(client().download_artifacts(version.run_id, "validation/drift.json")).read_text())
        assert drift["success"] and "holds the champion alias yet" in drift["notes"][0]
