import re

import pytest

from tuneline.config import PromotionConfig
from tuneline.evaluation.metrics import Baseline, Baselines
from tuneline.promotion.policy import ModelMetrics, decide

POLICY = PromotionConfig()
CHAMPION = ModelMetrics({"accuracy": 0.90, "macro_f1": 0.90}, test_hash="t1")
# A balanced two-class test split of 30 rows: always predicting one class scores 0.5
BASELINES = Baselines(
    Baseline("majority class", "always 'negative'", {"accuracy": 0.5, "macro_f1": 0.3333}),
    Baseline("bag-of-words", "TF-IDF + logistic regression", {"accuracy": 0.8, "macro_f1": 0.8}),
    rows=30, test_hash="t1",
)


def scored(accuracy: float, macro_f1: float, test_hash: str | None = "t1", per_row=None) -> ModelMetrics:
    return ModelMetrics({"accuracy": accuracy, "macro_f1": macro_f1}, test_hash, per_row)


def correct(rows: int, right: int) -> tuple[float, ...]:
    return tuple(1.0 if i < right else 0.0 for i in range(rows))


def test_a_first_version_that_beats_the_baselines_is_promoted():
    decision = decide(scored(0.85, 0.85), None, POLICY, BASELINES)
    assert decision.promote and "no version holds champion yet" in decision.reasons
    assert ("floor: accuracy 0.8500 vs majority class baseline 0.5000 (always 'negative', 30 test rows): beats it"
            in decision.reasons)
    assert any(r.startswith("floor: accuracy 0.8500 vs bag-of-words baseline 0.8000") for r in decision.reasons)


@pytest.mark.parametrize("accuracy", [0.5, 0.37])
def test_a_first_version_no_better_than_one_class_is_refused(accuracy):
    # 0.5: a model that predicts one class on a balanced split ties the majority class, which is not beating it;
    # 0.37: the worse-than-chance version 1 that became champion before the gate had a floor.
    decision = decide(scored(accuracy, 0.33), None, POLICY, BASELINES)
    assert not decision.promote and decision.verdict == "hold"
    assert decision.reasons[0] == (f"floor: accuracy {accuracy:.4f} vs majority class baseline 0.5000 (always "
                                   "'negative', 30 test rows): does not beat it")
    assert "does not beat it; set promotion.require_beat_bow=false" in decision.reasons[1]


def test_the_bag_of_words_bar_can_be_lowered_but_the_majority_class_cannot():
    lenient = PromotionConfig(require_beat_bow=False)
    between = decide(scored(0.7, 0.7), None, lenient, BASELINES)
    assert between.promote
    assert any(r.endswith("does not beat it (not required: promotion.require_beat_bow=false)") for r in between.reasons)
    assert not decide(scored(0.7, 0.7), None, POLICY, BASELINES).promote
    assert not decide(scored(0.5, 0.5), None, lenient, BASELINES).promote


def test_the_floor_holds_a_candidate_that_beats_the_champion():
    weak_champion = ModelMetrics({"accuracy": 0.70, "macro_f1": 0.70}, "t1")
    decision = decide(scored(0.75, 0.75), weak_champion, POLICY, BASELINES)
    assert not decision.promote  # better than the champion, but not better than the bag-of-words baseline
    assert decision.reasons[0].startswith("floor: accuracy 0.7500 vs bag-of-words baseline 0.8000")
    assert "accuracy 0.7500 vs champion 0.7000: change +0.0500, required at least +0.0000" in decision.reasons


def test_a_perfect_baseline_need_only_be_matched():
    perfect = Baselines(Baseline("majority class", "always 'a'", {"accuracy": 1.0, "macro_f1": 1.0}), rows=5)
    assert decide(scored(1.0, 1.0, None), None, POLICY, perfect).promote
    assert not decide(scored(0.8, 0.8, None), None, POLICY, perfect).promote


