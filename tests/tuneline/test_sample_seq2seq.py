import re

import pandas as pd
import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from tuneline.cli import app
from tuneline.data.loading import BUILTIN_SEQ2SEQ_SAMPLE, CANONICAL_COLUMNS, load_dataset, resolve_data_path
from tuneline.errors import DataLoadError
from tuneline.data.samples import SEQ2SEQ_SAMPLE_PATH, TOPICS, generate_seq2seq, write_seq2seq_sample
from tuneline.training.modeling import resolve_model_source


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    return load_dataset(BUILTIN_SEQ2SEQ_SAMPLE, "text", "target").frame


def test_shipped_seq2seq_sample_is_what_the_generator_writes(tmp_path):
    regenerated = write_seq2seq_sample(tmp_path / "again.csv")
    assert regenerated.read_bytes() == SEQ2SEQ_SAMPLE_PATH.read_bytes()


def test_builtin_seq2seq_sample_loads_with_the_canonical_columns(shipped):
    assert resolve_data_path(BUILTIN_SEQ2SEQ_SAMPLE) == SEQ2SEQ_SAMPLE_PATH
    assert list(shipped.columns) == [*CANONICAL_COLUMNS, "topic"]
    assert len(shipped) == 2000
    assert shipped["label"].map(lambda t: isinstance(t, str) and t.strip() != "").all()
    assert shipped["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all()


def test_unknown_builtin_dataset_names_both_samples():
    with pytest.raises(DataLoadError, match="builtin:sample-reviews.*builtin:sample-seq2seq"):
        resolve_data_path("builtin:sample-translation")


def test_seq2seq_sample_is_varied_and_covers_every_topic(shipped):
    # Near-duplicates (case, punctuation) would leak across splits as surely as exact ones.
    keys = shipped["text"].map(lambda t: re.sub(r"[^a-z0-9]+", " ", t).strip())
    assert keys.nunique() == len(shipped)
    # Many targets repeat (same item, same problem), but not so many that a few answers fit all.
    assert shipped["label"].nunique() > len(shipped) / 2
    assert shipped["topic"].value_counts().to_dict() == {topic: 200 for topic in TOPICS}


def test_seq2seq_lengths_and_summaries_follow_the_format(shipped):
    assert shipped["text"].str.split().str.len().between(10, 40).all()
    assert shipped["label"].str.split().str.len().between(3, 12).all()
    summary = re.compile(r"^[a-z ]+: [a-z ]+(, [a-z ]+)?$")
    assert shipped["label"].map(lambda t: bool(summary.match(t))).all()
    # The summarised item is read from the message, never invented: its words are all there.
    for text, target in zip(shipped["text"], shipped["label"]):
        if "," in target:
            item = target.split(": ", 1)[1].split(",")[0]
            assert set(item.split()) <= set(re.findall(r"[a-z]+", text)), (text, target)


def test_seq2seq_sample_uses_whole_words_of_the_builtin_vocabulary(shipped):
    # The demo warm-starts from uncased MiniLM: a word split into pieces or unknown would make it harder to copy.
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm-l6"))
    for column in ("text", "label", "topic"):
        for value in shipped[column].unique():
            assert value == value.lower() and value.isascii(), value
            tokens = tokenizer.tokenize(value)
            assert not [t for t in tokens if t.startswith("##") or t == tokenizer.unk_token], (value, tokens)


def test_generate_seq2seq_is_deterministic_per_seed():
    first = generate_seq2seq(200, seed=5)
    assert first.equals(generate_seq2seq(200, seed=5))
    assert not first.equals(generate_seq2seq(200, seed=6))
    assert list(first.columns) == ["text", "target", "topic"] and len(first) == 200


@pytest.mark.parametrize("rows", [0, 9, 2.5, True])
def test_generate_seq2seq_refuses_a_bad_row_count(rows):
    with pytest.raises(ValueError, match="n_rows"):
        generate_seq2seq(rows)


def test_sample_command_writes_seq2seq_rows(tmp_path):
    result = CliRunner().invoke(app, ["sample", str(tmp_path / "s.csv"), "--kind", "seq2seq", "--rows", "50"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(tmp_path / "s.csv")
    assert list(written.columns) == ["text", "target", "topic"] and len(written) == 50


def test_sample_command_refuses_an_unknown_kind(tmp_path):
    result = CliRunner().invoke(app, ["sample", str(tmp_path / "s.csv"), "--kind", "poems"])
    assert result.exit_code != 0
    assert not (tmp_path / "s.csv").exists()
