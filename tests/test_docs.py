"""The docs run: every ```python block in README.md and docs/*.md is executed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from approxeq.np import available_models, registry
from approxeq.testing import specs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
#: guides whose blocks build on each other: run in order in one namespace, as one test
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


@pytest.mark.parametrize("code", list(_blocks()))
def test_doc_block_runs(code, tmp_path, monkeypatch, isolated_registries):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc>", "exec"), {"__name__": "__doc__"})


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
