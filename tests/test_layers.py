"""The import graph of the library, read from its source: layers import downwards only, and no
module imports itself back through others, not even inside a function (a deferred import hides a
circle, it does not remove it)."""

from __future__ import annotations

import ast
import functools
import pathlib

import pytest

import approxeq

ROOT = pathlib.Path(approxeq.__file__).parent
#: each layer may import the layers of a lower rank and its own (DESIGN's list, bottom up)
RANKS = {"files": 0, "groups": 1, "nn": 2, "symmetrize": 3, "approximate": 4, "np": 5,
         "data": 6, "datasets": 6, "train": 7, "testing": 8, "plot": 8, "experiments": 9,
         "cli": 10}


def _module_paths() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        found[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return found


MODULES = _module_paths()


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (names for annotations,
    never imported when the code runs)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: pathlib.Path) -> set[str]:
    """Every approxeq module ``path`` imports when it runs, at the top or inside a function."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("approxeq"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("approxeq"))
    return {m for m in found if m in MODULES}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


#: the registries import their plug-ins to fill themselves (each model module registers itself
#: with np.registry on import): the one circle the design allows
SELF_REGISTRATION = {("approxeq.np.registry", "approxeq.np.models")}


@functools.cache
def _graph() -> dict[str, frozenset[str]]:
    graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
    # a package imports its children on purpose: an edge back into the package's own __init__
    # is not a circle between modules
    return {m: frozenset(d for d in deps if not m.startswith(d + ".")
                         and (m, d) not in SELF_REGISTRATION) for m, deps in graph.items()}


def upward_imports(graph: dict[str, frozenset[str]]) -> list[str]:
    return [f"{m} imports {d}" for m, deps in graph.items() for d in sorted(deps)
            if _layer(m) in RANKS and _layer(d) in RANKS
            and RANKS[_layer(d)] > RANKS[_layer(m)]]


def find_circle(graph: dict[str, frozenset[str]], layer: str) -> list[str] | None:
    """A circle through a module of ``layer``, as the chain of modules, or ``None``."""
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                return stack + [m, dep]
            if dep not in state and (found := visit(dep, stack + [m])) is not None:
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if _layer(m) == layer and m not in state and (found := visit(m, [])) is not None:
            return found
    return None


def test_every_module_belongs_to_a_layer():
    unknown = sorted({_layer(m) for m in MODULES} - set(RANKS) - {None})
    assert not unknown, f"add {unknown} to RANKS, in DESIGN's order"


def test_layers_import_downwards_only():
    upward = upward_imports(_graph())
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("layer", sorted(RANKS))
def test_no_import_circles(layer):
    circle = find_circle(_graph(), layer)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_checks_catch_an_upward_import_and_a_circle():
    # the same checks on copies of the graph with one planted defect each
    graph = dict(_graph())
    graph["approxeq.groups.base"] = graph["approxeq.groups.base"] | {"approxeq.np.registry"}
    assert upward_imports(graph) == ["approxeq.groups.base imports approxeq.np.registry"]
    graph = dict(_graph())
    assert "approxeq.groups.base" in graph["approxeq.groups.finite"]
    graph["approxeq.groups.base"] = graph["approxeq.groups.base"] | {"approxeq.groups.finite"}
    assert upward_imports(graph) == []
    assert find_circle(graph, "groups") is not None
