"""Shared fixtures: isolated state per test, tiny real data, a tiny random BERT."""

from __future__ import annotations

import os
import tempfile
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

from tuneline.data import SplitResult, label_names, load_dataset, split_dataset
from tuneline.training import resolve_model_source


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (ephemeral, SQLite) for every test that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A fresh state folder and MLflow SQLite store for one test."""
    monkeypatch.setenv("TUNELINE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    (tmp_path / "state").mkdir()
    return tmp_path / "state"


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
