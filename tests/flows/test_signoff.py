"""A person's sign-off between challenger and champion: real paused Prefect flow runs, resumed through the
Prefect API with the form the UI shows, against a real MLflow registry (SQLite)."""

from __future__ import annotations

import threading
import time

import pytest
from prefect import flow

from tuneline.tasks.promote import await_signoff, gate_and_promote
from tests.conftest import make_reviews
from tuneline.promotion import gate as gating
from tuneline.registry import store as registry
from tuneline.config import PromotionConfig, SignoffConfig, load_config
from tuneline.data.loading import BUILTIN_SAMPLE, content_hash, load_dataset
from tuneline.data.splitting import SplitResult
from tuneline.evaluation.metrics import Baseline, Baselines
from tuneline.promotion.policy import Decision, ModelMetrics, decide, needs_signoff
from tuneline.registry.store import CHALLENGER, CHAMPION, RegisteredVersion, client

MODEL = "signoff-model"
# The floor on the candidate fixture's 30 test rows, as plain values: both versions clear it
BASELINES = Baselines(Baseline("majority class", "always 'negative'", {"accuracy": 0.5, "macro_f1": 0.33}),
                      Baseline("bag-of-words", "TF-IDF + logistic regression", {"accuracy": 0.7, "macro_f1": 0.7}),
                      rows=30)


class Responder(threading.Thread):
    """Plays the person at the Prefect UI: waits for a paused run of `flow_name`, reads its form, resumes it."""

    def __init__(self, flow_name: str, run_input: dict, wait_seconds: float = 120):
        super().__init__(daemon=True)
        self.flow_name, self.run_input, self.wait_seconds = flow_name, run_input, wait_seconds
        self.description: str | None = None
        self.schema: dict | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType
        from prefect.flow_runs import resume_flow_run
        from prefect.input.actions import read_flow_run_input

        try:
            deadline = time.monotonic() + self.wait_seconds
            with get_client(sync_client=True) as prefect_client:
                while time.monotonic() < deadline:
                    paused = prefect_client.read_flow_runs(
                        flow_filter=FlowFilter(name=FlowFilterName(any_=[self.flow_name])),
                        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
                    )
                    if paused:
                        run = paused[0]
                        base = f"paused-{run.state.state_details.pause_key}"
                        self.description = read_flow_run_input(f"{base}-description", flow_run_id=run.id)
                        self.schema = read_flow_run_input(f"{base}-schema", flow_run_id=run.id)
                        resume_flow_run(run.id, run_input=self.run_input)
                        return
                    time.sleep(0.5)
            raise TimeoutError(f"no paused run of {self.flow_name} within {self.wait_seconds} s")
        except BaseException as exc:  # handed to the test, which asserts on it
            self.error = exc


def _version(model: str, metrics: dict[str, float], test_hash: str) -> RegisteredVersion:
    """A registry version with the tags tuneline's register stage writes (the gate reads only those)."""
    run_id = registry.start_run("signoff", "candidate", params={}, config_yaml="", tags={})
    client().log_text(run_id, "weights would be here", "model/README.md")
    try:
        client().create_registered_model(model)
    except Exception:  # already there
        pass
    tags = {"task": "classification", "data.hash.test": test_hash, **{f"test.{k}": f"{v:.6f}" for k, v in metrics.items()}}
    source = f"{client().get_run(run_id).info.artifact_uri}/model"
    created = client().create_model_version(model, source=source, run_id=run_id, tags=tags)
    return RegisteredVersion(model, str(created.version), run_id, source)


