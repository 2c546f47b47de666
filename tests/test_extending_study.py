"""docs/extending.md's new kind of experiment runs as written: its module and its YAML, saved
as the guide says, run by the command it shows; a ``study`` key that names nothing is one line."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from approxeq.cli import main
from approxeq.experiments import registry

pytest.importorskip("yaml")

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
FILE_BLOCK = re.compile(r"```\w+ ([\w.]+)\n(.*?)```", re.S)
COMMAND = re.compile(r"```sh\n(approxeq experiment .*?)\n```", re.S)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """The study the guide registers, its module and its folder on sys.path are forgotten."""
    monkeypatch.chdir(tmp_path)
    registry.discover_studies()  # the shipped studies register first, into the lasting registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("my_study", None)


def test_the_guides_study_is_one_module_and_one_yaml(isolated, capsys):
    text = GUIDE.read_text()
    files = dict(FILE_BLOCK.findall(text))
    assert set(files) == {"my_study.py", "my_study.yaml"}
    for name, content in files.items():
        (isolated / name).write_text(content)
    command = shlex.split(COMMAND.search(text).group(1))
    assert main(command[1:] + ["--quiet"]) == 0
    metrics = json.loads((isolated / "runs" / "shift-test" / "metrics.json").read_text())
    assert set(metrics) == {"TNP", "TE-TNP"}
    assert metrics["TE-TNP"]["max_change"] < 1e-5 < 1e-4 < metrics["TNP"]["max_change"]
    assert "| TE-TNP |" in capsys.readouterr().out


@pytest.mark.parametrize(("study", "message"), [
    ("no_such_study", "study: cannot import the module 'no_such_study'"),
    ("3", "study: expected a module name such as 'mypackage.my_study', got 3")])
def test_a_study_that_names_nothing_is_one_line(isolated, capsys, study, message):
    (isolated / "bad.yaml").write_text(
        f"name: bad\nstudy: {study}\ntask: {{name: shift-test}}\n"
        "models: [{label: TNP, name: tnp}]\n")
    assert main(["experiment", "bad.yaml", "--out", "runs/bad"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("approxeq experiment: error: ") and message in err[-1]
    assert "Traceback" not in "".join(err)
