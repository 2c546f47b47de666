"""benchmarks/gpu_check.sh and gpu_check.py on a machine without a GPU: the refusal (one line,
exit 2, nothing written) and, with ``--device cpu --tiny``, the JSON the GPU run writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _load_module():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return gpu_check


@no_gpu
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("nvidia-smi") is not None
                    or Path("/dev/nvidia0").exists(), reason="needs bash and no NVIDIA driver")
def test_the_shell_script_refuses_without_a_gpu(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stdout == ""
    assert proc.stderr.startswith("gpu_check: needs a CUDA GPU and found none")
    assert not out.exists()


@no_gpu
def test_the_python_part_refuses_without_a_gpu(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True,
                          text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0
    assert "needs a CUDA GPU and found none" in proc.stderr and not out.exists()


def test_pytest_summary_counts():
    counts = _load_module().pytest_counts("3 passed, 16 skipped, 1 failed, 2 errors in 9.1s")
    assert counts == {"passed": 3, "failed": 1, "skipped": 16, "errors": 2}


def test_the_cpu_tiny_run_writes_the_json_of_the_gpu_run(tmp_path):
    out = tmp_path / "results" / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny",
                           "--skip-tests", "--compile", "off", "--only", "tnp", "convcnp",
                           "--steps", "1", "--step-seconds", "0.1", "--out", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["schema"] == "approxeq-gpu-check/1" and record["tiny"] is True
    assert {"command", "started_utc", "budget_s", "machine", "tests", "steps", "not_covered",
            "seconds"} <= set(record)
    assert record["tests"]["status"] == "skipped"
    steps = record["steps"]
    assert {(s["model"], s["precision"], s["compile"]) for s in steps} == {
        (m, p, False) for m in ("tnp", "convcnp") for p in ("float32", "bf16")}
    for s in steps:
        assert s["status"] == "ok", s
        assert {"experiment", "label", "options", "dim_x", "dim_y", "batch", "median_ms",
                "times_ms", "first_step_s", "peak_mib", "params"} <= set(s)
        assert s["median_ms"] > 0 and s["params"] > 0
    covered = {c["experiment"] for c in record["not_covered"]}
    assert {"graph8c", "nbody", "pattern"} <= covered and "gp1d" not in covered
    assert not list(out.parent.glob(".*work*"))  # the scratch folder is gone
