"""The benchmark scripts run at a tiny size (``--smoke``) and write valid JSON; their helpers
time, measure and fit what they claim to."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load_common():
    spec = importlib.util.spec_from_file_location("approxeq_bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


common = _load_common()


def _run_script(name: str, out: Path, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / name), "--smoke", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def _check_record(record: dict, benchmark: str) -> None:
    assert record["benchmark"] == benchmark
    for key in ("cpu_count", "torch_version", "torch_threads", "device"):
        assert key in record["machine"]
    assert record["load_average_start"] is None or len(record["load_average_start"]) == 3
    assert record["finished_utc"] is not None


def _check_measured(result: dict) -> None:
    assert result["status"] == "ok", result.get("error")
    t = result["timing"]
    assert t["median_ms"] > 0 and t["iqr_ms"] >= 0 and t["repeats"] == len(t["times_ms"]) >= 1
    assert result["memory"]["peak_mb"] >= 0 and result["memory"]["peak_total_mb"] > 0


def test_train_step_smoke_writes_json(tmp_path):
    record = _run_script("bench_train_step.py", tmp_path / "train.json",
                         "--models", "cnp", "te-tnp", "convcnp")
    _check_record(record, "train_step")
    labels = {(r["label"], r["dim_x"]) for r in record["results"]}
    assert labels == {("cnp", 1), ("te-tnp", 1), ("te-tnp:approx", 1), ("convcnp", 1),
                      ("convcnp:approx", 1), ("te-tnp", 2), ("convcnp", 2)}
    for r in record["results"]:
        _check_measured(r)
        assert math.isclose(r["tasks_per_s"], r["batch"] / (r["timing"]["median_ms"] / 1000))


def test_memory_smoke_covers_every_model_and_the_case(tmp_path):
    models = ("cnp", "tnp", "pt-tnp", "lps-tnp", "te-tnp", "te-pt-tnp", "e-tnp", "convcnp",
              "relaxed-convcnp", "equivcnp")
    record = _run_script("bench_memory.py", tmp_path / "memory.json")
    _check_record(record, "memory")
    assert {(r["model"], r["n_context"]) for r in record["results"]} == \
        {(m, n) for m in models for n in (8, 16)}
    for r in record["results"]:
        _check_measured(r)
    assert {f["model"] for f in record["extra"]["fits"]} == set(models)
    case = _run_script("bench_memory.py", tmp_path / "case.json", "--case", "--models", "e-tnp")
    (result,) = case["results"]
    _check_measured(result)
    assert (result["batch"], result["n_context"], result["limit_gb"]) == (1, 16, 6.0)


def test_attention_kernel_smoke_pairs_each_new_kernel_with_its_old_one(tmp_path):
    record = _run_script("bench_attention_kernel.py", tmp_path / "kernel.json")
    _check_record(record, "attention_kernel")
    (result,) = record["results"]
    assert result["status"] == "ok", result.get("error")
    assert set(result["new_over_old"]) == {"tnp/tnp:unfused", "te-tnp/te-tnp:whole",
                                           "e-tnp/e-tnp:whole"}
    assert all(t > 0 for t in result["step_ms"].values())


def test_context_scaling_smoke_writes_json(tmp_path):
    record = _run_script("bench_context_scaling.py", tmp_path / "scaling.json", "--headline")
    _check_record(record, "context_scaling")
    sizes = {(r["model"], r["n_context"]) for r in record["results"]}
    assert sizes == {(m, n) for m in ("te-tnp", "te-pt-tnp", "convcnp") for n in (8, 16)}
    for r in record["results"]:
        _check_measured(r)
    assert {f["model"] for f in record["extra"]["exponents"]} == {"te-tnp", "te-pt-tnp", "convcnp"}
    headline = record["extra"]["headline"]
    _check_measured(headline["result"])
    r = headline["result"]
    heads, width = r["attention"]["heads"], r["attention"]["logit_width"]
    expected = r["batch"] * heads * r["n_target"] * r["n_context"] * width * 4 / 2**20
    assert math.isclose(headline["materialised_pairwise_mb"], expected)


def test_quartiles_match_numpy(gen):
    import torch

    values = torch.rand(11, generator=gen).tolist()
    q25, q50, q75 = common.quartiles(values)
    assert np.allclose([q25, q50, q75], np.percentile(values, [25, 50, 75]))


def test_loglog_slope_recovers_the_exponent(gen):
    import torch

    exponent = float(torch.rand((), generator=gen)) * 3
    sizes = [64 * 2**i for i in range(6)]
    times = [0.3 * n**exponent for n in sizes]
    assert math.isclose(common.loglog_slope(sizes, times), exponent, rel_tol=1e-9)
    assert common.loglog_slope([64, 64], [1.0, 2.0]) is None


def test_time_calls_counts_warmup_repeats_and_budget():
    calls = {"fn": 0, "warm": 0}

    def fn():
        calls["fn"] += 1

    def warm():
        calls["warm"] += 1

    t = common.time_calls(fn, warmup=2, repeats=4, warmup_fn=warm)
    assert calls == {"fn": 4, "warm": 2} and t.repeats == 4 and t.warmup == 2
    assert t.q25_ms <= t.median_ms <= t.q75_ms
    # A budget already spent by the first call stops after min_repeats calls.
    t = common.time_calls(fn, warmup=0, repeats=10, min_repeats=3, budget_s=0.0)
    assert t.repeats == 3


def test_peak_memory_sees_an_allocation():
    memory = common.PeakMemory("cpu")
    memory.start()
    block = np.ones(48 * 2**20 // 8)  # 48 MiB, touched
    peak = memory.stop()
    del block
    assert peak["peak_mb"] >= 40


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "out.json"
    common.write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        common.write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_vs_neuralprocesses_smoke_equal_parameters(tmp_path):
    pytest.importorskip("neuralprocesses")
    record = _run_script("bench_vs_neuralprocesses.py", tmp_path / "vs.json", "--threads", "1")
    _check_record(record, "vs_neuralprocesses")
    assert {r["dim_x"] for r in record["results"]} == {1, 2}
    for r in record["results"]:
        assert r["status"] == "ok", r.get("error")
        params = r["num_parameters"]
        assert params["approxeq"] == params["neuralprocesses"] > 0
        for t in r["timing"].values():
            assert t["median_ms"] > 0 and t["repeats"] == len(t["times_ms"]) == 2
        assert r["ratio_of_medians"] > 0 and r["median_pair_ratio"] > 0
        assert r["allocator"] == "keep" and set(r["page_faults_per_step"]) == set(params)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_stops_page_faults_of_reallocated_tensors():
    """Three 4 MiB tensors allocated and freed together, twenty times. With glibc's starting
    threshold held fixed (128 KiB), each is served by fresh pages from the kernel (about 3,000
    faults per round; glibc's default moves its threshold, and whether it then faults depends on
    the heap's layout); once freed memory is kept, the heap serves them and nothing faults."""
    code = f"""
import ctypes, ctypes.util, importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("c", {str(BENCH / "common.py")!r})
c = importlib.util.module_from_spec(spec); sys.modules["c"] = c; spec.loader.exec_module(c)
def churn():
    before = c.minor_page_faults()
    for _ in range(20):
        xs = [torch.ones(1 << 20) for _ in range(3)]
        del xs
    return c.minor_page_faults() - before
assert ctypes.CDLL(ctypes.util.find_library("c")).mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
fresh_pages = churn()
assert c.keep_freed_memory()
churn()
print(fresh_pages, churn())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh_pages, kept = map(int, proc.stdout.split())
    assert fresh_pages > 10_000 and kept < 100


def test_data_smoke_writes_json(tmp_path):
    record = _run_script("bench_data.py", tmp_path / "data.json")
    _check_record(record, "data")
    (r,) = record["results"]
    assert r["status"] == "ok", r.get("error")
    assert r["sample_ms"] > 0 and r["step_ms"] > 0 and r["sample_float32_ms"] > 0
    assert r["sample_float32_over_step"] == r["sample_float32_ms"] / r["step_ms"]
    for part in ("covariance_float32", "factorise_float32", "factorise_float32_subnormals",
                 "factorise_float64_cholesky_ex", "factorise_float64_default"):
        assert r[f"{part}_ms"] > 0 and len(r["raw"][f"{part}_ms"]) == len(r["raw"]["step_ms"])
    assert r["factorise_float32_over_step"] == r["factorise_float32_ms"] / r["step_ms"]
    assert len(r["raw"]["serial_ms"]) == len(r["raw"]["prefetch_ms"]) == 2


def test_te_flops_smoke_counts_flops(tmp_path):
    record = _run_script("bench_te_flops.py", tmp_path / "te.json")
    _check_record(record, "te_flops")
    (r,) = record["results"]
    assert r["status"] == "ok", r.get("error")
    assert r["flops"]["te-tnp"] > r["flops"]["tnp"] > 0
    assert r["gflops_per_s"]["tnp"] > 0 and r["step_ratio"] > 0
