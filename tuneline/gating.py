"""Run the quality gate against the registry: candidate vs champion on the candidate's test split."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from tuneline import registry
from tuneline.config import GenerationConfig, PromotionConfig
from tuneline.data import content_hash, regression_targets
from tuneline.errors import GateError
from tuneline.evaluation import classification_report, generation_report, regression_report
from tuneline.promotion import Decision, ModelMetrics, decide, needs_signoff

log = logging.getLogger(__name__)

TEST_SPLIT_ARTIFACT = "data/test.csv"


SIGNOFF_OUTCOMES = ("approved", "rejected", "timed_out")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    alias: str  # what the candidate holds now: champion or challenger
    champion_version: str | None  # the champion it was compared with
    champion_metrics: ModelMetrics | None
    awaiting_signoff: bool = False  # passed the gate; holds challenger until a person approves (promotion.signoff)
    signoff: str | None = None  # approved, rejected, timed_out or stale once a person was asked


def metrics_from_tags(tags: dict[str, str]) -> ModelMetrics | None:
    """The test metrics a version was registered with (`test.<metric>` tags); None for versions without them."""
    try:
        values = {key.removeprefix("test."): float(value) for key, value in tags.items() if key.startswith("test.")}
    except ValueError:
        return None
    return ModelMetrics(values, tags.get("data.hash.test")) if values else None


def score_version(task: str, model_dir: Path, test: pd.DataFrame, max_length: int, batch_size: int,
                  generation: GenerationConfig | None = None) -> dict[str, float]:
    """Test metrics of a saved model on `test`, as the gate compares them (PyTorch, no grad)."""
    from tuneline.training import predict_proba

    texts = list(test["text"])
    if task == "classification":
        id2label = json.loads((model_dir / "config.json").read_text()).get("id2label") or {}
        labels = tuple(id2label[str(i)] for i in range(len(id2label)))
        unknown = sorted(set(test["label"]) - set(labels))
        if unknown:
            raise GateError(f"the model cannot score labels {unknown}: its labels are {list(labels)}")
        report = classification_report(list(test["label"]), predict_proba(model_dir, texts, max_length, batch_size), labels)
        return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}
    if task == "regression":
        report = regression_report(regression_targets(test),
                                   predict_proba(model_dir, texts, max_length, batch_size, task="regression"))
        return {"mse": report.mse, "mae": report.mae, "r2": report.r2}
    from tuneline.generation import generate, lowercases

    outputs = generate(model_dir, task, texts, generation or GenerationConfig(), max_length, batch_size)
    report = generation_report(list(test["label"]), outputs, lowercases(model_dir))  # scored as evaluate scores it
    return {"bleu": report.bleu, "rouge1": report.rouge1, "rouge2": report.rouge2, "rougeL": report.rouge_l}


def generation_settings(params: dict[str, str]) -> GenerationConfig:
    """The decoding settings a run was logged with (`generation.*` params; defaults for runs without them)."""
    return GenerationConfig(**{key.removeprefix("generation."): yaml.safe_load(value)
                               for key, value in params.items() if key.startswith("generation.")})


def champion_on(model_name: str, task: str, test: pd.DataFrame, max_length: int, batch_size: int,
                candidate_version: str, generation: GenerationConfig | None = None) -> tuple[str, ModelMetrics] | None:
    """The champion's metrics on this test split: recorded ones if it was scored on the same rows, else re-evaluated.

    None when there is no champion (or the candidate already is it).
    """
    champion = registry.version_by_alias(model_name, registry.CHAMPION)
    if champion is None or str(champion.version) == str(candidate_version):
        return None
    version, test_hash = str(champion.version), content_hash(test)
    champion_task = champion.tags.get("task", "classification")  # versions from before task types are classifiers
    if champion_task != task:
        raise GateError(f"champion version {version} is a {champion_task} model; the candidate is {task}")
    recorded = metrics_from_tags(champion.tags)
    if recorded is not None and recorded.test_hash == test_hash:
        return version, recorded
    log.info("champion version %s was tested on other rows; re-evaluating it on %d candidate test rows", version, len(test))
    files = registry.download_version(model_name, version)
    try:
        values = score_version(task, files / "hf_model", test, max_length, batch_size, generation)
    except GateError as exc:
        raise GateError(f"champion version {version}: {exc}") from None
    return version, ModelMetrics(values, test_hash)


def run_gate(model_name: str, version: str, candidate: ModelMetrics, test: pd.DataFrame, policy: PromotionConfig,
             max_length: int, batch_size: int, task: str = "classification",
             generation: GenerationConfig | None = None) -> GateResult:
    """Decide, then move the alias: `champion` on promote, `challenger` on hold. The reasons go on the version."""
    try:
        found = champion_on(model_name, task, test, max_length, batch_size, version, generation)
    except GateError as exc:
        decision, found = Decision(promote=False, reasons=(f"cannot compare with the champion: {exc}",)), None
    else:
        decision = decide(candidate, found[1] if found else None, policy)
    pending = needs_signoff(decision, policy.signoff)
    alias = registry.CHAMPION if decision.promote and not pending else registry.CHALLENGER
    reason = ("gate passed, awaiting sign-off: " if pending else "gate: ") + "; ".join(decision.reasons)
    registry.move_alias(model_name, alias, version, reason=reason)
    if pending:
        registry.set_version_tags(model_name, version, {"signoff.status": "pending", "signoff.requested": _now(),
                                                        "signoff.policy": policy.signoff.policy})
    return GateResult(decision, alias, found[0] if found else None, found[1] if found else None, awaiting_signoff=pending)


def apply_signoff(model_name: str, version: str, gate: GateResult, outcome: str, approver: str,
                  comment: str) -> GateResult:
    """Act on a person's sign-off of a candidate that passed the gate, and record it on the version.

    `approved` moves `champion` to the version, unless the champion changed while the
    decision was pending (then the comparison is stale: it stays challenger, recorded as
    `stale`). `rejected` and `timed_out` leave the champion where it is. The version gets
    `signoff.decision`, `.by`, `.comment`, `.at` and `.champion` (the version it was compared with).
    """
    if outcome not in SIGNOFF_OUTCOMES:
        raise GateError(f"unknown sign-off outcome {outcome!r}; expected one of {SIGNOFF_OUTCOMES}")
    current = registry.version_by_alias(model_name, registry.CHAMPION)
    current_version = str(current.version) if current is not None else None
    recorded, alias = outcome, registry.CHALLENGER
    said = f"{approver}" + (f": {comment}" if comment else "")
    if outcome == "approved" and current_version != gate.champion_version:
        recorded = "stale"
        line = (f"sign-off by {said} not applied: champion moved from {gate.champion_version or 'none'} to "
                f"{current_version or 'none'} while it was pending; run the gate again (tuneline promote)")
    elif outcome == "approved":
        alias = registry.CHAMPION
        line = f"signed off by {said}"
        registry.move_alias(model_name, registry.CHAMPION, version,
                            reason=f"gate: {'; '.join(gate.decision.reasons)}; {line}")
    elif outcome == "rejected":
        line = f"sign-off rejected by {said}"
    else:
        line = f"no sign-off in time ({comment}); treated as a rejection"
    registry.set_version_tags(model_name, version, {
        "signoff.status": "done", "signoff.decision": recorded, "signoff.by": approver, "signoff.comment": comment,
        "signoff.at": _now(), "signoff.champion": gate.champion_version or "",
    })
    decision = Decision(promote=alias == registry.CHAMPION, reasons=(line, *gate.decision.reasons),
                        margin=gate.decision.margin)
    return GateResult(decision, alias, gate.champion_version, gate.champion_metrics, awaiting_signoff=False,
                      signoff=recorded)


def promote(model_name: str, version: str, policy: PromotionConfig, reason: str, force: bool = False) -> GateResult:
    """Promote a registered version by hand, through the same gate; `force` overrides a hold, on the record.

    The champion is compared on the candidate's own test split (logged with its run).
    """
    mlflow_client = registry.client()
    target = mlflow_client.get_model_version(model_name, str(version))
    candidate = metrics_from_tags(target.tags)
    if candidate is None:
        raise GateError(f"{model_name} version {version} carries no test metrics; it was not registered by tuneline")
    run = mlflow_client.get_run(target.run_id)
    max_length = int(run.data.params.get("train.max_length", 128))
    batch_size = int(run.data.params.get("train.eval_batch_size", 64))
    task = target.tags.get("task", "classification")
    generation = generation_settings(run.data.params)
    test = pd.read_csv(mlflow_client.download_artifacts(target.run_id, TEST_SPLIT_ARTIFACT), dtype=str, keep_default_na=False)
    found = champion_on(model_name, task, test, max_length, batch_size, str(version), generation)
    decision = decide(candidate, found[1] if found else None, policy)
    if not decision.promote and not force:
        raise GateError(
            f"{model_name} version {version} did not pass the gate:\n  - " + "\n  - ".join(decision.reasons)
            + "\nUse --force to promote anyway (recorded on the version)."
        )
    note = reason + ("" if decision.promote else " (forced past the gate: " + "; ".join(decision.reasons) + ")")
    registry.move_alias(model_name, registry.CHAMPION, str(version), reason=note)
    return GateResult(decision, registry.CHAMPION, found[0] if found else None, found[1] if found else None)
