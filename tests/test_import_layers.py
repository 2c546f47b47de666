"""No two modules of the data and testing layers import each other, not even inside a
function (a deferred import hides a circle; it does not remove it)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import approxeq

ROOT = pathlib.Path(approxeq.__file__).parent


def _module(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("layer", ["data", "testing"])
def test_no_import_circles(layer):
    modules = {_module(p): p for p in (ROOT / layer).rglob("*.py") if p.name != "__init__.py"}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for dep in graph[m]:
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack + [m, dep]))
            if dep not in state:
                visit(dep, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
