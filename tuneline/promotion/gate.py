"""Run the quality gate against the registry: candidate vs champion on the candidate's test split."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

from tuneline.kinds import kind
from tuneline.registry import store as registry
from tuneline.config import GenerationConfig, PromotionConfig
from tuneline.data.loading import content_hash, regression_targets
from tuneline.errors import GateError
from tuneline.evaluation.metrics import (
    Baselines,
    classification_report,
    generation_report,
    regression_report,
    row_scores,
)
from tuneline.promotion.policy import Decision, ModelMetrics, decide, needs_signoff
from tuneline.data.text import duplicate_key

log = logging.getLogger(__name__)

TEST_SPLIT_ARTIFACT = "data/test.csv"
# What a run trained on (train and validation rows), as `trained_on_keys`: a later candidate's test rows that a
# champion saw in training are left out when the two are compared.
TRAINED_ON_ARTIFACT = "data/trained_on.txt"
# What evaluate records beside the metrics: the per-row scores on the test split (in its row order), which the paired
# test of a later candidate against this version reads, and the trivial baselines scored on the same split (the floor).
ROW_SCORES_ARTIFACT = "evaluation/test_rows.csv"
BASELINES_ARTIFACT = "evaluation/baselines.json"


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
    # The candidate's metrics on the rows it was compared on: its test split, less the rows the champion trained on
    candidate_metrics: ModelMetrics | None = None
    baselines: Baselines | None = None  # scored on the candidate's test split: the floor it was held to


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
    return score_rows(task, model_dir, test, max_length, batch_size, generation).values


def score_rows(task: str, model_dir: Path, test: pd.DataFrame, max_length: int, batch_size: int,
               generation: GenerationConfig | None = None) -> ModelMetrics:
    """A saved model's test metrics on `test` and its per-row scores there (the paired test's input), with the
    hash of `test`."""
    from tuneline.training.engine import predict_proba

    texts = list(test["text"])
    if kind(task).has_classes:
        id2label = json.loads((model_dir / "config.json").read_text()).get("id2label") or {}
        labels = tuple(id2label[str(i)] for i in range(len(id2label)))
        unknown = sorted(set(test["label"]) - set(labels))
        if unknown:
            raise GateError(f"the model cannot score labels {unknown}: its labels are {list(labels)}")
        probabilities = predict_proba(model_dir, texts, max_length, batch_size)
        report = classification_report(list(test["label"]), probabilities, labels)
        return ModelMetrics({"accuracy": report.accuracy, "macro_f1": report.macro_f1}, content_hash(test),
                            row_scores(task, probabilities, list(test["label"]), labels))
    if kind(task).numeric:
        targets = regression_targets(test)
        predictions = predict_proba(model_dir, texts, max_length, batch_size, task="regression")
        report = regression_report(targets, predictions)
        return ModelMetrics({"mse": report.mse, "mae": report.mae, "r2": report.r2}, content_hash(test),
                            row_scores(task, predictions, list(targets)))
    from tuneline.evaluation.generation import generate, lowercases

    outputs = generate(model_dir, task, texts, generation or GenerationConfig(), max_length, batch_size)
    lowercase = lowercases(model_dir)
    report = generation_report(list(test["label"]), outputs, lowercase)  # scored as evaluate scores it
    return ModelMetrics({"bleu": report.bleu, "rouge1": report.rouge1, "rouge2": report.rouge2,
                         "rougeL": report.rouge_l}, content_hash(test),
                        row_scores(task, outputs, list(test["label"]), (), lowercase))


def _run_file(run_id: str, path: str) -> Path | None:
    """A file a run logged, downloaded; None when the run has none there (runs logged before it was recorded)."""
    mlflow_client = registry.client()
    if path not in {item.path for item in mlflow_client.list_artifacts(run_id, path.rsplit("/", 1)[0])}:
        return None
    return Path(mlflow_client.download_artifacts(run_id, path))


def recorded_rows(run_id: str, rows: int | None = None) -> dict[str, tuple[float, ...]] | None:
    """The per-row test scores a run recorded (`ROW_SCORES_ARTIFACT`); None when it recorded none, or (`rows`
    given) scores for another number of rows."""
    path = _run_file(run_id, ROW_SCORES_ARTIFACT)
    if path is None:
        return None
    frame = pd.read_csv(path)
    if rows is not None and len(frame) != rows:
        return None
    return {column: tuple(float(v) for v in frame[column]) for column in frame.columns if column != "row"}


def recorded_baselines(run_id: str) -> Baselines | None:
    """The baselines a run scored on its test split (`BASELINES_ARTIFACT`); None for runs without them."""
    path = _run_file(run_id, BASELINES_ARTIFACT)
    return Baselines.from_dict(json.loads(path.read_text())) if path is not None else None


def generation_settings(params: dict[str, str]) -> GenerationConfig:
    """The decoding settings a run was logged with (`generation.*` params; defaults for runs without them)."""
    return GenerationConfig(**{key.removeprefix("generation."): yaml.safe_load(value)
                               for key, value in params.items() if key.startswith("generation.")})


def text_key(text: object) -> str:
    """Equal for the same text as cleaning and the repeated-rows check define it (`duplicate_key`: equal up to markup,
    case, punctuation and spacing): 16 hex digits of the SHA-256 of that key."""
    return hashlib.sha256(duplicate_key(text).encode()).hexdigest()[:16]


def trained_on_keys(texts) -> list[str]:
    """The distinct `text_key`s of the rows a model trained on, sorted: what `TRAINED_ON_ARTIFACT` holds."""
    return sorted({text_key(text) for text in texts})


def _trained_on(model_name: str, version) -> set[str] | None:
    """The keys of the rows a registered version trained on; None for versions logged before they were recorded."""
    mlflow_client = registry.client()
    folder = TRAINED_ON_ARTIFACT.rsplit("/", 1)[0]
    if TRAINED_ON_ARTIFACT not in {item.path for item in mlflow_client.list_artifacts(version.run_id, folder)}:
        log.warning("%s version %s records no training rows (%s): it is compared on all test rows",
                    model_name, version.version, TRAINED_ON_ARTIFACT)
        return None
    return set(Path(mlflow_client.download_artifacts(version.run_id, TRAINED_ON_ARTIFACT)).read_text().split())


@dataclass(frozen=True)
class Comparison:
    """The champion and the candidate scored on the same rows."""

    champion_version: str
    champion: ModelMetrics
    candidate: ModelMetrics
    note: str | None = None  # why the rows are fewer than the candidate's test split


def compare_with_champion(model_name: str, task: str, test: pd.DataFrame, max_length: int, batch_size: int,
                          candidate_version: str, candidate: ModelMetrics,
                          generation: GenerationConfig | None = None) -> Comparison | None:
    """The champion's and the candidate's metrics on the candidate's test split, less the rows the champion trained
    on: a champion scored on its own training rows would look better than it is. Recorded metrics (and per-row
    scores, for the paired test) when the champion was tested on these very rows, else the champion is scored again,
    and the candidate too when rows were left out. None when there is no champion (or the candidate already is it)."""
    champion = registry.version_by_alias(model_name, registry.CHAMPION)
    if champion is None or str(champion.version) == str(candidate_version):
        return None
    version = str(champion.version)
    champion_task = champion.tags.get("task", "classification")  # versions from before task types are classifiers
    if champion_task != task:
        raise GateError(f"champion version {version} is a {champion_task} model; the candidate is {task}")
    recorded, test_hash = metrics_from_tags(champion.tags), content_hash(test)
    seen, note = None, None
    if recorded is not None and recorded.test_hash == test_hash:  # a split its training never saw
        rows = recorded_rows(champion.run_id, len(test))
        if rows is not None or candidate.per_row is None:
            return Comparison(version, replace(recorded, per_row=rows), candidate)
        log.info("champion version %s recorded no per-row scores: scoring it again for the paired test", version)
    else:
        seen = _trained_on(model_name, champion)
    if seen:
        fresh = test[[text_key(text) not in seen for text in test["text"]]].reset_index(drop=True)
        if len(fresh) < len(test):
            note = (f"compared on {len(fresh)} of {len(test)} test rows: champion version {version} trained on the "
                    f"other {len(test) - len(fresh)}")
            if fresh.empty:
                raise GateError(f"champion version {version} trained on all {len(test)} of the candidate's test rows: "
                                f"there are no rows to compare the two on")
            test, test_hash = fresh, content_hash(fresh)
    log.info("champion version %s was tested on other rows; scoring it on %d of the candidate's test rows", version,
             len(test))
    try:
        champion_metrics = score_rows(task, registry.download_version(model_name, version) / "hf_model", test,
                                      max_length, batch_size, generation)
    except GateError as exc:
        raise GateError(f"champion version {version}: {exc}") from None
    if note:  # the candidate's recorded metrics cover its whole test split: score it on the same rows
        candidate = score_rows(task, registry.download_version(model_name, candidate_version) / "hf_model", test,
                               max_length, batch_size, generation)
    return Comparison(version, champion_metrics, candidate, note)


def _decide(comparison: Comparison | None, candidate: ModelMetrics, policy: PromotionConfig,
            baselines: Baselines | None) -> Decision:
    if comparison is None:
        return decide(candidate, None, policy, baselines)
    # The floor is judged on the candidate's whole test split, where the baselines were scored
    decision = decide(comparison.candidate, comparison.champion, policy, baselines,
                      floor_metrics=candidate if comparison.note else None)
    return replace(decision, reasons=(comparison.note, *decision.reasons)) if comparison.note else decision


def _uncompared(message: str, candidate: ModelMetrics, policy: PromotionConfig, baselines: Baselines | None) -> Decision:
    """A hold because the champion could not be compared with; the floor's checks follow the reason."""
    floor = decide(candidate, None, policy, baselines)
    return Decision(promote=False, table=floor.table, reasons=(
        f"cannot compare with the champion: {message}", *(r for r in floor.reasons if r.startswith("floor:"))))


