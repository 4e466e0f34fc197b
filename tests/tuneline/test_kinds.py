"""Task kinds: one module per kind declares what the stages ask; the stages ask it instead of comparing names."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from tuneline.config import GateMetric, RetrainConfig, Task
from tuneline.data.loading import load_dataset, regression_targets
from tuneline.errors import ConfigError
from tuneline.kinds import GENERATIVE, KINDS, NAMES, Kind, kind

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for base in ("tuneline", "tasks", "flows") for p in (ROOT / base).rglob("*.py")
           if "kinds" not in p.relative_to(ROOT).parts]


def task_name_comparisons(path: Path) -> list[int]:
    """Lines of `path` that compare with a task name or key a dict by task names: what a new kind would have to edit."""

    def names_in(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_in(element) for element in node.elts)
        return False

    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) and any(names_in(n) for n in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and sum(names_in(key) for key in node.keys if key is not None) >= 2:
            lines.append(node.lineno)
    return lines


def test_the_comparison_finder_finds_comparisons(tmp_path):
    code = tmp_path / "stage.py"
    code.write_text('if task == "regression": pass\nx = task in ("seq2seq", "causal_lm")\n'
                    'y = {"classification": 1, "regression": 2}[task]\nz = kind(task).numeric\n')
    assert task_name_comparisons(code) == [1, 2, 3]


def test_at_most_six_task_name_comparisons_remain_outside_the_kinds():
    found = {p.relative_to(ROOT).as_posix(): task_name_comparisons(p) for p in SOURCES}
    found = {path: lines for path, lines in found.items() if lines}
    assert sum(map(len, found.values())) <= 6, found
    print(f"{sum(map(len, found.values()))} task-name comparisons outside tuneline/kinds: {found}")


def test_the_task_choices_are_the_kinds():
    assert get_args(Task) == NAMES == tuple(KINDS)
    assert set(GENERATIVE) == {name for name, k in KINDS.items() if k.target == "text"}
    modules = {p.stem for p in (ROOT / "tuneline" / "kinds").glob("*.py")} - {"__init__", "base"}
    assert modules == set(NAMES), "one module per kind"


def test_an_unknown_task_names_the_kinds():
    with pytest.raises(ConfigError, match="unknown task 'ner'; choose one of classification, regression"):
        kind("ner")


@pytest.mark.parametrize("name", NAMES)
def test_each_kind_is_consistent(name):
    from peft import TaskType

    k = kind(name)
    assert isinstance(k, Kind) and k.name == name
    assert (ROOT / "expectations" / f"{k.suite}.json").is_file()
    assert k.primary_metric in k.test_metrics and set(k.guarded_metrics) <= set(k.test_metrics)
    assert set(k.test_metrics) <= set(get_args(GateMetric))
    assert k.tune_objective in k.validation_metrics and "loss" in k.validation_metrics
    assert k.int8_metric in k.test_metrics
    assert TaskType[k.peft_task_type]
    assert k.outputs and all(dtype in ("string", "double") for _, dtype in k.outputs)
    assert "{labels}" in k.card_use or not k.has_classes


@pytest.mark.parametrize("name", NAMES)
def test_each_kind_ships_a_sample_that_loads_and_validates_as_its_config(name):
    k = kind(name)
    frame = load_dataset(k.sample, k.sample_text_column, k.sample_label_column, task=name).frame
    assert len(frame) >= 1000
    if k.numeric:
        assert regression_targets(frame).std() > 0
    elif k.has_classes:
        assert frame["label"].nunique() >= 2
    else:
        assert frame["label"].str.strip().str.len().gt(0).all()
    config = RetrainConfig(task=name, data={"path": k.sample, "text_column": k.sample_text_column,
                                            "label_column": k.sample_label_column})
    assert config.promotion.primary_metric == k.primary_metric and config.data.expectation_suite == k.suite


def test_the_readme_lists_each_kinds_sample_as_the_kind_declares_it():
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] in NAMES:
            rows[cells[0]] = cells
    assert set(rows) == set(NAMES)
    for name, (_, path, columns) in rows.items():
        k = kind(name)
        assert path == f"`{k.sample}`" and columns.startswith(f"`{k.sample_text_column}`, `{k.sample_label_column}`")
