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
    assert len(flat) == sum(len(section) for section in RetrainConfig().model_dump().values())
