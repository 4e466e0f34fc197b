import collections
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tuneline.data.loading import (
    BUILTIN_CAUSAL_SAMPLE, BUILTIN_MULTILABEL_SAMPLE, BUILTIN_RATINGS_SAMPLE, BUILTIN_SAMPLE, BUILTIN_SEQ2SEQ_SAMPLE,
    CANONICAL_COLUMNS, load_dataset, resolve_data_path,
)
from tuneline.data.samples import (
    CAUSAL_SAMPLE_PATH, COLOURS, MULTILABEL_DELIMITER, MULTILABEL_LABELS, MULTILABEL_NEGATIONS, MULTILABEL_SAMPLE_PATH,
    RATINGS_SAMPLE_PATH, TOPICS, generate_causal, generate_multilabel, generate_ratings, write_causal_sample,
    write_multilabel_sample, write_ratings_sample,
)
from tuneline.errors import DataLoadError


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


@pytest.fixture(scope="module")
def causal() -> pd.DataFrame:
    return load_dataset(BUILTIN_CAUSAL_SAMPLE, "prompt", "response").frame


@pytest.fixture(scope="module")
def multilabel() -> pd.DataFrame:
    return load_dataset(BUILTIN_MULTILABEL_SAMPLE, "text", "labels").frame


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return load_dataset(BUILTIN_RATINGS_SAMPLE, "text", "rating", task="regression").frame


@pytest.mark.parametrize("write, shipped", [(write_causal_sample, CAUSAL_SAMPLE_PATH),
                                            (write_multilabel_sample, MULTILABEL_SAMPLE_PATH),
                                            (write_ratings_sample, RATINGS_SAMPLE_PATH)])
def test_shipped_file_is_what_its_writer_writes(tmp_path, write, shipped):
    regenerated = write(tmp_path / "again.csv").read_bytes()
    assert regenerated == shipped.read_bytes()
    assert b"\r" not in regenerated and regenerated.endswith(b"\n")


def test_builtin_causal_sample_loads_with_the_canonical_columns(causal):
    assert resolve_data_path(BUILTIN_CAUSAL_SAMPLE) == CAUSAL_SAMPLE_PATH
    assert list(causal.columns) == [*CANONICAL_COLUMNS, "intent"]
    assert len(causal) == 2000
    for column in ("text", "label"):
        assert causal[column].map(lambda t: isinstance(t, str) and t.strip() != "").all()


def test_builtin_multilabel_sample_loads_with_the_canonical_columns(multilabel):
    assert resolve_data_path(BUILTIN_MULTILABEL_SAMPLE) == MULTILABEL_SAMPLE_PATH
    assert list(multilabel.columns) == [*CANONICAL_COLUMNS, "product"]
    assert len(multilabel) == 2000
    for column in ("text", "label"):
        assert multilabel[column].map(lambda t: isinstance(t, str) and t.strip() != "").all()


def test_unknown_builtin_dataset_names_all_five_samples():
    with pytest.raises(DataLoadError) as raised:
        resolve_data_path("builtin:sample-translation")
    for name in (BUILTIN_SAMPLE, BUILTIN_SEQ2SEQ_SAMPLE, BUILTIN_CAUSAL_SAMPLE, BUILTIN_MULTILABEL_SAMPLE,
                 BUILTIN_RATINGS_SAMPLE):
        assert repr(name) in str(raised.value)
    assert (BUILTIN_CAUSAL_SAMPLE, BUILTIN_MULTILABEL_SAMPLE) == ("builtin:sample-causal", "builtin:sample-multilabel")
    assert BUILTIN_RATINGS_SAMPLE == "builtin:sample-ratings"


@pytest.mark.parametrize("fixture", ["causal", "multilabel", "ratings"])
def test_texts_are_distinct_even_ignoring_case_and_punctuation(request, fixture):
    # Near-duplicates would leak across splits as surely as exact ones.
    texts = request.getfixturevalue(fixture)["text"]
    assert texts.map(_key).nunique() == len(texts)


def test_causal_prompts_and_responses_are_short_and_balanced(causal):
    assert causal["text"].str.split().str.len().between(10, 40).all()
    words = causal["label"].str.split().str.len()
    assert words.between(3, 20).all(), causal.loc[~words.between(3, 20), "label"].tolist()
    assert causal["intent"].value_counts().to_dict() == {topic: 200 for topic in TOPICS}


