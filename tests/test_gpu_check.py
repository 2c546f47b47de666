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

from approxeq.np import available_models

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _load_module(name: str = "gpu_check"):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


GOAL_PARTS = ("te_vs_tnp", "memory_vs_context", "large_context")
VERDICTS = {"met", "not met", "not measured"}


def _check_goals_schema(goals: dict, status: str) -> None:
    """The ``goals`` object: every part with its goal, status, verdict and one-line summary."""
    assert {"budget_s", "tiny", "seconds", "verdicts", *GOAL_PARTS} <= set(goals)
    assert set(goals["verdicts"]) == set(GOAL_PARTS)
    for part in GOAL_PARTS:
        g = goals[part]
        assert {"goal", "status", "verdict", "line"} <= set(g), part
        assert g["status"] == status, (part, g)
        assert g["verdict"] in VERDICTS and "\n" not in g["line"]
        assert g["line"] == goals["verdicts"][part] and g["verdict"] in g["line"]


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
    assert record["schema"] == "approxeq-gpu-check/2" and record["tiny"] is True
    assert {"command", "started_utc", "budget_s", "machine", "tests", "goals", "steps",
            "not_covered", "seconds"} <= set(record)
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
    goals = record["goals"]
    _check_goals_schema(goals, "ok")
    te = goals["te_vs_tnp"]
    assert set(te["step_ms"]) == {"te-tnp", "tnp"} and te["setup"]["batch"] == 1
    assert te["ratio"] == pytest.approx(te["step_ms"]["te-tnp"] / te["step_ms"]["tnp"])
    sweep = goals["memory_vs_context"]
    assert [p["n_context"] for p in sweep["points"]] == [8, 16, 32]
    assert all(p["peak_mib"] >= 0 for p in sweep["points"])
    assert sweep["loglog_slope"] is not None and sweep["setup"]["model"] == "te-tnp"
    case = [m["model"] for m in goals["large_context"]["models"]]
    assert sorted(case) == sorted(available_models()) and case[-2:] == ["te-tnp", "e-tnp"]
    assert all(m["within_limit"] is True for m in goals["large_context"]["models"])


def test_an_exhausted_budget_marks_every_part_skipped(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny",
                           "--skip-tests", "--compile", "off", "--only", "tnp", "--budget-s",
                           "0", "--out", str(out)], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert proc.returncode == 1, proc.stderr  # nothing was timed
    record = json.loads(out.read_text())
    _check_goals_schema(record["goals"], "skipped")
    for part in GOAL_PARTS:
        assert record["goals"][part]["verdict"] == "not measured"
    models = record["goals"]["large_context"]["models"]
    assert models and all(m["status"] == "skipped" and "budget" in m["error"] for m in models)
    assert record["steps"] and all(s["status"] == "skipped" for s in record["steps"])


def test_the_goal_parts_run_in_order_within_their_shares_of_the_budget():
    gpu_goals = _load_module("gpu_goals")
    clock, deadlines = [100.0], []

    def run(configs, deadline):  # every part takes 50 s and is cut off at its deadline
        deadlines.append((configs[0]["kind"], deadline))
        clock[0] += 50
        return [{**c, "status": "skipped", "error": "the time budget ran out"}
                for c in configs]

    goals = gpu_goals.run_goals("cpu", True, 100.0, lambda: clock[0], run)
    # a fifth of the budget each for the first two parts, what is left for the last
    assert deadlines == [("goal-step", 120.0), ("goal-forward", 170.0), ("goal-forward", 200.0)]
    _check_goals_schema(goals, "skipped")
    assert goals["seconds"] == 150.0


def _case(model: str, status: str = "ok", peak_mib: float = 100.0, error: str = "") -> dict:
    r = {"model": model, "n_context": 7500, "status": status}
    return {**r, "peak_mib": peak_mib, "memory": {"method": "m"}} if status == "ok" else \
        {**r, "error": error}


@pytest.mark.parametrize("results, verdict", [
    ([_case("tnp"), _case("te-tnp", peak_mib=6 * 1024)], "met"),
    ([_case("tnp"), _case("te-tnp", peak_mib=6 * 1024 + 1)], "not met"),
    ([_case("tnp"), _case("e-tnp", "error", error="OutOfMemoryError: CUDA out of memory")],
     "not met"),
    ([_case("tnp", peak_mib=7000), _case("e-tnp", "skipped", error="budget")], "not met"),
    ([_case("tnp"), _case("e-tnp", "skipped", error="the time budget ran out")],
     "not measured"),
    ([_case("tnp"), _case("e-tnp", "error", error="RuntimeError: boom")], "not measured"),
])
def test_the_large_context_verdict(results, verdict):
    judged = _load_module("gpu_goals").judge_large_context(results)
    assert judged["verdict"] == verdict and judged["line"].startswith(verdict + ":")


def _point(n: int, peak_mib: float) -> dict:
    return {"model": "te-tnp", "n_context": n, "status": "ok", "peak_mib": peak_mib,
            "memory": {"peak_mb": peak_mib, "peak_total_mb": peak_mib + 500, "method": "m"}}


@pytest.mark.parametrize("peak, verdict", [
    (lambda n: 200 + 0.01 * n, "met"),  # a fixed tile and per-point arrays
    (lambda n: 1e-5 * n * n, "not met"),  # a quadratic array
])
def test_the_memory_against_context_verdict(peak, verdict):
    judged = _load_module("gpu_goals").judge_memory_vs_context(
        [_point(n, peak(n)) for n in (1000, 2000, 4000)])
    assert judged["verdict"] == verdict
    one = _load_module("gpu_goals").judge_memory_vs_context(
        [_point(1000, 200.0), {"model": "te-tnp", "n_context": 2000, "status": "skipped"}])
    assert one["verdict"] == "not measured"


@pytest.mark.parametrize("te_ms, verdict", [(30.0, "met"), (30.5, "not met")])
def test_the_te_against_tnp_verdict(te_ms, verdict):
    result = {"status": "ok", "step_ms": {"te-tnp": te_ms, "tnp": 10.0},
              "times_ms": {"te-tnp": [te_ms], "tnp": [10.0]}}
    judged = _load_module("gpu_goals").judge_te_vs_tnp([result])
    assert judged["verdict"] == verdict and judged["ratio"] == pytest.approx(te_ms / 10)
    skipped = _load_module("gpu_goals").judge_te_vs_tnp([{"status": "skipped", "error": "x"}])
    assert skipped["verdict"] == "not measured"


def test_skipped_goals_keep_the_schema():
    goals = _load_module("gpu_goals").skipped("--skip-goals")
    _check_goals_schema(goals, "skipped")
    assert all(g["verdict"] == "not measured" for g in (goals[p] for p in GOAL_PARTS))
