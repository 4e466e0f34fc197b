import pytest

from tuneline.config import PromotionConfig
from tuneline.promotion import ModelMetrics, decide

POLICY = PromotionConfig()
CHAMPION = ModelMetrics({"accuracy": 0.90, "macro_f1": 0.90}, test_hash="t1")


def scored(accuracy: float, macro_f1: float, test_hash: str | None = "t1") -> ModelMetrics:
    return ModelMetrics({"accuracy": accuracy, "macro_f1": macro_f1}, test_hash)


def test_first_version_is_promoted():
    decision = decide(scored(0.7, 0.7, None), None, POLICY)
    assert decision.promote and "no version holds champion yet" in decision.reasons


def test_a_better_model_is_promoted():
    decision = decide(scored(0.92, 0.91, "t1"), CHAMPION, POLICY)
    assert decision.promote and decision.verdict == "promote"


def test_a_worse_model_is_refused_with_the_reason_first():
    decision = decide(scored(0.89, 0.90, "t1"), CHAMPION, POLICY)
    assert not decision.promote
    assert decision.reasons[0].startswith("accuracy 0.8900 vs champion 0.9000: change -0.0100")


def test_required_improvement_is_enforced():
    policy = PromotionConfig(min_improvement=0.02)
    assert not decide(scored(0.91, 0.91, "t1"), CHAMPION, policy).promote
    assert decide(scored(0.92, 0.92, "t1"), CHAMPION, policy).promote


def test_a_guarded_metric_may_not_collapse():
    decision = decide(scored(0.93, 0.85, "t1"), CHAMPION, POLICY)
    assert not decision.promote
    assert any(r.startswith("macro_f1 0.8500 vs champion 0.9000: drop +0.0500") for r in decision.reasons)


def test_errors_must_go_down_to_promote():
    policy = PromotionConfig(primary_metric="mse", guarded_metrics=["mae"], max_guarded_drop=0.05)
    champion = ModelMetrics({"mse": 0.50, "mae": 0.40}, "t1")
    better = decide(ModelMetrics({"mse": 0.45, "mae": 0.42}, "t1"), champion, policy)
    assert better.promote
    assert better.reasons[0].startswith("mse 0.4500 vs champion 0.5000: improvement +0.0500")
    worse = decide(ModelMetrics({"mse": 0.55, "mae": 0.30}, "t1"), champion, policy)
    assert not worse.promote and worse.reasons[0].startswith("mse 0.5500 vs champion 0.5000: improvement -0.0500")
    # a guarded error that grew beyond the allowance holds the candidate even when the primary improved
    guarded = decide(ModelMetrics({"mse": 0.40, "mae": 0.50}, "t1"), champion, policy)
    assert not guarded.promote and "mae 0.5000 vs champion 0.4000: worse by +0.1000" in guarded.reasons[0]


def test_generation_metrics_gate_on_their_own_scale():
    policy = PromotionConfig(primary_metric="rougeL", guarded_metrics=["bleu"], max_guarded_drop=1.0)
    champion = ModelMetrics({"rougeL": 0.60, "bleu": 30.0}, "t1")
    assert decide(ModelMetrics({"rougeL": 0.61, "bleu": 29.5}, "t1"), champion, policy).promote
    assert not decide(ModelMetrics({"rougeL": 0.61, "bleu": 28.0}, "t1"), champion, policy).promote


def test_a_metric_the_version_lacks_is_named():
    with pytest.raises(KeyError, match="no test metric 'accuracy' recorded"):
        ModelMetrics({"mse": 0.1}).get("accuracy")


def test_metrics_from_different_test_splits_are_not_compared():
    with pytest.raises(ValueError, match="different test splits"):
        decide(scored(0.95, 0.95, "t2"), CHAMPION, POLICY)
