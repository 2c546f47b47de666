"""The built wheel ships the experiment configurations: installed (not editable) into a fresh
environment, ``approxeq experiment gp1d`` runs by name from a directory outside the source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_installed_wheel_runs_a_shipped_experiment_by_name(tmp_path):
    pytest.importorskip("yaml")
    pytest.importorskip("setuptools")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # build from a copy, so the checkout gets no build/ or egg-info folders
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "--wheel-dir", str(wheels), str(source)], tmp_path, env)
    (wheel,) = wheels.glob("approxeq-*.whl")

    # A fresh venv; torch, numpy and PyYAML come from this interpreter's site-packages through
    # a .pth file (placed after the venv's own site-packages, so the wheel's approxeq wins).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], tmp_path, env).strip())
    (site / "host-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)], tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import approxeq; print(approxeq.__file__)"], work, env)
    assert str(site) in where, f"approxeq was not imported from the wheel: {where}"
    # the console script the wheel installs, by experiment name
    out = _run([str(venv / "bin" / "approxeq"), "experiment", "gp1d", "--quick",
                "--steps", "5", "--out", "run", "--quiet", "--no-figures",
                "--only", "TNP"], work, env, timeout=600)
    assert "gp1d.yaml" in out
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert set(metrics) == {"TNP", "oracle"}
    assert all({"loglik", "loglik_se", "id", "ood"} <= set(e) for e in metrics.values())