def run_gate(model_name: str, version: str, candidate: ModelMetrics, test: pd.DataFrame, policy: PromotionConfig,
             max_length: int, batch_size: int, task: str = "classification",
             generation: GenerationConfig | None = None, baselines: Baselines | None = None) -> GateResult:
    """Decide, then move the alias: `champion` on promote, `challenger` on hold. The reasons go on the version.

    `baselines`: scored on the candidate's test split (the floor); None reads those its run recorded.
    """
    if baselines is None:
        baselines = recorded_baselines(registry.client().get_model_version(model_name, str(version)).run_id)
    try:
        found = compare_with_champion(model_name, task, test, max_length, batch_size, version, candidate, generation)
    except GateError as exc:
        decision, found = _uncompared(str(exc), candidate, policy, baselines), None
    else:
        decision = _decide(found, candidate, policy, baselines)
    pending = needs_signoff(decision, policy.signoff)
    alias = registry.CHAMPION if decision.promote and not pending else registry.CHALLENGER
    reason = ("gate passed, awaiting sign-off: " if pending else "gate: ") + "; ".join(decision.reasons)
    registry.move_alias(model_name, alias, version, reason=reason)
    if pending:
        registry.set_version_tags(model_name, version, {"signoff.status": "pending", "signoff.requested": _now(),
                                                        "signoff.policy": policy.signoff.policy})
    return GateResult(decision, alias, found.champion_version if found else None, found.champion if found else None,
                      awaiting_signoff=pending, candidate_metrics=found.candidate if found else None,
                      baselines=baselines)


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
                        margin=gate.decision.margin, table=gate.decision.table)
    return GateResult(decision, alias, gate.champion_version, gate.champion_metrics, awaiting_signoff=False,
                      signoff=recorded, candidate_metrics=gate.candidate_metrics, baselines=gate.baselines)