def test_causal_responses_follow_the_prompt_but_vary_in_wording(causal):
    # The reply names the prompt's item, so its colour is read from the prompt (questions may offer other colours).
    colour_words = set(COLOURS)
    named = 0
    rows = causal[~causal["intent"].isin(["question", "account"])]
    for prompt, response in zip(rows["text"], rows["label"]):
        said = colour_words & set(re.findall(r"[a-z]+", response))
        assert said <= set(re.findall(r"[a-z]+", prompt)), (prompt, response)
        named += bool(said)
    assert named > 0.8 * len(rows)
    # A greeting by name uses the name the customer signed with.
    for prompt, response in zip(causal["text"], causal["label"]):
        greeted = re.match(r"hi ([a-z]+),", response)
        if greeted:
            assert re.search(rf"\b{greeted.group(1)}$", prompt), (prompt, response)
    # Several phrasings per intent, and few replies repeat: no one answer fits an intent.
    openings = causal.groupby("intent")["label"].agg(lambda r: r.str.split().str[:3].str.join(" ").nunique())
    assert (openings >= 3).all(), openings.to_dict()
    assert causal["label"].nunique() > 0.8 * len(causal)


def test_multilabel_labels_are_sorted_known_and_one_to_three(multilabel):
    assert MULTILABEL_DELIMITER == "|" and 6 <= len(MULTILABEL_LABELS) <= 8
    assert list(MULTILABEL_LABELS) == sorted(set(MULTILABEL_LABELS))
    labels = multilabel["label"].str.split(MULTILABEL_DELIMITER, regex=False)
    known = set(MULTILABEL_LABELS)
    assert labels.map(lambda ls: 1 <= len(ls) <= 3 and ls == sorted(set(ls)) and set(ls) <= known).all()
    counts = collections.Counter(label for ls in labels for label in ls)
    assert set(counts) == set(MULTILABEL_LABELS)
    assert min(counts.values()) >= 0.08 * len(multilabel), counts
    assert (labels.str.len() >= 2).mean() >= 0.3


def test_multilabel_negated_mentions_exist_and_carry_no_label(multilabel):
    labels = multilabel["label"].str.split(MULTILABEL_DELIMITER, regex=False)
    negated = collections.Counter()
    for text, row_labels in zip(multilabel["text"], labels):
        key = f" {_key(text)} "
        for label, phrases in MULTILABEL_NEGATIONS.items():
            if any(f" {_key(phrase)} " in key for phrase in phrases):
                negated[label] += 1
                assert label not in row_labels, (text, row_labels)
    assert set(negated) == set(MULTILABEL_LABELS)
    assert sum(negated.values()) >= 0.15 * len(multilabel)


def test_multilabel_keywords_alone_do_not_decide_the_label(multilabel):
    # Rows that use a topic's words without raising it (negations, "charging port", "express delivery").
    labels = multilabel["label"].str.split(MULTILABEL_DELIMITER, regex=False)
    keywords = {"battery": r"battery|charg", "screen": r"screen|display", "shipping": r"deliver|ship|parcel",
                "refund": r"refund|money back", "account": r"account|log in"}
    for label, pattern in keywords.items():
        mentions = multilabel["text"].str.contains(pattern)
        assert (mentions & ~labels.map(lambda ls: label in ls)).sum() >= 20, label
        assert (~mentions & labels.map(lambda ls: label in ls)).sum() >= 20, label


def test_multilabel_noise_drops_one_true_label_from_two_percent_of_rows():
    noisy, clean = generate_multilabel(), generate_multilabel(label_noise=0.0)
    assert noisy["text"].equals(clean["text"])
    changed = noisy["labels"] != clean["labels"]
    assert changed.sum() == 40
    for kept, true in zip(noisy.loc[changed, "labels"], clean.loc[changed, "labels"]):
        kept, true = kept.split("|"), true.split("|")
        assert set(kept) < set(true) and len(kept) == len(true) - 1 >= 1


