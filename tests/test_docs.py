"""The docs run: every ```python block in README.md and docs/*.md is executed.

The blocks of one file run in order in one namespace, as a reader runs them: a guide may build
on what its earlier blocks defined. Guides that register models run as one test, so that what
they register is forgotten after them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from approxeq.np import available_models, registry
from approxeq.testing import specs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
#: guides whose blocks register models: run in order in one namespace, as one test
SCRIPTS = ["extending.md"]


def _blocks():
    for path in DOCS:
        if path.exists() and path.name not in SCRIPTS:
            for i, code in enumerate(BLOCK.findall(path.read_text())):
                yield pytest.param(code, id=f"{path.name}-{i}")


@pytest.fixture
def isolated_registries(monkeypatch):
    """Models and contract specs a doc registers are forgotten after it."""
    available_models()  # the built-in models register first, into the lasting registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_DESCRIPTIONS", dict(registry._DESCRIPTIONS))
    monkeypatch.setattr(specs, "CONTRACT_SPECS", dict(specs.CONTRACT_SPECS))


_NAMESPACES: dict[str, dict] = {}


@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_block_runs(code, tmp_path_factory, monkeypatch, request):
    doc, index = request.node.callspec.id.rsplit("-", 1)
    namespace = _NAMESPACES.get(doc)
    if namespace is None or namespace["__ran__"] > int(index):  # first block, or a rerun
        namespace = _NAMESPACES[doc] = {"__name__": "__doc__", "__ran__": 0}
    # one working directory per file, shared by its blocks like the namespace
    namespace.setdefault("__workdir__", tmp_path_factory.mktemp(doc))
    monkeypatch.chdir(namespace["__workdir__"])
    # a block selected on its own (-k) first runs the blocks before it
    earlier = [p.values[0] for p in _blocks() if p.id.rsplit("-", 1)[0] == doc]
    for i in range(namespace["__ran__"], int(index) + 1):
        namespace["__ran__"] = i + 1
        exec(compile(earlier[i] if i < int(index) else code, f"<{doc} block {i}>", "exec"),
             namespace)


@pytest.mark.parametrize("name", SCRIPTS)
def test_doc_script_runs(name, tmp_path, monkeypatch, isolated_registries):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc__"}
    blocks = BLOCK.findall((ROOT / "docs" / name).read_text())
    assert blocks, f"docs/{name} has no python blocks"
    for i, code in enumerate(blocks):
        exec(compile(code, f"<docs/{name} block {i}>", "exec"), namespace)


def test_docs_have_examples():
    assert list(_blocks()), "README.md and docs/*.md should contain runnable python examples"