def test_absolute_minimums_apply_to_every_version():
    policy = PromotionConfig(min_metrics={"accuracy": 0.9, "macro_f1": 0.8})
    decision = decide(scored(0.85, 0.85), None, policy, BASELINES)
    assert not decision.promote
    assert decision.reasons[0] == "floor: accuracy 0.8500, promotion.min_metrics requires at least 0.9000"
    assert "floor: macro_f1 0.8500, promotion.min_metrics requires at least 0.8000" in decision.reasons
    assert decide(scored(0.92, 0.91), None, policy, BASELINES).promote
    # for errors the bound is a maximum; a metric the version does not record is named
    errors = PromotionConfig(primary_metric="mse", guarded_metrics=["mae"], min_metrics={"mse": 0.5, "r2": 0.1})
    mean = Baselines(Baseline("train mean", "always 2.5", {"mse": 1.2, "mae": 0.9, "r2": -0.01}), rows=30)
    held = decide(ModelMetrics({"mse": 0.6, "mae": 0.5}), None, errors, mean)
    assert "floor: mse 0.6000, promotion.min_metrics requires at most 0.5000" in held.reasons
    assert any(r.startswith("floor: promotion.min_metrics names r2, which this version does not record")
               for r in held.reasons)


def test_a_regressor_must_beat_predicting_the_train_mean():
    policy = PromotionConfig(primary_metric="mse", guarded_metrics=["mae"], max_guarded_drop=0.05)
    mean = Baselines(Baseline("train mean", "always 2.5, the train split's mean", {"mse": 1.2, "mae": 0.9, "r2": -0.01}),
                     rows=40)
    better = decide(ModelMetrics({"mse": 0.9, "mae": 0.7, "r2": 0.24}), None, policy, mean)
    assert better.promote
    assert "floor: mse 0.9000 vs train mean baseline 1.2000 (always 2.5, the train split's mean, 40 test rows): " \
           "beats it" in better.reasons
    worse = decide(ModelMetrics({"mse": 1.3, "mae": 0.9, "r2": -0.1}), None, policy, mean)
    assert not worse.promote and worse.reasons[0].endswith("does not beat it")


def test_a_generator_must_beat_copying_its_input():
    policy = PromotionConfig(primary_metric="rougeL", guarded_metrics=["bleu"], max_guarded_drop=1.0)
    copy = Baselines(Baseline("copy input", "the input text returned as the output",
                              {"bleu": 12.0, "rouge1": 40.0, "rouge2": 20.0, "rougeL": 38.0}), rows=20)
    assert decide(ModelMetrics({"rougeL": 55.0, "bleu": 30.0}), None, policy, copy).promote
    assert not decide(ModelMetrics({"rougeL": 30.0, "bleu": 30.0}), None, policy, copy).promote


def test_without_baselines_the_floor_cannot_be_shown_and_the_candidate_is_held():
    decision = decide(scored(0.99, 0.99), None, POLICY, None)
    assert not decision.promote and decision.reasons[0].startswith("floor: no baselines were scored")


def test_the_table_shows_baselines_beside_champion_and_candidate():
    decision = decide(scored(0.92, 0.91), CHAMPION, POLICY, BASELINES)
    markdown = decision.to_markdown("reviews version 2", "1")
    assert "| metric | candidate | champion | change | better | majority class baseline | bag-of-words baseline |" \
        in markdown
    assert "| accuracy (primary) | 0.92 | 0.9 | +0.0200 | yes | 0.5 | 0.8 |" in markdown
    assert "| macro_f1 | 0.91 | 0.9 | +0.0100 | yes | 0.3333 | 0.8 |" in markdown
    first = decide(scored(0.37, 0.3), None, POLICY, BASELINES).to_markdown("reviews version 1", None)
    assert "stays challenger" in first and "| accuracy (primary) | 0.37 |  |  |  | 0.5 | 0.8 |" in first


