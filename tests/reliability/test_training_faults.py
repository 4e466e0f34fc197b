"""Training faults in the real retrain flow (tiny BERT, CPU): the process killed mid-epoch, a connection lost
mid-training, a stage after training failing. Each time the next attempt continues the training instead of
starting over, ends with the model an uninterrupted run trains, and registers one version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tuneline.config import load_config
from tuneline.errors import RegistrationError, is_transient

from tests.conftest import make_reviews

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MODEL = "faults"
STEPS, SAVE_EVERY = 40, 10  # 192 training rows / batch 8 = 24 steps an epoch: a kill after step 10 is mid-epoch
# Final metrics of the resumed run that must equal the uninterrupted run's. The Trainer restores the model, the
# optimizer, the schedule, the RNG states and the data order from the checkpoint, so on one CPU the resumed steps are
# the same arithmetic as the uninterrupted ones: measured equal to the last digit. 1e-6 leaves room for float
# reductions that a different thread schedule may order differently, and is far below any real difference (a
# restart from step 0, or one step more, moves the validation loss by 1e-2 and more here).
COMPARED = ("final_validation_loss", "final_validation_accuracy", "mean_train_loss", "test_accuracy", "test_macro_f1",
            "train_steps")
TOLERANCE = 1e-6


@pytest.fixture
def reviews(tmp_path) -> Path:
    """240 short reviews tiny BERT learns within 40 steps: equal metrics of two runs then mean equal learning,
    not two models stuck at chance."""
    path = tmp_path / "reviews.csv"
    make_reviews(120).to_csv(path, index=False)
    return path


def _settings(data: Path, tiny_bert: Path) -> dict:
    return {
        "data": {"path": str(data), "labels": ["negative", "positive"]},
        "train": {"base_model": str(tiny_bert), "max_steps": STEPS, "save_steps": SAVE_EVERY, "logging_steps": 5,
                  "batch_size": 8, "max_length": 48, "learning_rate": 5e-3, "device": "cpu"},
        # 40 steps leave tiny BERT near chance, where INT8 may flip a row: the accuracy check has its own tests.
        "export": {"parity_rows": 16, "max_accuracy_drop": 1.0},
        "registry": {"model_name": MODEL},
    }


def _environment(home: Path) -> dict[str, str]:
    """A state folder of its own: Prefect (ephemeral), MLflow (SQLite), checkpoints and cached data stages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_LOCAL_STORAGE_PATH")}
    return env | {"TUNELINE_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
                  "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "PYTHONUNBUFFERED": "1",
                  "HF_HUB_OFFLINE": "1"}


def _retrain(config: Path, home: Path, log: Path) -> subprocess.Popen:
    """`python -m tuneline retrain --config ...` in a process group of its own (the flow, Prefect's ephemeral server)."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "tuneline", "retrain", "--config", str(config)], cwd=ROOT,
                            env=_environment(home), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _finish(process: subprocess.Popen, log: Path) -> None:
    try:
        process.wait(timeout=600)
    finally:
        _kill_group(process)
    assert process.returncode == 0, log.read_text()[-4000:]


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone already
    process.wait(timeout=60)


def _wait_for_checkpoint(home: Path, process: subprocess.Popen, log: Path) -> Path:
    """The first complete checkpoint the training writes (its trainer_state.json is the last file a save writes)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        saved = sorted((home / "checkpoints").glob("*/checkpoint-*/trainer_state.json"))
        if saved:
            return saved[0].parent
        assert process.poll() is None, "the run ended before its first checkpoint:\n" + log.read_text()[-4000:]
        time.sleep(0.05)
    pytest.fail("no checkpoint within 600 s")


