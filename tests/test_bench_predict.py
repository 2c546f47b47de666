"""The predict benchmark runs at a tiny size (``--smoke``) and writes valid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_predict_benchmark_smoke_writes_json(tmp_path):
    out = tmp_path / "predict.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_predict.py"),
                           "--smoke", "--threads", "1", "--out", str(out), "--models", "cnp",
                           "convcnp", "e-tnp", "--max-memory-mb", "0.01"],
                          check=False, capture_output=True, text=True,
                          timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["benchmark"] == "predict"
    assert [r["model"] for r in record["results"]] == ["cnp", "convcnp", "e-tnp"]
    for r in record["results"]:
        assert r["status"] == "ok", r.get("error")
        assert r["finite"] and r["n_target"] == 9 * 13 and r["n_context"] > 0
        assert r["timing"]["median_ms"] > 0 and r["memory"]["peak_total_mb"] > 0
        assert r["max_memory_mb"] == 0.01
    assert record["extra"]["all_within_limit"] is True
    assert "within 4 GiB" in proc.stdout