def test_the_floor_is_judged_on_the_whole_test_split_when_the_comparison_covers_fewer_rows():
    on_fewer = scored(0.60, 0.60, "fewer")  # on the rows the champion did not train on
    whole = scored(0.85, 0.85, "t1")
    champion = ModelMetrics({"accuracy": 0.55, "macro_f1": 0.55}, "fewer")
    decision = decide(on_fewer, champion, POLICY, BASELINES, floor_metrics=whole)
    assert decision.promote
    assert any(r.startswith("floor: accuracy 0.8500 vs bag-of-words baseline") for r in decision.reasons)
    assert decision.table[0]["candidate, whole test split"] == 0.85 and decision.table[0]["candidate"] == 0.6


def test_a_better_model_is_promoted():
    decision = decide(scored(0.92, 0.91, "t1"), CHAMPION, POLICY, BASELINES)
    assert decision.promote and decision.verdict == "promote"


def test_a_worse_model_is_refused_with_the_reason_first():
    decision = decide(scored(0.89, 0.90, "t1"), CHAMPION, POLICY, BASELINES)
    assert not decision.promote
    assert decision.reasons[0].startswith("accuracy 0.8900 vs champion 0.9000: change -0.0100")
    assert decision.reasons[0].endswith("(no per-row scores for a paired test: the point bound decides)")


def test_one_row_of_30_worse_than_the_champion_is_chance_not_a_loss():
    champion = scored(27 / 30, 27 / 30, per_row={"correct": correct(30, 27)})
    candidate = scored(26 / 30, 26 / 30, per_row={"correct": correct(30, 26)})  # row 27 flipped to wrong
    decision = decide(candidate, champion, POLICY, BASELINES)
    assert decision.promote
    assert ("accuracy 0.8667 vs champion 0.9000: change -0.0333, required at least +0.0000; McNemar's exact test on 30 "
            "paired rows: 1 right only in the champion, 0 right only in the candidate, p=1: not significant, within "
            "chance on this many rows at promotion.significance 0.05") in decision.reasons
    assert decision.margin == pytest.approx(-1 / 30)  # on the record, and below_margin sign-off would ask
    # at significance 1 the point bound alone decides
    assert not decide(candidate, champion, PromotionConfig(significance=1.0), BASELINES).promote


def test_a_1_5_point_loss_on_10000_rows_is_a_real_loss():
    rows = 10_000
    champion_right = [i < 9_000 for i in range(rows)]
    # 250 rows only the champion gets right, 100 only the candidate: 150 rows, 1.5 points, lost
    candidate_right = [(r and not 8_750 <= i < 9_000) or 9_000 <= i < 9_100 for i, r in enumerate(champion_right)]
    champion = scored(0.90, 0.90, per_row={"correct": tuple(map(float, champion_right))})
    candidate = scored(sum(candidate_right) / rows, 0.885, per_row={"correct": tuple(map(float, candidate_right))})
    assert candidate.get("accuracy") == pytest.approx(0.885)
    decision = decide(candidate, champion, POLICY, BASELINES)
    assert not decision.promote
    reason = decision.reasons[0]
    assert reason.startswith("accuracy 0.8850 vs champion 0.9000: change -0.0150")
    assert "McNemar's exact test on 10000 paired rows: 250 right only in the champion, 100 right only in the candidate" \
        in reason
    p_value = float(re.search(r"p=([0-9.e+-]+)", reason).group(1))
    assert p_value < 1e-10 and reason.endswith(": significant at promotion.significance 0.05")


def test_required_improvement_is_enforced():
    policy = PromotionConfig(min_improvement=0.02)
    assert not decide(scored(0.91, 0.91, "t1"), CHAMPION, policy, BASELINES).promote
    assert decide(scored(0.92, 0.92, "t1"), CHAMPION, policy, BASELINES).promote
    # a required gain is a bar to clear, not a loss to test: equal per-row scores do not pass it
    same = {"correct": correct(30, 27)}
    assert not decide(scored(0.9, 0.9, per_row=same), scored(0.9, 0.9, per_row=same), policy, BASELINES).promote


