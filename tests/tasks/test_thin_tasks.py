"""Prefect tasks stay thin: each calls the library and publishes what it returns; the logic lives in `tuneline`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASKS = sorted((ROOT / "tasks").glob("*.py"))
MAX_TASK_LINES = 700
MAX_BODY_LINES = 25


def _is_task(decorator: ast.expr) -> bool:
    """`@task`, `@task(...)`, `@prefect.task(...)`."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "task") or (
        isinstance(target, ast.Attribute) and target.attr == "task")


def _tasks(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and any(_is_task(d) for d in node.decorator_list)]


def _body_lines(function: ast.FunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's end."""
    body = function.body[1:] if ast.get_docstring(function) is not None else function.body
    return function.end_lineno - body[0].lineno + 1 if body else 0


def test_the_task_modules_hold_at_most_700_lines():
    lines = {path.name: len(path.read_text().splitlines()) for path in TASKS}
    assert sum(lines.values()) <= MAX_TASK_LINES, lines


def test_the_checks_see_the_tasks():
    names = {function.name for path in TASKS for function in _tasks(path)}
    assert {"ingest_data", "fine_tune_model", "register_version", "gate_and_promote", "report_study"} <= names
    assert _body_lines(ast.parse("def f():\n    '''Doc.'''\n    a = 1\n    return a\n").body[0]) == 2


@pytest.mark.parametrize("path", TASKS, ids=lambda path: path.name)
def test_every_task_body_is_short(path):
    long = {function.name: _body_lines(function) for function in _tasks(path)
            if _body_lines(function) > MAX_BODY_LINES}
    assert long == {}, f"{path.name}: move the logic into a library module under tuneline/"


@pytest.mark.parametrize("path", TASKS, ids=lambda path: path.name)
def test_tasks_leave_mlflow_to_the_library(path):
    """What a run records in MLflow is library logic (`tuneline.registry.store` is called from the stage modules)."""
    calls = [ast.unparse(node.func) for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "registry"]
    assert calls == [], path.name


def test_flows_define_no_tasks():
    """A flow module is the stage list; its tasks live in tasks/."""
    assert {path.name: [f.name for f in _tasks(path)] for path in (ROOT / "flows").glob("*.py") if _tasks(path)} == {}