def _runs(home: Path) -> tuple[MlflowClient, list]:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # else the registry is MLflow's global default store
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(experiments, order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_a_retrain_killed_mid_epoch_resumes_on_the_next_run_and_trains_the_same_model(tmp_path, reviews, tiny_bert):
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump(_settings(reviews, tiny_bert)))
    home, reference_home = tmp_path / "state", tmp_path / "reference"

    killed = _retrain(config, home, tmp_path / "killed.log")
    reference = _retrain(config, reference_home, tmp_path / "reference.log")  # uninterrupted, alongside
    try:
        checkpoint = _wait_for_checkpoint(home, killed, tmp_path / "killed.log")
    finally:
        _kill_group(killed)  # kill -9 of the flow process and its children: no handler, no cleanup runs
    assert killed.returncode == -signal.SIGKILL
    folder = checkpoint.parent
    killed_run = yaml.safe_load((folder / "owner.json").read_text())["run_id"]

    rerun = _retrain(config, home, tmp_path / "rerun.log")
    _finish(rerun, tmp_path / "rerun.log")
    _finish(reference, tmp_path / "reference.log")

    client, runs = _runs(home)
    assert [r.info.run_id for r in runs][0] == killed_run and len(runs) == 2
    old, new = runs
    # The re-run continued the killed run's checkpoints, mid-epoch, and said so.
    step = int(new.data.tags["resumed_from_step"])
    assert 0 < step < STEPS and step % SAVE_EVERY == 0
    assert new.data.tags["resumed_from_run"] == killed_run
    assert f"resumed from step {step}" in (tmp_path / "rerun.log").read_text()
    # The killed run no longer claims to be running.
    assert old.info.status == "KILLED" and old.data.tags["superseded_by"] == new.info.run_id
    assert new.info.status == "FINISHED"
    # One version, from the run that finished; the checkpoints went once it succeeded.
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", new.info.run_id)]
    assert not folder.exists()
    # The same model as a run that was never interrupted.
    _, [uninterrupted] = _runs(reference_home)
    for name in COMPARED:
        assert new.data.metrics[name] == pytest.approx(uninterrupted.data.metrics[name], abs=TOLERANCE), name


def test_a_lost_connection_mid_training_is_retried_from_the_checkpoint(prefect_harness, state, reviews, tiny_bert,
                                                                       monkeypatch):
    """A transient fault inside the fine-tune task (the tracking server dropping the connection while the loss is
    streamed to it): Prefect retries the task, which resumes from the checkpoint instead of starting over."""
    from tuneline.flows.retrain import retrain
    from tuneline.registry import store as registry

    stream = registry.log_metrics
    faults: list[int] = []

    def drops_once_at_step_7(run_id, metrics, step=None):
        if step == 7 and "train_loss" in metrics and not faults:
            faults.append(step)
            raise ConnectionError("connection reset by the tracking server (injected by the test)")
        return stream(run_id, metrics, step)

    monkeypatch.setattr(registry, "log_metrics", drops_once_at_step_7)
    assert is_transient(ConnectionError())  # what makes the task's retry condition retry it
    settings = _settings(reviews, tiny_bert)
    settings["train"] |= {"max_steps": 12, "save_steps": 5, "logging_steps": 1}
    summary = retrain(config=load_config(overrides=_overrides(settings)))

    assert faults == [7] and summary.version == "1"
    client, [run] = _runs(state)
    assert run.data.tags["resumed_from_step"] == "5" and run.data.tags["resumed_from_run"] == ""  # its own checkpoint
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == sorted([1, 2, 3, 4, 5, 6] + list(range(6, 13)))  # the retry trained 6-12, not 1-12
    assert run.data.metrics["train_steps"] == 12
    assert not list((state / "checkpoints").iterdir())  # deleted once the run succeeded


def test_a_failure_after_training_keeps_the_trained_model_for_the_re_run(prefect_harness, state, reviews, tiny_bert,
                                                                         monkeypatch):
    """Registration fails for good after training (not retryable): the run fails but its training stays; the re-run
    takes the finished model instead of training again and registers exactly one version."""
    from tuneline.flows.retrain import retrain
    from tuneline.registry import store as registry

    register = registry.register_model
    monkeypatch.setattr(registry, "register_model", _refuses)
    settings = _settings(reviews, tiny_bert)
    settings["train"] |= {"max_steps": 8, "save_steps": 4}
    config = load_config(overrides=_overrides(settings))
    with pytest.raises(RegistrationError, match="injected"):
        retrain(config=config)
    [finished] = (state / "checkpoints").glob("*/finished")
    assert (finished / "hf_model" / "model.safetensors").is_file()

    monkeypatch.setattr(registry, "register_model", register)
    summary = retrain(config=config)

    client, [failed, rerun] = _runs(state)
    assert failed.info.status == "FAILED"  # it ended on its own: nothing to mark KILLED
    assert rerun.data.tags["resumed_from_step"] == "8" and rerun.data.tags["resumed_from_run"] == failed.info.run_id
    for name in ("final_validation_loss", "mean_train_loss", "train_steps"):
        assert rerun.data.metrics[name] == failed.data.metrics[name], name  # the very same training
    assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")] == [summary.version] == ["1"]
    assert not finished.parent.exists()


def _refuses(*args, **kwargs):
    raise RegistrationError("the registry refused the version (injected by the test)")


def _overrides(settings: dict) -> list[str]:
    return [f"{section}.{key}={value}" for section, values in settings.items() for key, value in values.items()]