def test_a_guarded_metric_may_not_collapse():
    decision = decide(scored(0.93, 0.85, "t1"), CHAMPION, POLICY, BASELINES)
    assert not decision.promote
    assert any(r.startswith("macro_f1 0.8500 vs champion 0.9000: drop +0.0500") for r in decision.reasons)


def test_errors_must_go_down_to_promote():
    policy = PromotionConfig(primary_metric="mse", guarded_metrics=["mae"], max_guarded_drop=0.05)
    mean = Baselines(Baseline("train mean", "always 1", {"mse": 2.0, "mae": 1.5, "r2": 0.0}), rows=30, test_hash="t1")
    champion = ModelMetrics({"mse": 0.50, "mae": 0.40}, "t1")
    better = decide(ModelMetrics({"mse": 0.45, "mae": 0.42}, "t1"), champion, policy, mean)
    assert better.promote
    assert better.reasons[0].startswith("mse 0.4500 vs champion 0.5000: improvement +0.0500")
    worse = decide(ModelMetrics({"mse": 0.55, "mae": 0.30}, "t1"), champion, policy, mean)
    assert not worse.promote and worse.reasons[0].startswith("mse 0.5500 vs champion 0.5000: improvement -0.0500")
    # a guarded error that grew beyond the allowance holds the candidate even when the primary improved
    guarded = decide(ModelMetrics({"mse": 0.40, "mae": 0.50}, "t1"), champion, policy, mean)
    assert not guarded.promote and "mae 0.5000 vs champion 0.4000: worse by +0.1000" in guarded.reasons[0]


def test_a_regressors_loss_is_judged_by_wilcoxon_on_per_row_errors():
    policy = PromotionConfig(primary_metric="mse", guarded_metrics=["mae"], max_guarded_drop=0.05)
    mean = Baselines(Baseline("train mean", "always 1", {"mse": 9.0, "mae": 3.0, "r2": 0.0}), rows=200)
    base = [0.1 * (i % 10) for i in range(200)]
    champion = ModelMetrics({"mse": 0.285, "mae": 0.45}, per_row={"squared_error": tuple(e * e for e in base),
                                                                   "absolute_error": tuple(base)})
    # larger errors on every row: a loss the rows agree on
    worse_rows = [e + 0.2 for e in base]
    worse = ModelMetrics({"mse": 0.505, "mae": 0.65}, per_row={"squared_error": tuple(e * e for e in worse_rows),
                                                                "absolute_error": tuple(worse_rows)})
    decision = decide(worse, champion, policy, mean)
    assert not decision.promote
    assert "Wilcoxon signed-rank test on 200 paired rows: the candidate worse on 200, better on 0 (per-row " \
           "squared_error)" in decision.reasons[0]


def test_generation_metrics_gate_on_their_own_scale():
    policy = PromotionConfig(primary_metric="rougeL", guarded_metrics=["bleu"], max_guarded_drop=1.0)
    copy = Baselines(Baseline("copy input", "the input", {"rougeL": 20.0, "bleu": 5.0}), rows=30, test_hash="t1")
    champion = ModelMetrics({"rougeL": 60.0, "bleu": 30.0}, "t1")
    assert decide(ModelMetrics({"rougeL": 61.0, "bleu": 29.5}, "t1"), champion, policy, copy).promote
    assert not decide(ModelMetrics({"rougeL": 61.0, "bleu": 28.0}, "t1"), champion, policy, copy).promote


def test_a_metric_the_version_lacks_is_named():
    with pytest.raises(KeyError, match="no test metric 'accuracy' recorded"):
        ModelMetrics({"mse": 0.1}).get("accuracy")


def test_metrics_from_different_test_splits_are_not_compared():
    with pytest.raises(ValueError, match="different test splits"):
        decide(scored(0.95, 0.95, "t2"), CHAMPION, POLICY, Baselines(BASELINES.trivial, rows=30, test_hash="t2"))
    with pytest.raises(ValueError, match="baselines were scored on another test split"):
        decide(scored(0.95, 0.95, "t2"), None, POLICY, BASELINES)
