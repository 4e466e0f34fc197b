import pytest

from tuneline.config import PromotionConfig
from tuneline.promotion import ModelMetrics, decide

POLICY = PromotionConfig()
CHAMPION = ModelMetrics(accuracy=0.90, macro_f1=0.90, int8_accuracy=0.90, test_hash="t1")


def test_first_version_is_promoted():
    decision = decide(ModelMetrics(0.7, 0.7, 0.7), None, POLICY)
    assert decision.promote and "no version holds champion yet" in decision.reasons


def test_a_better_model_is_promoted():
    decision = decide(ModelMetrics(0.92, 0.91, 0.92, "t1"), CHAMPION, POLICY)
    assert decision.promote and decision.verdict == "promote"


def test_a_worse_model_is_refused_with_the_reason_first():
    decision = decide(ModelMetrics(0.89, 0.90, 0.89, "t1"), CHAMPION, POLICY)
    assert not decision.promote
    assert decision.reasons[0].startswith("accuracy 0.8900 vs champion 0.9000: change -0.0100")


def test_required_improvement_is_enforced():
    policy = PromotionConfig(min_improvement=0.02)
    assert not decide(ModelMetrics(0.91, 0.91, 0.91, "t1"), CHAMPION, policy).promote
    assert decide(ModelMetrics(0.92, 0.92, 0.92, "t1"), CHAMPION, policy).promote


def test_a_guarded_metric_may_not_collapse():
    decision = decide(ModelMetrics(0.93, 0.85, 0.93, "t1"), CHAMPION, POLICY)
    assert not decision.promote
    assert any(r.startswith("macro_f1 0.8500 vs champion 0.9000: drop +0.0500") for r in decision.reasons)


def test_an_int8_copy_that_lost_too_much_is_refused_even_without_a_champion():
    decision = decide(ModelMetrics(0.95, 0.95, int8_accuracy=0.92), None, POLICY)
    assert not decision.promote
    assert decision.reasons[0].startswith("INT8 accuracy 0.9200 vs PyTorch 0.9500: loss +0.0300")


def test_metrics_from_different_test_splits_are_not_compared():
    with pytest.raises(ValueError, match="different test splits"):
        decide(ModelMetrics(0.95, 0.95, 0.95, "t2"), CHAMPION, POLICY)