def promote(model_name: str, version: str, policy: PromotionConfig, reason: str, force: bool = False) -> GateResult:
    """Promote a registered version by hand, through the same gate; `force` overrides a hold, on the record.

    The champion is compared on the candidate's own test split (logged with its run), with the per-row scores
    and baselines its run recorded.
    """
    mlflow_client = registry.client()
    target = mlflow_client.get_model_version(model_name, str(version))
    candidate = metrics_from_tags(target.tags)
    if candidate is None:
        raise GateError(f"{model_name} version {version} carries no test metrics; it was not registered by tuneline")
    candidate = replace(candidate, per_row=recorded_rows(target.run_id))
    baselines = recorded_baselines(target.run_id)
    run = mlflow_client.get_run(target.run_id)
    max_length = int(run.data.params.get("train.max_length", 128))
    batch_size = int(run.data.params.get("train.eval_batch_size", 64))
    task = target.tags.get("task", "classification")
    generation = generation_settings(run.data.params)
    test = pd.read_csv(mlflow_client.download_artifacts(target.run_id, TEST_SPLIT_ARTIFACT), dtype=str, keep_default_na=False)
    found = compare_with_champion(model_name, task, test, max_length, batch_size, str(version), candidate, generation)
    decision = _decide(found, candidate, policy, baselines)
    if not decision.promote and not force:
        raise GateError(
            f"{model_name} version {version} did not pass the gate:\n  - " + "\n  - ".join(decision.reasons)
            + "\nUse --force to promote anyway (recorded on the version)."
        )
    note = reason + ("" if decision.promote else " (forced past the gate: " + "; ".join(decision.reasons) + ")")
    registry.move_alias(model_name, registry.CHAMPION, str(version), reason=note)
    return GateResult(decision, registry.CHAMPION, found.champion_version if found else None,
                      found.champion if found else None, candidate_metrics=found.candidate if found else None,
                      baselines=baselines)