@pytest.mark.parametrize("generate, columns", [(generate_causal, ["prompt", "response", "intent"]),
                                               (generate_multilabel, ["text", "labels", "product"]),
                                               (generate_ratings, ["text", "rating", "domain"])])
def test_generators_are_pure_and_deterministic_per_seed(monkeypatch, generate, columns):
    def no_writing(*args, **kwargs):
        raise AssertionError("a generator wrote a file")

    monkeypatch.setattr(pd.DataFrame, "to_csv", no_writing)
    first = generate(200, seed=5)
    assert first.equals(generate(200, seed=5))
    assert not first.equals(generate(200, seed=6))
    assert list(first.columns) == columns and len(first) == 200


@pytest.mark.parametrize("generate", [generate_causal, generate_multilabel, generate_ratings])
@pytest.mark.parametrize("rows", [0, 9, 2.5, True])
def test_generators_refuse_a_bad_row_count(generate, rows):
    with pytest.raises(ValueError, match="n_rows"):
        generate(rows)


def test_importing_the_samples_module_writes_nothing():
    # The shipped files are committed; running `python -m tuneline.data.samples` is for regenerating them only.
    resources = CAUSAL_SAMPLE_PATH.parent
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in resources.iterdir()}
    done = subprocess.run([sys.executable, "-c", "import tuneline.data.samples, tuneline.data.loading"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in resources.iterdir()} == before


def test_builtin_ratings_sample_loads_for_regression(ratings):
    assert resolve_data_path(BUILTIN_RATINGS_SAMPLE) == RATINGS_SAMPLE_PATH
    assert list(ratings.columns) == [*CANONICAL_COLUMNS, "domain"]
    assert len(ratings) == 2000
    assert ratings["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all()
    values = ratings["label"].map(float)  # raises on any label that is not a number
    assert values.between(1, 5).all()
    assert (values.round(1) == values).all()  # one decimal, as a rating is written
    assert ratings["domain"].nunique() == 10


def test_ratings_spread_over_the_whole_scale(ratings):
    # A sample bunched in the middle would let a model score well by predicting 3.
    buckets = np.clip(np.floor(ratings["label"].map(float)), 1, 4).value_counts(normalize=True)
    assert set(buckets.index) == {1, 2, 3, 4}
    assert (buckets >= 0.12).all(), buckets.to_dict()


def test_rating_follows_the_text_but_not_perfectly(ratings):
    # A bag of words reads the praised and criticised aspects but not negation or averaging; noise caps everyone.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    texts, values = ratings["text"], ratings["label"].map(float)
    vectorizer = TfidfVectorizer()
    model = Ridge(alpha=1.0).fit(vectorizer.fit_transform(texts[:1600]), values[:1600])
    r2 = r2_score(values[1600:], model.predict(vectorizer.transform(texts[1600:])))
    assert 0.3 < r2 < 0.97, r2


def test_rating_cues_point_the_right_way(ratings):
    values = ratings["label"].map(float)
    lowered = ratings["text"].str.lower()

    def mean(pattern: str) -> float:
        hits = lowered.str.contains(pattern, regex=True)
        assert hits.sum() >= 20, pattern
        return values[hits].mean()

    assert mean("in a heartbeat") > 4 > 2 > mean("waste of money")
    assert 2.3 < mean("nothing special") < 3.7  # the middle verdict sits in the middle
    harsh = "(?:terrible|awful|dreadful|horrible|abysmal|pathetic)"
    assert mean(f"is not {harsh}") > mean(f"is {harsh}")  # negation flips the aspect
    strong = "(?:really|very|truly|incredibly|extremely) (?:outstanding|superb|fantastic|brilliant|amazing)"
    assert mean(f"is {strong}") > mean("is (?:fairly|reasonably|mostly) (?:good|solid|pleasant|nice)")


def test_rating_noise_is_small_and_leaves_the_texts_alone(monkeypatch):
    from tuneline.data import samples

    noisy = generate_ratings(500)
    monkeypatch.setattr(samples, "RT_NOISE_SD", 0.0)
    clean = generate_ratings(500)
    assert noisy["text"].equals(clean["text"])
    moved = noisy["rating"] - clean["rating"]
    assert (moved != 0).mean() > 0.6
    assert 0.15 < moved.std() < 0.4
