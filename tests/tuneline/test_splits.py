"""Leakage-safe splits: groups stay together, time never runs backwards, near-duplicates never cross splits."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_reviews
from tuneline.config import SplitConfig, load_config
from tuneline.data.splitting import (
    SplitResult,
    check_no_near_duplicates,
    label_names,
    split_dataset,
    split_lineage,
    time_order,
)
from tuneline.errors import ConfigError, SplitError
from tuneline.data.samples import generate_reviews
from tuneline.data.text import pairs_across

FRACTIONS = (0.8, 0.1, 0.1)


def _users(n_users: int = 40, seed: int = 0) -> pd.DataFrame:
    """Reviews by users writing 1 to 12 reviews each, labels varying within a user."""
    rng = np.random.default_rng(seed)
    reviews = generate_reviews(600, seed=seed)
    counts = rng.integers(1, 13, n_users)
    users = np.repeat([f"user-{u}" for u in range(n_users)], counts)
    return reviews.head(len(users)).assign(user=users, row=range(len(users)))


def _split(frame, **options):
    labels = label_names(frame, None) if options.get("task", "classification") == "classification" else ()
    return split_dataset(frame, labels, *FRACTIONS, **{"seed": 0} | options)


@pytest.mark.parametrize("seed", range(5))
def test_group_split_never_puts_a_group_in_two_splits(seed):
    frame = _users(seed=seed)
    result = _split(frame, seed=seed, strategy="group", group_column="user")
    users = [set(part["user"]) for part in result.parts().values()]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert sorted(pd.concat(result.parts().values())["row"]) == list(range(len(frame)))  # nothing lost
    sizes = result.sizes()
    assert all(size > 0 for size in sizes.values())
    assert abs(sizes["train"] / len(frame) - 0.8) < 0.08  # whole users, so close to the fractions, not exact
    for part in result.parts().values():  # stratified as far as whole users allow
        assert set(part["label"]) == set(frame["label"])


def test_group_split_is_seeded_and_names_what_is_missing():
    frame = _users()
    first = _split(frame, strategy="group", group_column="user")
    assert list(first.test["row"]) == list(_split(frame, strategy="group", group_column="user").test["row"])
    assert list(first.test["row"]) != list(_split(frame, seed=1, strategy="group", group_column="user").test["row"])
    with pytest.raises(SplitError, match=r"split.group_column 'account' is not a column.*'user'"):
        _split(frame, strategy="group", group_column="account")
    frame.loc[[4, 9], "user"] = None
    with pytest.raises(SplitError, match=r"2 rows of the data have no 'user'.*row=4, row=9"):
        _split(frame, strategy="group", group_column="user")
    with pytest.raises(SplitError, match="at least 3 groups"):
        _split(frame.assign(user=["a", "b"] * (len(frame) // 2) + ["a"] * (len(frame) % 2)), strategy="group",
               group_column="user")


def test_a_large_group_cannot_leave_a_split_empty():
    frame = make_reviews(30).assign(row=range(60), user=["big"] * 50 + [f"u{i}" for i in range(10)])
    result = _split(frame, strategy="group", group_column="user")
    assert set(result.train["user"]) == {"big"}  # 50 of 60 rows: train, and nothing else fits there
    assert len(result.validation) == len(result.test) == 5


def _dated(n: int = 100) -> pd.DataFrame:
    frame = make_reviews(n // 2).assign(row=range(n))
    days = pd.date_range("2024-01-01", periods=n // 2, freq="D").repeat(2)  # two reviews a day: ties to keep together
    rng = np.random.default_rng(0)
    return frame.assign(when=rng.permutation(days.strftime("%Y-%m-%dT%H:%M:%SZ")))


def test_time_split_trains_on_the_past_and_tests_on_the_most_recent():
    frame = _dated()
    result = _split(frame, strategy="time", time_column="when")
    times = {name: time_order(part, "when") for name, part in result.parts().items()}
    assert times["train"].max() < times["validation"].min() and times["validation"].max() < times["test"].min()
    assert result.sizes() == {"train": 80, "validation": 10, "test": 10}
    assert times["test"].max() == time_order(frame, "when").max()  # the newest rows are the test set
    tags = split_lineage(result, SplitConfig(strategy="time", time_column="when"))
    assert tags["split.strategy"] == "time" and tags["split.time.train_last"] < tags["split.time.test_first"]


def test_time_split_keeps_equal_times_together_and_reads_numbers():
    frame = make_reviews(20).assign(row=range(40), step=[i // 3 for i in range(40)])  # three rows per time step
    result = _split(frame, strategy="time", time_column="step")
    assert result.sizes() == {"train": 33, "validation": 3, "test": 4}  # the cut after 32 rows moved past step 10
    assert max(result.train["step"]) < min(result.validation["step"])
    assert max(result.validation["step"]) < min(result.test["step"])


def test_time_split_refuses_what_it_cannot_order():
    frame = _dated()
    frame.loc[7, "when"] = "soon"
    with pytest.raises(SplitError, match=r"1 of 100 values of split.time_column 'when'.*row=7, when='soon'"):
        _split(frame, strategy="time", time_column="when")
    same_day = make_reviews(10).assign(row=range(20), when="2024-01-01")
    with pytest.raises(SplitError, match="three or more distinct times"):
        _split(same_day, strategy="time", time_column="when")


# Near-duplicates -----------------------------------------------------------------------------------------------


def _with_copies(copies: int = 12) -> pd.DataFrame:
    """Reviews plus near-copies of some of them (case, punctuation, a typo), as a scraped dataset has."""
    frame = generate_reviews(400, seed=5)
    picked = frame.sample(copies, random_state=1)
    variants = picked.assign(text=picked["text"].str.upper().str.replace(".", "!!", regex=False))
    return pd.concat([frame, variants], ignore_index=True).assign(row=lambda f: range(len(f)))


def test_ignoring_near_duplicates_leaks_them_across_splits():
    frame = _with_copies()
    leaky = [result for result in (_split(frame, seed=s) for s in range(3)) if pairs_across(result.parts(), 0.8, 5)]
    assert leaky  # a plain shuffle puts copies on both sides, so the grouping below is what keeps them apart
    with pytest.raises(SplitError, match=r"near-duplicate rows \(similarity >= 0.8\) cross splits, e.g. "):
        check_no_near_duplicates(leaky[0], 0.8, 5)


@pytest.mark.parametrize("seed", range(3))
def test_grouped_near_duplicates_stay_in_one_split_with_sizes_and_strata_kept(seed):
    frame = _with_copies()
    plain = _split(frame, seed=seed)
    grouped = _split(frame, seed=seed, near_duplicates="group")
    assert pairs_across(grouped.parts(), 0.8, 5) == []
    assert grouped.sizes() == plain.sizes()  # swaps, not moves
    for name in ("train", "validation", "test"):  # same label counts: swapped with rows of the same label
        assert grouped.parts()[name]["label"].value_counts().to_dict() == plain.parts()[name]["label"].value_counts().to_dict()
    assert grouped.near_duplicate_groups >= 12 and grouped.dropped is None


def test_dropping_near_duplicates_keeps_the_first_and_says_why():
    frame = _with_copies()
    result = _split(frame, near_duplicates="drop")
    assert result.rows_dropped >= 12 and sum(result.sizes().values()) == len(frame) - result.rows_dropped
    copy = result.dropped[result.dropped["row"] >= 400].iloc[0]
    original = frame.loc[frame["text"].str.upper().str.replace(".", "!!", regex=False) == copy["text"], "row"].iloc[0]
    assert copy["reason"].startswith(f"near-duplicate of row {original} (similarity 1.00)")
    assert pairs_across(result.parts(), 0.8, 5) == []


def test_group_split_merges_near_duplicates_of_different_users():
    frame = _users()
    frame.loc[len(frame)] = frame.loc[0].to_dict() | {"row": len(frame), "user": "someone-else",
                                                       "text": frame.loc[0, "text"].upper() + "!!"}
    result = _split(frame, strategy="group", group_column="user", near_duplicates="group")
    where = {name for name, part in result.parts().items() if {"someone-else", frame.loc[0, "user"]} & set(part["user"])}
    assert len(where) == 1


def test_time_split_removes_later_copies_of_past_rows():
    frame = _dated()
    oldest = frame.loc[frame["when"].idxmin()]
    frame.loc[len(frame)] = {"row": 100, "text": oldest["text"].upper(), "label": oldest["label"],
                             "when": frame["when"].max()}  # a copy of the oldest review, posted again last
    result = _split(frame, strategy="time", time_column="when", near_duplicates="group")
    assert 100 not in set(result.test["row"]) and list(result.dropped["row"]) == [100]
    assert "a time split cannot move it back into the past" in result.dropped["reason"][0]
    assert pairs_across(result.parts(), 0.8, 5) == []


def test_generation_references_stay_together_under_every_policy():
    frame = pd.DataFrame({"row": range(90), "text": [f"message number {i // 3} about topic {i // 3 % 7}" for i in range(90)],
                          "label": [f"summary {i}" for i in range(90)]})
    for policy in ("group", "drop"):
        result = _split(frame, task="seq2seq", near_duplicates=policy, near_duplicate_threshold=0.95)
        for part in result.parts().values():
            assert (part["text"].value_counts() == 3).all()  # all three references of a text, in one split


def test_split_settings_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match="strategy group needs split.group_column"):
        load_config(overrides=["split.strategy=group"])
    with pytest.raises(ConfigError, match="time_column applies to strategy time"):
        load_config(overrides=["split.time_column=when"])
    with pytest.raises(ConfigError, match="unknown split strategy"):
        split_dataset(make_reviews(5), ("negative", "positive"), *FRACTIONS, seed=0, strategy="by-user")
    assert SplitResult(train=make_reviews(1), validation=make_reviews(1), test=make_reviews(1), labels=()).rows_dropped == 0
