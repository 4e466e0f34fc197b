import pytest

from tuneline.config import RetrainConfig, load_config, parse_overrides
from tuneline.errors import ConfigError


def test_defaults_are_the_embedded_default():
    config = RetrainConfig()
    assert config.train.base_model == "builtin:minilm-l6"
    assert config.data.path == "builtin:sample-reviews"
    assert config.split.train_fraction == 0.8


def test_overrides_keep_their_types():
    config = load_config(overrides=["train.epochs=2", "data.labels=[neg, pos]", "split.stratify=false", "data.path=r.csv"])
    assert config.train.epochs == 2.0
    assert config.data.labels == ["neg", "pos"]
    assert config.split.stratify is False
    assert config.data.path == "r.csv"


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  learning_rate: 1.0e-4\nregistry:\n  model_name: reviews\n")
    config = load_config(path, ["train.epochs=1"])
    assert (config.train.epochs, config.train.learning_rate, config.registry.model_name) == (1.0, 1e-4, "reviews")


def test_round_trip_through_yaml(tmp_path):
    config = load_config(overrides=["train.max_steps=7", "data.labels=[a, b, c]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epoch=1", "train.epoch"),  # typo: unknown key
        ("train.learning_rate=-1", "train.learning_rate"),
        ("split.train_fraction=0.9", "sum to 1"),
        ("data.labels=[a, a]", "distinct"),
        ("train.device=tpu", "train.device"),
    ],
)
def test_invalid_values_name_the_field(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(overrides=[override])


def test_malformed_override_is_refused():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["train.epochs"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_flat_params_cover_every_field():
    flat = RetrainConfig().flat()
    assert flat["train.base_model"] == "builtin:minilm-l6"
    assert flat["task"] == "classification" and flat["train.lora.r"] == 8  # nested settings flatten too

    def leaves(value):
        return sum(leaves(v) for v in value.values()) if isinstance(value, dict) else 1

    assert len(flat) == leaves(RetrainConfig().model_dump())


@pytest.mark.parametrize("overrides, message", [
    (["train.method=qlora", "train.device=cpu"], "qlora needs CUDA"),
    (["train.precision=fp16", "train.device=cpu"], "precision fp16 needs CUDA"),
    (["train.method=prompt_tuning", "train.modules_to_save=[]"], "head would never be trained"),
    (["task=regression", "train.best_metric=accuracy"], "not reported for task regression"),
    (["task=seq2seq", "promotion.primary_metric=accuracy"], "not measured for task seq2seq"),
    (["task=seq2seq", "train.method=prefix_tuning"], "cannot adapt a BERT-to-BERT"),
    (["generation.do_sample=true", "generation.num_beams=4"], "not both"),
])
def test_contradictory_configs_fail_at_load_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_the_gate_and_suite_follow_the_task_unless_set():
    seq2seq = load_config(overrides=["task=seq2seq"])
    assert (seq2seq.promotion.primary_metric, seq2seq.promotion.guarded_metrics) == ("rougeL", ["bleu"])
    assert seq2seq.promotion.max_guarded_drop == 1.0 and seq2seq.data.expectation_suite == "text_generation"
    chosen = load_config(overrides=["task=seq2seq", "promotion.primary_metric=bleu", "promotion.guarded_metrics=[]"])
    assert chosen.promotion.primary_metric == "bleu" and chosen.promotion.guarded_metrics == []



def test_a_resolved_generation_config_round_trips(tmp_path):
    config = load_config(overrides=["task=causal_lm", "train.method=lora", "train.lora.target_modules=all-linear"])
    (tmp_path / "resolved.yaml").write_text(config.to_yaml())
    assert load_config(tmp_path / "resolved.yaml") == config  # what a run logs is what a re-run loads


def test_export_settings_that_do_not_fit_the_task_fail_at_load():
    with pytest.raises(ConfigError, match="export.quantization static covers classification and regression"):
        load_config(overrides=["task=seq2seq", "data.label_column=target", "export.quantization=static"])
    with pytest.raises(ConfigError, match="data.labels lists classes; task regression has none"):
        load_config(overrides=["task=regression", "data.labels=[a, b]"])
    assert load_config(overrides=["task=regression", "export.quantization=static"]).export.calibration_rows == 128
