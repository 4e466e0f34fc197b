"""The data stages with the text checks and a group split, as the flow runs them: Prefect tasks, a real MLflow run."""

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from tuneline.flows.retrain import prepare_data
from tuneline.tasks.split import split_data
from tuneline.registry import store as registry
from tuneline.config import load_config
from tuneline.errors import DataValidationError, SplitError
from tuneline.data.samples import generate_reviews


@flow
def checked_data_stages(config, run_id: str):
    _, _, cleaned, splits = prepare_data(config, run_id)
    return cleaned, splits


@flow
def split_only(cleaned, config, run_id: str):
    return split_data(cleaned, config.data, config.split, "tickets.csv", run_id, config.task)


@pytest.fixture
def tickets_csv(tmp_path):
    """Support tickets by 30 customers, one customer's email in a text, a near-copy across customers (c99), and a
    copy in capitals (c98): the same text, which cleaning drops."""
    rng = np.random.default_rng(3)
    frame = generate_reviews(300, seed=3)[["text", "label"]]
    frame["customer"] = rng.choice([f"c{i:02d}" for i in range(30)], len(frame))
    frame.loc[5, "text"] = "Refund please, reach me at pat@example.net"
    frame.loc[len(frame)] = {"text": frame.loc[7, "text"].upper() + " Truly.", "label": frame.loc[7, "label"],
                             "customer": "c99"}
    frame.loc[len(frame)] = {"text": frame.loc[7, "text"].upper(), "label": frame.loc[7, "label"], "customer": "c98"}
    path = tmp_path / "tickets.csv"
    frame.to_csv(path, index=False)
    return path


def _config(path, *extra):
    return load_config(overrides=[f"data.path={path}", "split.strategy=group", "split.group_column=customer",
                                  "data.checks.pii=mask", "train.max_length=64", *extra])


def test_group_split_stage_masks_pii_and_records_lineage(prefect_harness, state, tickets_csv):
    run_id = registry.start_run("stages", "test", params={}, config_yaml="", tags={})
    cleaned, splits = checked_data_stages(_config(tickets_csv), run_id)
    customers = [set(part["customer"]) for part in splits.parts().values()]
    assert not (customers[0] & customers[1] or customers[0] & customers[2] or customers[1] & customers[2])
    copy_and_original = {name for name, part in splits.parts().items() if {"c99"} & set(part["customer"])}
    assert len(copy_and_original) == 1 and splits.near_duplicate_groups >= 1
    home = splits.parts()[copy_and_original.pop()]
    assert 7 in set(home["row"])  # the near-copy is in its original's split, though another customer wrote it
    assert dict(zip(cleaned.dropped["customer"], cleaned.dropped["reason"])) == {"c98": "duplicate of row 7"}
    assert cleaned.masked == 1 and "pat@example.net" not in " ".join(pd.concat(splits.parts().values())["text"])
    run = registry.client().get_run(run_id)
    tags = run.data.tags
    assert tags["split.strategy"] == "group" and tags["split.group_column"] == "customer"
    assert tags["validation.pii_rows"] == "1" and tags["validation.success"] == "True"
    assert sum(int(tags[f"split.groups.{n}"]) for n in ("train", "validation", "test")) == len(set().union(*customers))
    assert run.data.metrics["rows_pii_masked"] == 1
    artifacts = {a.path for a in registry.client().list_artifacts(run_id, "validation")}
    assert {"validation/report.json", "validation/split_checks.json", "validation/token_lengths.png"} <= artifacts

    # A later run can prove it is tested on the same rows: the same hash passes, any other stops the run.
    same = _config(tickets_csv, f"split.expected_test_hash={tags['data.hash.test']}")
    assert split_only(cleaned, same, registry.start_run("stages", "again", {}, "", {})).hashes == splits.hashes
    other = _config(tickets_csv, "split.seed=1", f"split.expected_test_hash={tags['data.hash.test']}")
    with pytest.raises(SplitError, match="not split.expected_test_hash"):
        split_only(cleaned, other, registry.start_run("stages", "other", {}, "", {}))


def test_pii_fail_policy_stops_at_validation(prefect_harness, state, tickets_csv):
    config = _config(tickets_csv, "data.checks.pii=fail")
    with pytest.raises(DataValidationError, match=r"PII in text, policy fail.*pii_found='email', row=5"):
        checked_data_stages(config, registry.start_run("stages", "pii", {}, "", {}))
