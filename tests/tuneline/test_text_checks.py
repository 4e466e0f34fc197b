"""The checks built for fine-tuning text, each on small crafted data: one that passes, one that fails with the right message."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_pairs, make_reviews
from tuneline.config import DataConfig, SplitConfig, TextChecksConfig
from tuneline.data.loading import BUILTIN_SAMPLE, load_dataset
from tuneline.data.splitting import SplitResult, label_names, split_dataset
from tuneline.data.cleaning import clean_dataset
from tuneline.errors import ConfigError, DataValidationError
from tuneline.data.text import (
    duplicate_key,
    find_near_duplicates,
    find_pii,
    label_spellings,
    luhn_valid,
    mask_pii,
    normalise_text,
    shingles,
)
from tuneline.validation.lengths import length_histogram, load_tokenizer, template_regex
from tuneline.validation.suite import check_splits, raise_for_failures, validate_frame

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:minilm-l6")  # the real MiniLM tokenizer, shipped in a package: no download


def _reviews(n_per_label: int = 20) -> pd.DataFrame:
    return make_reviews(n_per_label).assign(row=lambda f: range(len(f)))


def _validate(frame, task="classification", checks=None, labels=LABELS, **kwargs):
    suite = {"classification": "text_classification", "causal_lm": "text_generation"}[task]
    if task != "classification":
        labels = None
    elif labels is None:  # data.labels unset: the data's own labels are allowed
        labels = list(label_names(frame, None))
        kwargs.setdefault("data", DataConfig(checks=checks or TextChecksConfig()))
    return validate_frame(frame, suite, labels, task, checks or TextChecksConfig(), **kwargs)


def _failure(report, column):
    return next(o for o in report.outcomes if o.column == column and not o.success)


# Near-duplicates --------------------------------------------------------------------------------------------------


def test_normalisation_ignores_case_whitespace_and_punctuation():
    assert normalise_text("  Great   PHONE!!  (really)\n") == normalise_text("great phone really") == "great phone really"
    assert shingles("abcdef", 5) == {"abcde", "bcdef"} and shingles("abc", 5) == {"abc"}


def test_near_duplicates_are_found_and_different_texts_are_not():
    texts = ["The battery died after two days of light use.",
             "the battery died after two days of light use",  # case and punctuation
             "The batery  died after two days of light use!!",  # a typo, spacing (similarity 0.84)
             "The battery died after two days of heavy use.",  # another review: similarity 0.63
             "Shipping was quick and the box was intact.",
             "I would buy this blender again without a doubt."]
    found = find_near_duplicates(texts, threshold=0.8, ngram=5)
    assert {(a, b) for a, b, _ in found.pairs} == {(0, 1), (0, 2)}
    assert found.groups.tolist() == [0, 0, 0, 1, 2, 3] and found.group_count == 1 and found.grouped_rows == 3
    assert find_near_duplicates(texts, threshold=0.99).grouped_rows == 2  # only the case/punctuation copy


def test_minhash_finds_every_pair_brute_force_finds():
    """MinHash + LSH only proposes candidates; on real text it must miss no pair an exhaustive comparison finds."""
    texts = load_dataset(BUILTIN_SAMPLE, "text", "label").frame["text"].head(600).tolist()
    sets = [shingles(normalise_text(t), 5) for t in texts]
    exhaustive = {(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets))
                  if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= 0.75}
    found = find_near_duplicates(texts, threshold=0.75)
    assert exhaustive, "the sample has near-duplicates at 0.75; without them this test proves nothing"
    grouped = {(i, j) for i, j in exhaustive if found.groups[i] == found.groups[j]}
    assert grouped == exhaustive


# PII ----------------------------------------------------------------------------------------------------------------


def test_pii_kinds_are_found_with_luhn_and_address_checks():
    text = ("Mail ann.lee+shop@example.co.uk, call +44 20 7946 0958 or (555) 123-4567, card 4111 1111 1111 1111, "
            "server 192.168.10.4 and fe80::1ff:fe23:4567:890a")
    kinds = [kind for kind, _, _ in find_pii(text)]
    assert kinds == ["email", "phone", "phone", "card", "ip", "ip"]
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    # Not PII: a Luhn-failing 16-digit number, an impossible IP, a date, a version, prices and counts.
    clean = "order 4111 1111 1111 1112, ip 999.10.1.1, on 2024-05-01, v1.2.3, 10 20 30 40, $19.99 for 3 items"
    assert find_pii(clean) == []
    assert mask_pii("write to bob@example.com today") == "write to [EMAIL] today"
    assert mask_pii(text, ["email"]).startswith("Mail [EMAIL], call +44")


def test_pii_report_policy_counts_without_failing_and_fail_policy_names_rows():
    frame = _reviews()
    frame.loc[4, "text"] = "item 4 arrived broken, email me at jo@example.org"
    frame.loc[9, "text"] = "refund to card 5500 0000 0000 0004 please"
    report = _validate(frame)
    pii = next(o for o in report.outcomes if o.column == "pii_found")
    assert report.success and pii.success and pii.unexpected_count == 2
    assert pii.observed_value == "email: 1 rows, card: 1 rows"

    failed = _validate(frame, checks=TextChecksConfig(pii="fail"))
    assert not failed.success
    with pytest.raises(DataValidationError) as caught:
        raise_for_failures(failed, "reviews.csv")
    message = str(caught.value)
    assert "reviews.csv failed 1 of" in message and "PII in text, policy fail" in message
    assert "pii_found='email', row=4" in message and "pii_found='card', row=9" in message
    assert "jo@example.org" not in message  # the report names the kind, never the value


def test_mask_policy_masks_text_and_the_logged_dropped_rows():
    frame = pd.DataFrame({"row": range(3), "text": ["call 555-123-4567 now", "call 555-123-4567 now", "fine"],
                          "label": ["negative", "negative", "positive"]})
    result = clean_dataset(frame, pii="mask")
    assert list(result.frame["text"]) == ["call [PHONE] now", "fine"] and result.masked == 2
    assert list(result.dropped["text"]) == ["call [PHONE] now"]  # the duplicate, masked in the log too
    assert clean_dataset(frame).frame["text"][0] == "call 555-123-4567 now"  # report: data untouched


# Token lengths ------------------------------------------------------------------------------------------------------


def test_token_lengths_pass_within_max_length_and_fail_past_the_bound(tokenizer):
    frame = _reviews()
    report = _validate(frame, tokenizer=tokenizer, max_length=32)
    assert report.success and report.truncated_share == 0.0
    assert report.token_lengths.max() <= 32

    frame.loc[[2, 5, 7], "text"] = [f"a very long review number {i} " * 10 for i in (2, 5, 7)]  # 7.5%: over 5%
    report = _validate(frame, tokenizer=tokenizer, max_length=32)
    tokens = _failure(report, "token_count")
    assert tokens.unexpected_count == 3 and tokens.observed_value == "7.5% of rows (allowed 5.0%)"
    assert {r["row"] for r in tokens.example_rows} == {2, 5, 7}
    assert "train.max_length 32" in tokens.describe()
    histogram = length_histogram(report.token_lengths, 32)
    assert sum(b["rows"] for b in histogram) == 40 and sum(b["rows"] for b in histogram if b["truncated"]) == 3
    # the same data passes when the bound allows it
    assert _validate(frame, checks=TextChecksConfig(max_truncated_share=0.1), tokenizer=tokenizer, max_length=32).success


def test_causal_lm_token_length_counts_prompt_and_response(tokenizer):
    pairs = make_pairs(40).assign(row=range(40))
    short = _validate(pairs, "causal_lm", tokenizer=tokenizer, max_length=64)
    inputs = np.array([len(tokenizer(t)["input_ids"]) for t in pairs["text"]])
    assert (short.token_lengths > inputs).all()  # the response and its end token are counted too
    assert short.success


# Prompts (causal_lm) ------------------------------------------------------------------------------------------------


def test_causal_lm_prompts_and_responses_must_not_be_empty():
    pairs = make_pairs(40).assign(row=range(40))
    assert _validate(pairs, "causal_lm").success
    pairs.loc[6, "text"] = "   "
    report = _validate(pairs, "causal_lm")
    prompt = _failure(report, "text")
    assert prompt.expectation == "expect_column_values_to_match_regex" and prompt.note == "the prompt is not empty"
    assert [r["row"] for r in prompt.example_rows] == [6]


def test_chat_template_conformance():
    template = "<|user|>\n{prompt}\n<|assistant|>\n"
    pairs = make_pairs(40).assign(row=range(40))
    pairs["text"] = [template.replace("{prompt}", t) for t in pairs["text"]]
    checks = TextChecksConfig(chat_template=template)
    assert _validate(pairs, "causal_lm", checks).success
    pairs.loc[3, "text"] = "describe item 3 without the template"
    pairs.loc[8, "text"] = "<|user|>\n\n<|assistant|>\n"  # the template, but no prompt in it
    report = _validate(pairs, "causal_lm", checks)
    conformance = _failure(report, "text")
    assert "chat template" in conformance.note and [r["row"] for r in conformance.example_rows] == [3, 8]


def test_a_tokenizer_without_chat_template_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match="has no chat template"):
        template_regex("tokenizer", tokenizer)  # MiniLM is an encoder: no chat template
    with pytest.raises(ValueError, match="exactly once"):
        TextChecksConfig(chat_template="<|user|> no placeholder")


def test_causal_lm_cleaning_keeps_the_prompt_format():
    prompt = "<|user|>\n  List the steps:\n<|assistant|>\n"
    frame = pd.DataFrame({"row": [0], "text": [prompt.replace("\n", "\r\n") + "\x07"], "label": ["1. read\n2. fix"]})
    assert clean_dataset(frame, task="causal_lm").frame["text"][0] == prompt  # CRLF unified, bell gone, rest kept
    assert clean_dataset(frame, task="seq2seq").frame["text"][0] == "List the steps:"  # other tasks strip markup


# Labels -------------------------------------------------------------------------------------------------------------


def test_label_imbalance_is_reported_and_bounded_when_asked():
    frame = pd.concat([_reviews(30)[lambda f: f["label"] == "positive"], _reviews(3)[lambda f: f["label"] == "negative"]],
                      ignore_index=True).assign(row=lambda f: range(len(f)))
    report = _validate(frame)
    imbalance = next(o for o in report.outcomes if o.expectation == "expect_label_imbalance_ratio_to_be_at_most")
    assert imbalance.success and imbalance.observed_value.startswith("10.00 (positive: 30 rows, negative: 3 rows)")
    bounded = _validate(frame, checks=TextChecksConfig(max_imbalance_ratio=4))
    assert "allowed 4.00" in _failure(bounded, "label").observed_value


def test_every_label_needs_rows_in_every_split():
    frame = _reviews(10)
    good = SplitResult(train=frame.iloc[:14], validation=frame.iloc[14:17], test=frame.iloc[17:], labels=tuple(LABELS))
    assert check_splits(good, TextChecksConfig(), "classification").success
    # the test split holds no negative row
    test = frame.iloc[16:][lambda f: f["label"] == "positive"]
    leaky = SplitResult(train=frame.iloc[:14], validation=frame.iloc[14:16], test=test, labels=tuple(LABELS))
    report = check_splits(leaky, TextChecksConfig(min_rows_per_label=1), "classification")
    coverage = _failure(report, "label")
    assert coverage.example_rows == ({"label": "negative", "split": "test", "rows": 0},)
    with pytest.raises(DataValidationError, match="expect_every_label_in_every_split.*label='negative', split='test'"):
        raise_for_failures(report, "reviews.csv")
    assert not check_splits(good, TextChecksConfig(min_rows_per_label=2), "classification").success


def test_group_and_time_columns_are_checked_before_the_split():
    frame = _reviews().assign(user=lambda f: [f"u{i % 7}" for i in range(len(f))],
                              when=lambda f: pd.date_range("2024-01-01", periods=len(f), freq="D").astype(str))
    assert _validate(frame, split=SplitConfig(strategy="group", group_column="user")).success
    frame.loc[5, "user"] = None
    missing = _failure(_validate(frame, split=SplitConfig(strategy="group", group_column="user")), "user")
    assert missing.expectation == "expect_column_values_to_not_be_null" and missing.example_rows[0]["row"] == 5
    frame.loc[11, "when"] = "last tuesday"
    times = _failure(_validate(frame, split=SplitConfig(strategy="time", time_column="when")), "when")
    assert "row=11, when='last tuesday'" in times.observed_value
    near = next(o for o in _validate(frame, split=SplitConfig()).outcomes
                if o.expectation == "expect_near_duplicates_to_stay_in_one_split")
    assert near.success and near.unexpected_count == 0  # make_reviews texts are distinct enough


# One definition of the same text ---------------------------------------------------------------------------------


def _outcome(report, expectation):
    return next(o for o in report.outcomes if o.expectation == expectation)


def test_cleaning_drops_exactly_the_rows_the_repeat_check_counts():
    texts = ["The battery died after two days.", "THE BATTERY DIED AFTER TWO DAYS.",  # case
             "the battery died after two days!!", "<p>The battery   died after two days.</p>",  # punctuation, markup
             "Shipping was quick.", "(", "(", ")", "\U0001F600", "\U0001F600", "Great value for the price",
             "great value, for the price...", "Visit https://shop.example now", "Visit now"]
    frame = pd.DataFrame({"row": range(len(texts)), "text": texts, "label": ["negative"] * 5 + ["positive"] * 9})
    counted = _outcome(_validate(frame, checks=TextChecksConfig(max_duplicate_share=1)),
                       "expect_repeated_rows_share_to_be_at_most")
    cleaned = clean_dataset(frame)
    dropped = cleaned.dropped[cleaned.dropped["reason"].str.startswith("duplicate of row")]
    assert counted.unexpected_count == len(dropped) == 7
    assert set(dropped["row"]) == {1, 2, 3, 6, 9, 11, 13}  # ")" is not "(": texts of only punctuation compare as written
    assert [r["repeats_row"] for r in counted.example_rows] == [0, 0, 0, 5, 8]
    assert len({duplicate_key(t) for t in cleaned.frame["text"]}) == cleaned.rows_out  # nothing left that repeats


def _phrases(rows: int, repeat_share: float, seed: int = 0) -> pd.DataFrame:
    """Short phrases as SST-2 has them: a share of rows repeating an earlier phrase up to case and punctuation."""
    rng = np.random.default_rng(seed)
    adjectives = ["beautifully", "dull", "warm", "clumsy", "sharp", "tedious", "moving", "flat", "witty", "bland"]
    nouns = ["film", "script", "cast", "score", "ending", "pace", "story", "director", "premise", "sequel"]
    distinct = int(rows * (1 - repeat_share))
    phrases = [f"a {adjectives[i % 10]} {nouns[(i // 10) % 10]} {'' if i < 100 else f'number {i}'}".strip()
               for i in range(distinct)]
    labels = ["positive" if i % 2 else "negative" for i in range(distinct)]
    picked = rng.integers(0, distinct, rows - distinct)
    variants = [phrases[i] + " ," if k % 2 else phrases[i].upper() + " ." for k, i in enumerate(picked)]
    return pd.DataFrame({"row": range(rows), "text": phrases + variants,
                         "label": labels + [labels[i] for i in picked]})


def test_phrase_data_that_repeats_short_phrases_passes_the_default_and_the_bound_is_named():
    """SST-2 repeats 13% of its rows up to case and punctuation; a re-run export appended to a file repeats 20%."""
    phrases = _phrases(400, 0.13)
    report = _validate(phrases)
    assert report.success, [f.describe() for f in report.failures]
    assert _outcome(report, "expect_repeated_rows_share_to_be_at_most").observed_value.startswith("13.0% of rows")
    strict = _validate(phrases, checks=TextChecksConfig(max_duplicate_share=0.1))
    assert "Setting: data.checks.max_duplicate_share=0.1" in _failure(strict, "text").describe()
    assert not _validate(_phrases(400, 0.2)).success
    # Cleaning drops every repeat, and the split keeps none in two splits.
    cleaned = clean_dataset(phrases)
    assert cleaned.rows_out == 348 and cleaned.rows_dropped == 52
    splits = split_dataset(cleaned.frame, tuple(LABELS), 0.8, 0.1, 0.1, seed=0)
    keys = [{duplicate_key(t) for t in part["text"]} for part in splits.parts().values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


# Labels as users write them -----------------------------------------------------------------------------------------


def test_labels_spelt_several_ways_are_named_or_normalised(tmp_path):
    frame = _reviews()
    positive = frame.index[frame["label"] == "positive"]
    frame.loc[positive[:6], "label"] = "POSITIVE"
    frame.loc[positive[6:9], "label"] = " Positive "
    spelt = _failure(_validate(frame, labels=None), "label")
    assert spelt.expectation == "expect_label_spellings_to_be_consistent"
    assert spelt.observed_value == "one label spelt several ways: 'positive' (11 rows), 'POSITIVE' (6 rows), ' Positive ' (3 rows)"
    assert spelt.example_rows[1] == {"label": "POSITIVE", "rows": 6, "row": 0}
    assert spelt.setting == "data.normalize_labels=false"
    path = tmp_path / "spelt.csv"
    frame.drop(columns=["row"]).to_csv(path, index=False)
    normalised = load_dataset(str(path), "text", "label", normalize_labels=True)
    assert set(normalised.frame["label"]) == {"positive", "negative"} and normalised.rows_relabelled == 9
    assert normalised.relabelled == {"POSITIVE": "positive", " Positive ": "positive"}
    assert _validate(normalised.frame, labels=None).success
    listed = load_dataset(str(path), "text", "label", normalize_labels=True, labels=["negative", "Positive"])
    assert set(listed.frame["label"]) == {"Positive", "negative"}  # the spelling data.labels lists wins
    assert set(load_dataset(str(path), "text", "label").frame["label"]) == {"positive", "POSITIVE", " Positive ",
                                                                           "negative"}  # off by default
    numbers = frame.assign(label=["1" if i % 2 else "0" for i in range(len(frame))])
    numbers.loc[[1, 3], "label"] = "1.0"
    assert label_spellings(numbers["label"]) == [[("1", 18), ("1.0", 2)]]


def test_labels_mixing_numbers_and_words_fail_unless_data_labels_lists_them(tmp_path):
    records = [{"text": t, "label": [0, 1, "1", "neg"][i % 4]} for i, t in enumerate(_reviews()["text"])]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = load_dataset(str(path), "text", "label").frame
    assert set(frame["label"]) == {"0", "1", "neg"}  # 1 and "1" are one class; 0 and "neg" are not
    mixed = _failure(_validate(frame, labels=None), "label")
    assert mixed.expectation == "expect_labels_to_be_all_numbers_or_all_words"
    assert "labels that are words: 'neg' (10 rows)" in mixed.observed_value and mixed.setting == "data.labels=null"
    assert {"label": "neg", "rows": 10, "row": 3} in mixed.example_rows
    listed = DataConfig(labels=[0, 1])  # as YAML reads data.labels=[0, 1]
    assert listed.labels == ["0", "1"]
    report = validate_frame(frame, "text_classification", listed.labels, "classification", data=listed)
    failed = {o.expectation: o for o in report.failures}
    assert set(failed) == {"expect_column_values_to_be_in_set"}  # now only what is outside the list, by row
    assert failed["expect_column_values_to_be_in_set"].example_rows[0] == {"label": "neg", "row": 3}
    assert failed["expect_column_values_to_be_in_set"].setting == "data.labels=[0, 1]"


def test_a_text_given_different_labels_is_a_label_conflict_with_its_rows():
    frame = _reviews()
    again = frame.iloc[:4].assign(row=range(40, 44), text=lambda f: f["text"].str.upper() + "!",
                                  label=lambda f: f["label"].map({"positive": "negative", "negative": "positive"}))
    conflicts = _failure(_validate(pd.concat([frame, again], ignore_index=True)), "label")
    assert conflicts.expectation == "expect_no_label_conflicts" and conflicts.unexpected_count == 8
    assert conflicts.observed_value.startswith("label conflicts: 4 texts appear with different labels, 8 rows")
    assert conflicts.example_rows[0] == {"row": 0, "label": "positive", "conflicts_row": 40,
                                         "conflicting_label": "negative", "text": frame.loc[0, "text"]}
    assert conflicts.setting == "data.checks.max_label_conflict_share=0.01"
    one = pd.concat([frame, again.head(1)], ignore_index=True)  # 2 rows of 41: 4.9%
    assert _validate(one, checks=TextChecksConfig(max_label_conflict_share=0.05)).success


def test_a_text_column_of_numbers_or_of_one_value_suggests_the_column_mapping():
    frame = _reviews().assign(review=lambda f: f["text"], order=lambda f: [str(9000 + i) for i in range(len(f))])
    ids = frame.assign(text=frame["order"])
    data = DataConfig(text_column="order")
    words = next(o for o in validate_frame(ids, "text_classification", LABELS, data=data).failures)
    assert words.expectation == "expect_text_column_to_hold_words" and words.column == "order"
    assert "'review' looks like the text: set data.text_column=review" in words.note
    assert words.setting == "data.checks.max_numeric_text_share=0.5, data.text_column=order"
    constant = frame.assign(text=["N/A" if i % 4 else t for i, t in enumerate(frame["text"])])
    vary = {o.expectation: o for o in _validate(constant).failures}["expect_text_column_to_vary"]
    assert vary.observed_value == "one text fills 75.0% of rows (allowed 50%)" and vary.example_rows[0]["row"] == 1
    assert "set data.text_column=review" in vary.note
    assert vary.setting == "data.checks.max_top_text_share=0.5, data.text_column=text"
    # Regression inputs are checked too; generation inputs may be numbers (number to words) and are not.
    scores = ids.assign(label=[repr(float(i % 5)) for i in range(len(ids))])
    regression = validate_frame(scores, "text_regression", task="regression", checks=TextChecksConfig(), data=data)
    assert "expect_text_column_to_hold_words" in {o.expectation for o in regression.failures}
    pairs = make_pairs(40).assign(row=range(40), text=[str(i) for i in range(40)])
    assert "expect_text_column_to_hold_words" not in {o.expectation for o in _validate(pairs, task="causal_lm").outcomes}


def test_every_failed_check_names_its_setting_and_the_users_columns():
    frame = _reviews().rename(columns={"text": "review"}).assign(text=lambda f: f["review"])
    frame.loc[:9, "text"] = frame.loc[11:20, "text"].str.upper().to_numpy()  # 10 repeats, each of the other label
    frame.loc[22, "label"] = "Positive"
    frame.loc[21, "text"] = None
    data = DataConfig(text_column="review", label_column="stars", checks=TextChecksConfig(max_duplicate_share=0.1))
    report = validate_frame(frame, "text_classification", list(label_names(frame, None)), data=data)
    assert {o.expectation for o in report.failures} == {
        "expect_column_values_to_not_be_null", "expect_repeated_rows_share_to_be_at_most",
        "expect_label_spellings_to_be_consistent", "expect_no_label_conflicts", "expect_every_label_to_have_enough_rows"}
    assert all(o.setting and "=" in o.setting for o in report.failures)
    assert {o.column for o in report.failures} == {"review", "stars"}
    with pytest.raises(DataValidationError) as caught:
        raise_for_failures(report, "reviews.csv")
    message = str(caught.value)
    for setting in ("data.checks.max_duplicate_share=0.1", "data.normalize_labels=false",
                    "data.checks.max_label_conflict_share=0.01", "data.checks.min_rows_per_label=1",
                    "data.expectation_suite=text_classification (expectations/text_classification.json)"):
        assert setting in message
    assert "column 'text'" not in message and "column 'label'" not in message