@pytest.fixture(scope="module")
def registry_store(tmp_path_factory):
    """One MLflow SQLite store for this module's registry tests (a fresh store costs seconds of migrations);
    each test registers its own model name."""
    import os

    folder = tmp_path_factory.mktemp("signoff-state")
    saved = {key: os.environ.get(key) for key in ("TUNELINE_HOME", "MLFLOW_TRACKING_URI")}
    os.environ |= {"TUNELINE_HOME": str(folder), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    yield folder
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def candidate(registry_store, request):
    """Version 1 is champion (accuracy 0.80); version 2, better on the same test rows, is the candidate."""
    model = f"{MODEL}-{request.node.name.removeprefix('test_')[:40]}".replace("_", "-")
    test = load_dataset(BUILTIN_SAMPLE, "text", "label").frame.head(30)
    splits = SplitResult(train=test, validation=test, test=test, labels=("negative", "positive"))
    champion = _version(model, {"accuracy": 0.80, "macro_f1": 0.79}, content_hash(test))
    registry.move_alias(model, CHAMPION, champion.version, reason="set up by the test")
    metrics = {"accuracy": 0.85, "macro_f1": 0.84}
    return _version(model, metrics, content_hash(test)), splits, metrics


def _config(version: RegisteredVersion, **signoff):
    return load_config(overrides=[f"registry.model_name={version.name}", "promotion.signoff.poll_seconds=1",
                                  *(f"promotion.signoff.{k}={v}" for k, v in signoff.items())])


@flow(name="gate-with-signoff")
def gate_with_signoff(version, splits, metrics, config):
    """The gate and sign-off steps exactly as flows/retrain.py runs them."""
    gate = gate_and_promote(version, splits, metrics, config, BASELINES)
    if gate.awaiting_signoff:
        gate = await_signoff(version, gate, metrics, config)
    return gate


def test_approval_moves_the_champion_and_records_who_and_why(prefect_harness, candidate):
    version, splits, metrics = candidate
    person = Responder("gate-with-signoff", {"decision": "approve", "comment": "slices look fine", "approver": "alice"})
    person.start()
    result = gate_with_signoff(version, splits, metrics, _config(version, policy="always"))
    person.join(timeout=30)
    assert person.error is None
    # What the person saw: the candidate-vs-champion table and an approve/reject form.
    assert "| accuracy (primary) | 0.85 | 0.8 | +0.0500 | yes | 0.5 | 0.7 |" in person.description  # baselines too
    assert "vs champion version 1" in person.description
    assert person.schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    assert (result.alias, result.signoff) == (CHAMPION, "approved")
    assert str(registry.version_by_alias(version.name, CHAMPION).version) == version.version
    tags = client().get_model_version(version.name, version.version).tags
    assert (tags["signoff.decision"], tags["signoff.by"], tags["signoff.comment"]) == ("approved", "alice", "slices look fine")
    assert tags["signoff.champion"] == "1" and "signed off by alice" in tags["champion.reason"]
    assert client().get_model_version(version.name, "1").tags["champion.replaced_by"] == version.version
    assert client().get_run(version.run_id).data.tags["signoff.decision"] == "approved"


def test_rejection_leaves_the_champion_where_it_was(prefect_harness, candidate):
    version, splits, metrics = candidate
    person = Responder("gate-with-signoff", {"decision": "reject", "comment": "wait for the new labels", "approver": "bob"})
    person.start()
    result = gate_with_signoff(version, splits, metrics, _config(version, policy="always"))
    person.join(timeout=30)
    assert person.error is None
    assert (result.alias, result.signoff) == (CHALLENGER, "rejected")
    assert str(registry.version_by_alias(version.name, CHAMPION).version) == "1"
    assert str(registry.version_by_alias(version.name, CHALLENGER).version) == version.version
    tags = client().get_model_version(version.name, version.version).tags
    assert (tags["signoff.decision"], tags["signoff.by"], tags["signoff.comment"]) == ("rejected", "bob", "wait for the new labels")
    assert result.decision.reasons[0] == "sign-off rejected by bob: wait for the new labels"


def test_no_answer_in_time_is_a_rejection_and_the_flow_completes(prefect_harness, candidate):
    version, splits, metrics = candidate
    state = gate_with_signoff(version, splits, metrics, _config(version, policy="always", timeout_seconds=2), return_state=True)
    assert state.is_completed()  # not Failed: the timeout is a decision, recorded like any other
    result = state.result()
    assert (result.alias, result.signoff) == (CHALLENGER, "timed_out")
    assert str(registry.version_by_alias(version.name, CHAMPION).version) == "1"
    assert client().get_model_version(version.name, version.version).tags["signoff.decision"] == "timed_out"


def test_below_margin_asks_only_for_a_narrow_win(prefect_harness, candidate):
    version, splits, metrics = candidate  # +0.05 accuracy over the champion
    result = gate_with_signoff(version, splits, metrics, _config(version, policy="below_margin", margin=0.01))
    assert (result.alias, result.signoff, result.awaiting_signoff) == (CHAMPION, None, False)  # a clear win: not asked
    assert "signoff.decision" not in client().get_model_version(version.name, version.version).tags


def test_the_policy_is_a_pure_function_of_the_gate_decision():
    champion, policy = ModelMetrics({"accuracy": 0.80, "macro_f1": 0.8}), PromotionConfig()
    narrow = decide(ModelMetrics({"accuracy": 0.805, "macro_f1": 0.8}), champion, policy, BASELINES)
    clear = decide(ModelMetrics({"accuracy": 0.90, "macro_f1": 0.8}), champion, policy, BASELINES)
    worse = decide(ModelMetrics({"accuracy": 0.75, "macro_f1": 0.8}), champion, policy, BASELINES)
    first = decide(ModelMetrics({"accuracy": 0.75, "macro_f1": 0.75}), None, policy, BASELINES)
    below_floor = decide(ModelMetrics({"accuracy": 0.5, "macro_f1": 0.5}), None, policy, BASELINES)
    assert narrow.margin == pytest.approx(0.005) and first.margin is None and not below_floor.promote
    assert not any(needs_signoff(below_floor, SignoffConfig(policy=p)) for p in ("always", "below_margin"))
    below = SignoffConfig(policy="below_margin", margin=0.01)
    assert [needs_signoff(d, below) for d in (narrow, clear, worse, first)] == [True, False, False, False]
    assert [needs_signoff(d, SignoffConfig(policy="always")) for d in (narrow, clear, worse, first)] == [True, True, False, True]
    assert not any(needs_signoff(d, SignoffConfig()) for d in (narrow, clear, worse, first))  # never, the default
    assert needs_signoff(Decision(True, (), margin=0.02), SignoffConfig(policy="below_margin", margin=0.03))


def test_an_approval_after_the_champion_moved_is_not_applied(candidate):
    version, splits, metrics = candidate
    config = _config(version, policy="always")
    gate = gating.run_gate(version.name, version.version, ModelMetrics(metrics, content_hash(splits.test)), splits.test,
                           config.promotion, 64, 8, baselines=BASELINES)
    assert gate.awaiting_signoff and gate.alias == CHALLENGER
    assert client().get_model_version(version.name, version.version).tags["signoff.status"] == "pending"
    other = _version(version.name, {"accuracy": 0.9, "macro_f1": 0.9}, content_hash(splits.test))
    registry.move_alias(version.name, CHAMPION, other.version, reason="hotfix meanwhile")
    result = gating.apply_signoff(version.name, version.version, gate, "approved", "carol", "")
    assert (result.alias, result.signoff) == (CHALLENGER, "stale")
    assert str(registry.version_by_alias(version.name, CHAMPION).version) == other.version
    assert "champion moved from 1 to 3" in result.decision.reasons[0]


@pytest.mark.e2e
def test_the_retrain_flow_pauses_for_approval_then_for_rejection(prefect_harness, state, tmp_path, tiny_bert):
    """The real retrain flow (a tiny random BERT): approved, the first version becomes champion; rejected, the
    second stays challenger and the champion does not move.

    Only a candidate that clears the floor is put to a person, so the tiny model gets reviews it can learn in 60
    steps (a word of praise or of complaint in each): it scores 1.0 on the test split, which the bag-of-words
    baseline also reaches (a perfect score need only be matched). After 2 steps it would tie the majority class
    and be held without asking anyone."""
    from tuneline.flows.retrain import retrain

    frame = make_reviews(100)
    frame.loc[0, "text"] = "arrived late, write to me at dana@example.com"  # reported, not fatal
    path = tmp_path / "reviews.csv"
    frame[["text", "label"]].to_csv(path, index=False)
    config = load_config(overrides=[
        f"data.path={path}", f"train.base_model={tiny_bert}", "train.max_steps=60", "train.learning_rate=1e-3",
        "train.batch_size=16",
        "train.max_length=48", "export.parity_rows=8", "export.max_accuracy_drop=1.0", "registry.model_name=signed",
        "promotion.signoff.policy=always", "promotion.signoff.poll_seconds=1",
    ])
    person = Responder("retrain", {"decision": "approve", "comment": "first model", "approver": "erin"}, wait_seconds=600)
    person.start()
    first = retrain(config=config)
    person.join(timeout=30)
    assert person.error is None and "Sign-off: signed version 1 vs no champion yet" in person.description
    assert (first.version, first.alias) == ("1", CHAMPION)
    assert first.gate_reasons[0] == "signed off by erin: first model"
    assert first.torch_metrics["accuracy"] == 1.0
    assert any(r.startswith("floor: accuracy 1.0000 vs bag-of-words baseline 1.0000") for r in first.gate_reasons)
    assert "| accuracy (primary) | 1.0 |  |  |  | 0.5 | 1.0 |" in person.description  # the baselines beside it
    version = client().get_model_version("signed", "1")
    assert version.tags["signoff.decision"] == "approved" and version.tags["split.strategy"] == "random"
    assert version.tags["rows.pii_masked"] == "0" and version.tags["validation.pii_policy"] == "report"
    run = client().get_run(first.run_id)
    assert run.data.tags["validation.pii_rows"] == "1" and float(run.data.tags["validation.truncated_share"]) < 0.05
    assert "validation/token_lengths.png" in {a.path for a in client().list_artifacts(first.run_id, "validation")}

    person = Responder("retrain", {"decision": "reject", "comment": "not now", "approver": "erin"}, wait_seconds=600)
    person.start()
    second = retrain(config=config)
    person.join(timeout=30)
    assert person.error is None and "vs champion version 1" in person.description
    assert (second.version, second.alias) == ("2", CHALLENGER)
    assert str(registry.version_by_alias("signed", CHAMPION).version) == "1"
    assert client().get_model_version("signed", "2").tags["signoff.decision"] == "rejected"
