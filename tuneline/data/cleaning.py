"""Clean ingested rows: normalised text, PII masked or reported, empty rows and duplicates dropped."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from tuneline.kinds import kind
from tuneline.data.loading import check_task, regression_targets
from tuneline.data.text import PII_KINDS, clean_prompt, clean_text, duplicate_keys, mask_pii

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CleanResult:
    frame: pd.DataFrame
    dropped: pd.DataFrame  # the dropped rows, with a `reason` column
    rows_in: int
    rows_out: int
    changed: int  # rows whose text the cleaning rewrote
    masked: int = 0  # rows whose PII was replaced by placeholders (data.checks.pii=mask)

    @property
    def rows_dropped(self) -> int:
        return len(self.dropped)


def _is_empty(texts: pd.Series) -> pd.Series:
    return texts.isna() | (texts.fillna("").str.strip().str.len() == 0)


def clean_dataset(frame: pd.DataFrame, task: str = "classification", pii: str = "report",
                  pii_kinds: tuple[str, ...] | list[str] = PII_KINDS) -> CleanResult:
    """Clean every input text, then drop rows left empty and duplicates (first kept).

    Inputs are cleaned with `clean_text`, except causal_lm prompts, which keep their format
    (`clean_prompt`: newlines and template markers are part of the prompt).
    With `pii="mask"`, emails, phone numbers, card numbers and IP addresses (`pii_kinds`) are
    replaced by placeholders (`[EMAIL]`...) in the input, and in the target of generation tasks,
    before duplicates are looked for.
    What counts as a duplicate follows the task, "the same text" being what the repeated-rows
    check counts (`tuneline.text_checks.duplicate_key`: equal after cleaning up to case,
    punctuation and spacing), so cleaning drops every row that check counts:
    - classification: the same text (first row's label kept; the reason names a conflicting label);
    - regression: the same text; the first row keeps the mean of the group's labels;
    - seq2seq, causal_lm: the same text *and* target (the target up to case, punctuation and
      spacing). One input with several different targets is multi-reference data and stays;
      `split_dataset` keeps such rows together.
    Targets (`label`) are never rewritten for generation tasks (PII masking aside): they are what the
    model must learn to write, spacing, case and newlines included; rows with an empty target
    are dropped. Dropped rows are returned with a `reason`, never discarded silently.
    """
    check_task(task)
    cleaned = frame.copy()
    cleaner = clean_prompt if kind(task).keeps_prompt_format else clean_text
    cleaned["text"] = frame["text"].map(lambda t: cleaner(t) if isinstance(t, str) else t)
    changed = int((cleaned["text"] != frame["text"]).sum())
    masked, shown = 0, frame
    if pii == "mask":
        columns = kind(task).checked_for_pii
        touched = pd.Series(False, index=frame.index)
        for column in columns:
            before = cleaned[column]
            cleaned[column] = before.map(lambda t: mask_pii(t, pii_kinds))
            touched |= cleaned[column].fillna("").ne(before.fillna(""))
        masked = int(touched.sum())
        # The dropped rows are logged: with masking asked for, their PII must not reach the log either.
        shown = frame.assign(**{column: frame[column].map(lambda t: mask_pii(t, pii_kinds)) for column in columns})
    empty = _is_empty(cleaned["text"])
    reasons = pd.Series("", index=frame.index)
    reasons[empty] = "empty after cleaning"
    if kind(task).generative:
        no_target = _is_empty(cleaned["label"]) & ~empty
        reasons[no_target] = "empty target"
        empty = empty | no_target
    # The key of the text as it now is (masked too): masking can only make more rows the same, never fewer.
    key = pd.Series(duplicate_keys(list(cleaned["text"]), list(cleaned["label"]) if kind(task).generative else None),
                    index=frame.index)
    candidates = cleaned[~empty]
    by_key = candidates.groupby(key[~empty], sort=False)
    duplicate = key[~empty].duplicated(keep="first").reindex(frame.index, fill_value=False)
    first_row = by_key["row"].transform("first").reindex(frame.index)
    reasons[duplicate] = "duplicate of row " + first_row[duplicate].astype(int).astype(str)
    if kind(task).has_classes:
        first_label = by_key["label"].transform("first").reindex(frame.index)
        conflict = duplicate & (cleaned["label"] != first_label)
        reasons[conflict] = [f"{reason} with label {label!r}; row {first}'s label {kept!r} kept"
                             for reason, label, first, kept in zip(reasons[conflict], cleaned.loc[conflict, "label"],
                                                                   first_row[conflict].astype(int), first_label[conflict])]
    elif kind(task).numeric:
        # Several scores for one text (several annotators, say) estimate one value: the first row keeps their mean.
        values = pd.Series(regression_targets(candidates), index=candidates.index)
        by_text = values.groupby(key[~empty], sort=False)
        varies = (by_text.transform("nunique") > 1).reindex(frame.index, fill_value=False)
        keeper = varies & ~duplicate
        cleaned.loc[keeper, "label"] = by_text.transform("mean")[keeper[keeper].index].map(lambda v: repr(float(v)))
        reasons[duplicate & varies] += "; labels averaged into it"
    drop = empty | duplicate
    dropped = shown[drop].assign(reason=reasons[drop]).sort_values("row")
    kept = cleaned[~drop].reset_index(drop=True)
    return CleanResult(frame=kept, dropped=dropped.reset_index(drop=True), rows_in=len(frame), rows_out=len(kept),
                       changed=changed, masked=masked)
