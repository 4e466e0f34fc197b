import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tuneline.cli import app

runner = CliRunner()


def test_config_prints_the_resolved_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n")
    result = runner.invoke(app, ["config", "--config", str(path), "train.learning_rate=1e-4", "data.path=reviews.csv"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["train"]["epochs"] == 3.0
    assert resolved["train"]["learning_rate"] == 1e-4
    assert resolved["data"]["path"] == "reviews.csv"


def test_bad_override_exits_1_naming_the_field():
    result = runner.invoke(app, ["retrain", "train.epoch=1"])
    assert result.exit_code == 1
    assert "train.epoch" in result.output


def test_retrain_ends_with_a_one_line_error_for_missing_data(tmp_path, state):
    # The real executable: the missing file is named before Prefect starts, in one line, and the log keeps the rest.
    executable = Path(sys.executable).with_name("tuneline")
    result = subprocess.run([str(executable), "retrain", f"data.path={tmp_path / 'absent.csv'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data file") and "absent.csv does not exist" in errors[0], result.stderr[-3000:]
    assert "temporary server" not in result.stderr, "no Prefect server is started for a run that cannot start"


def test_sample_writes_the_generator_output(tmp_path):
    result = runner.invoke(app, ["sample", str(tmp_path / "s.csv"), "--rows", "50"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 51


def test_sample_writes_every_shipped_sample_byte_for_byte(tmp_path):
    from tuneline.data.samples import SAMPLES

    for name, (_, shipped) in SAMPLES.items():
        result = runner.invoke(app, ["sample", str(tmp_path / f"{name}.csv"), "--kind", name])
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"{name}.csv").read_bytes() == shipped.read_bytes(), name
    refused = runner.invoke(app, ["sample", str(tmp_path / "x.csv"), "--kind", "translation"])
    assert refused.exit_code == 1 and "choose one of reviews, seq2seq, causal, multilabel, ratings" in refused.output


def test_rollback_and_models_explain_an_unknown_model(state):
    rolled = runner.invoke(app, ["rollback", "never-registered"])
    assert rolled.exit_code == 1 and "has no champion to roll back" in rolled.output
    listed = runner.invoke(app, ["models", "never-registered"])
    assert listed.exit_code == 1 and "no versions of 'never-registered'" in listed.output


def test_python_dash_m_tuneline_is_the_cli(tmp_path):
    """The README's `python -m tuneline retrain ...`: the same commands, for a shell without the script on PATH."""
    result = subprocess.run([sys.executable, "-m", "tuneline", "config", "train.epochs=2"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["train"]["epochs"] == 2.0
    refused = subprocess.run([sys.executable, "-m", "tuneline", "retrain", "train.epoch=1"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert refused.returncode == 1 and "train.epoch" in refused.stderr


def test_serve_and_predict_flags_are_their_settings_fields():
    """One source for every setting: each field of ServeSettings and PredictSettings is a flag, with its default."""
    import inspect

    from tuneline.cli import predict, serve
    from tuneline.serving.settings import PredictSettings, ServeSettings

    for command, settings in ((serve, ServeSettings), (predict, PredictSettings)):
        options = {name: p for name, p in inspect.signature(command).parameters.items() if p.kind == p.KEYWORD_ONLY}
        assert set(options) == set(settings.model_fields), command.__name__
        for name, field in settings.model_fields.items():
            if not field.is_required():
                assert options[name].default == field.default, (command.__name__, name)
    shown = runner.invoke(app, ["predict", "--help"], terminal_width=200).output
    assert "--chunk-rows" in shown and "Rows read and scored together" in shown and "1024" in shown
