"""Shared fixtures: isolated state per test, tiny real data, a tiny random BERT."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports Prefect or MLflow: keep the session's state out of the checkout.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="tuneline-tests-"))
os.environ["TUNELINE_HOME"] = str(_SESSION_HOME)
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
os.environ["HF_HUB_OFFLINE"] = "1"  # a test that reaches for the Hub fails instead of downloading

import pandas as pd
import pytest

from tuneline.data.splitting import SplitResult, label_names, split_dataset
from tuneline.data.loading import load_dataset
from tuneline.training.modeling import resolve_model_source


# The longest files first (seconds of one worker, measured on 2 cores): `--dist loadfile` hands files to the workers
# in collection order, so a long file collected last would run alone while the other worker idles.
LONGEST_FIRST = ("tests/flows/test_retrain.py", "tests/infra/test_prefect_ui.py", "tests/infra/test_services.py",
                 "tests/reliability/test_bad_inputs.py", "tests/flows/test_tune.py", "tests/flows/test_signoff.py",
                 "tests/flows/test_export_flow.py", "tests/reliability/test_state_folder.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (ephemeral, SQLite) for every test that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def state(tmp_path, monkeypatch) -> Iterator[Path]:
    """A fresh state folder and MLflow SQLite store for one test."""
    monkeypatch.setenv("TUNELINE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    (tmp_path / "state").mkdir()
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    # Cached data stages persist their results here: one test's cache is not another's.
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "state" / "prefect-results"}):
        yield tmp_path / "state"


def make_reviews(n_per_label: int = 30) -> pd.DataFrame:
    """Easily separable two-label text, distinct rows."""
    good = ["great", "lovely", "excellent", "superb", "wonderful"]
    bad = ["awful", "broken", "terrible", "useless", "horrible"]
    rows = []
    for i in range(n_per_label):
        rows.append({"text": f"item {i} is {good[i % 5]} and I am happy", "label": "positive"})
        rows.append({"text": f"item {i} is {bad[i % 5]} and I am upset", "label": "negative"})
    return pd.DataFrame(rows)


@pytest.fixture
def reviews_csv(tmp_path) -> Path:
    path = tmp_path / "reviews.csv"
    make_reviews().to_csv(path, index=False)
    return path


@pytest.fixture
def reviews_splits(reviews_csv) -> SplitResult:
    ingested = load_dataset(str(reviews_csv), "text", "label")
    return split_dataset(ingested.frame, label_names(ingested.frame, None), 0.7, 0.15, 0.15, seed=0)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and MiniLM's real tokenizer, saved like a Hub checkpoint."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm-l6"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
    )
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """`tiny_model("t5" | "gpt2" | "llama")`: a 2-layer model of that architecture with random weights and
    MiniLM's real tokenizer, saved like a Hub checkpoint (no download: only MiniLM's weights exist offline)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm-l6"))
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.sep_token_id,
           "bos_token_id": tokenizer.cls_token_id}
    builders = {
        "t5": lambda: T5ForConditionalGeneration(T5Config(
            vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            decoder_start_token_id=tokenizer.pad_token_id, **ids)),
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(
            vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=256, **ids)),
        "llama": lambda: LlamaForCausalLM(LlamaConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **ids)),
    }
    built: dict[str, Path] = {}

    def make(architecture: str) -> Path:
        if architecture not in built:
            import torch

            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp(f"tiny-{architecture}")
            builders[architecture]().save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            built[architecture] = folder
        return built[architecture]

    return make


def make_pairs(n: int = 40) -> pd.DataFrame:
    """Source/target text pairs for seq2seq and causal_lm tests: `label` holds the target."""
    words = ["red", "blue", "green", "small", "large", "old", "new", "fast"]
    return pd.DataFrame([{"text": f"describe item {i} that is {words[i % 8]} and {words[(i + 3) % 8]}",
                          "label": f"{words[i % 8]} {words[(i + 3) % 8]} item"} for i in range(n)])


@pytest.fixture
def pair_splits() -> SplitResult:
    frame = make_pairs()
    return SplitResult(train=frame[:28].reset_index(drop=True), validation=frame[28:34].reset_index(drop=True),
                       test=frame[34:].reset_index(drop=True), labels=())


@pytest.fixture
def scored_splits() -> SplitResult:
    """Regression: a score per text (the count of 'good' words, noisy)."""
    rows = [{"text": " ".join(["good"] * (i % 5) + ["fine"] * (4 - i % 5) + [f"row {i}"]), "label": str(i % 5 + 0.1 * (i % 3))}
            for i in range(40)]
    frame = pd.DataFrame(rows)
    return SplitResult(train=frame[:28].reset_index(drop=True), validation=frame[28:34].reset_index(drop=True),
                       test=frame[34:].reset_index(drop=True), labels=())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_mlflow_server(folder: Path, port: int | None = None):
    """A real `mlflow server` on a free loopback port, or `port` (SQLite, proxied artifacts under `folder`); yields
    its URI. Started again with the same folder and port, it is the same server after a restart."""
    import subprocess
    import sys
    import time

    import httpx

    port = port or free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "mlflow server exited during start-up"
            time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not become healthy in 60 s")
        yield uri
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
