"""The structure docs/ARCHITECTURE.md describes, checked by reading the sources (standard library `ast`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's files live in the repository (pyproject.toml's package-dir).
PACKAGES = {"tuneline": ROOT / "tuneline", "tuneline.flows": ROOT / "flows", "tuneline.tasks": ROOT / "tasks"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if "proto" in parts:  # protoc's output
                continue
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The tuneline modules `path` imports anywhere in it (function-level imports too: a cycle there is a cycle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from tuneline.data import text`
    # `import tuneline.flows` imports the package `tuneline` too, which is the lazy API facade: not an edge
    return {m for m in found if m in known and m != name and m != "tuneline"}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each listed from its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_imports_it_should():
    edges = graph()
    assert "tuneline.tasks.common" in edges["tuneline.tasks.train"]
    assert "tuneline.data.text" in edges["tuneline.data.cleaning"]  # from-import of a module's names
    assert "tuneline.tasks.ingest" in edges["tuneline.cli"]  # a function-level import


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_at_most_twelve_modules_at_the_top():
    top = sorted(p.name for p in (ROOT / "tuneline").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 12, top


@pytest.mark.parametrize("package", sorted(p.name for p in (ROOT / "tuneline").iterdir()
                                            if (p / "__init__.py").exists()))
def test_every_stage_package_says_what_it_owns(package):
    docstring = ast.get_docstring(ast.parse((ROOT / "tuneline" / package / "__init__.py").read_text()))
    assert docstring and "import" in docstring.lower(), f"tuneline/{package}/__init__.py: say what it owns and may import"


def test_serving_and_the_runtime_import_neither_prefect_nor_torch():
    edges, found = graph(), modules()
    for name in found:
        if name.startswith(("tuneline.serving", "tuneline.runtime")):
            reached = {name}
            todo = [name]
            while todo:
                for other in edges[todo.pop()]:
                    if other not in reached:
                        reached.add(other)
                        todo.append(other)
            bad = [(m, top) for m in reached for top in _third_party(found[m]) if top in ("prefect", "torch")]
            assert bad == [], f"{name} reaches {bad}"


def _third_party(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names
