"""The goals part of the GPU check (``gpu_check.py``): the goals of the issue "attention at any
context size in bounded memory" that a GPU settles, each with a verdict (``met``, ``not met``
or ``not measured``) and a one-line summary.

1. ``te_vs_tnp``: a training step (forward, ``np_loss``, backward, AdamW) of ``te-tnp`` and
   ``tnp`` at their paper sizes (default ``build_model`` options), 1-D, batch 1, 1,000 context
   and 128 target points, float32, eager, steps interleaved (``bench_attention_kernel.run``):
   the median of each and their ratio. Goal: ratio at most 3.
2. ``memory_vs_context``: peak memory of one forward call of ``te-tnp`` at its paper size on
   1,000, 2,000 and 4,000 context points (500 targets, batch 1, 2-D) with the key block of
   ``bench_memory.py``'s sweep, and the fitted slopes (``bench_memory.fit``). Goal: peak memory
   grows at most linearly in the context (log-log slope at most 1.25; a quadratic array gives 2).
3. ``large_context``: one ``model(xc, yc, xt)`` call in eval mode under ``torch.no_grad()`` of
   every registered model at its paper size on ``bench_memory.py``'s case (4 frames of 7,500
   context and 17,500 target points, 2-D locations; ``bench_memory.run_forward``): peak
   ``torch.cuda.max_memory_allocated`` above what was allocated before the call, and the time.
   Goal: at most 6 GiB each. Cheap models first; the TE-TNP and E-TNP (their logit MLP on 750
   million pairs per layer) last.

The parts run in this order, each in a worker process of ``gpu_check.py`` killed at its share
of the goals' budget (the first two a fifth each, the last what is left), so that a part that
fails or runs out of time is recorded and the rest of the check goes on. ``tiny`` runs the same
code on small models and sizes (the CPU format check).
"""

from __future__ import annotations

import gc
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # find common.py and the benchmarks

import bench_attention_kernel  # noqa: E402
import bench_memory  # noqa: E402

TE_VS_TNP = {"labels": ["te-tnp", "tnp"], "dim_x": 1, "batch": 1, "n_context": 1000,
             "n_target": 128, "warmup": 2, "repeats": 10, "budget_s": 10.0}
TE_VS_TNP_TINY = {**TE_VS_TNP, "n_context": 32, "n_target": 8, "warmup": 1, "repeats": 2,
                  "budget_s": 1.0}
MAX_RATIO = 3.0
SWEEP = {"model": "te-tnp", "contexts": (1000, 2000, 4000), "n_target": bench_memory.TARGETS,
         "batch": 1, "key_block": bench_memory.KEY_BLOCK}
SWEEP_TINY = {**SWEEP, "contexts": (8, 16, 32), "n_target": 8, "key_block": 4}
MAX_SLOPE = 1.25
LIMIT_MIB = 6 * 1024.0
#: the large-context case's most expensive models, in the order they run, after all others
LAST = ("lps-tnp", "te-tnp", "e-tnp")
#: the parts in the order they run, with their shares of the budget (``None``: what is left)
PARTS = (("te_vs_tnp", 0.2), ("memory_vs_context", 0.2), ("large_context", None))
GOALS = {
    "te_vs_tnp": f"a TE-TNP training step at 1,000 context points within {MAX_RATIO:g}x of the "
                 "TNP's (float32, eager, batch 1, 1-D)",
    "memory_vs_context": "peak memory of a te-tnp forward call grows at most linearly in the "
                         f"context size at a fixed key block (log-log slope <= {MAX_SLOPE:g})",
    "large_context": "every model maps 4 frames x (7,500 context, 17,500 targets) in one forward "
                     "call within 6 GiB",
}
#: what a worker result (``{**config, **result}``) keeps in the JSON, per part
KEEP = ("model", "n_context", "status", "error", "peak_mib", "seconds", "params")

Runner = Callable[[list[dict[str, Any]], float], list[dict[str, Any]]]


# --------------------------------------------------------------------------------------------
# the plan and the worker side


def plan(part: str, device: str, tiny: bool) -> list[dict[str, Any]]:
    """The worker configurations of ``part`` (each with ``kind`` for ``gpu_check.worker``)."""
    base = {"device": device, "threads": 1}
    if part == "te_vs_tnp":
        setup = TE_VS_TNP_TINY if tiny else TE_VS_TNP
        options = bench_memory.smoke_options("te-tnp") if tiny else {}
        return [{**base, **setup, "kind": "goal-step", "options": options}]
    forward = {**base, "kind": "goal-forward", "limit_gb": None}
    if part == "memory_vs_context":
        sweep = SWEEP_TINY if tiny else SWEEP
        options = bench_memory.smoke_options(sweep["model"]) if tiny else {}
        return [{**forward, "model": sweep["model"], "batch": sweep["batch"], "n_context": n,
                 "n_target": sweep["n_target"], "key_block": sweep["key_block"],
                 "options": options} for n in sweep["contexts"]]
    if part == "large_context":
        case = bench_memory.SMOKE_CASE if tiny else bench_memory.CASE
        key_block = SWEEP_TINY["key_block"] if tiny else bench_memory.KEY_BLOCK
        return [{**forward, **case, "model": m, "key_block": key_block,
                 "options": bench_memory.smoke_options(m) if tiny else {}}
                for m in case_models()]
    raise ValueError(f"part: expected one of {[p for p, _ in PARTS]}, got {part!r}")


def case_models() -> list[str]:
    """Every registered model, the expensive ones (:data:`LAST`) last, in that order."""
    from approxeq.np import available_models

    names = list(available_models())
    return [m for m in names if m not in LAST] + [m for m in LAST if m in names]


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    """One goal configuration, in the worker process."""
    if config["kind"] == "goal-step":
        import torch

        result = bench_attention_kernel.run(config)
        return {"status": "ok", "step_ms": result["step_ms"], "times_ms": result["times_ms"],
                "float32_matmul_precision": torch.get_float32_matmul_precision()}
    _release(config["device"])  # what an earlier configuration (or its error) left cached
    result = bench_memory.run_forward(config)
    return {"status": "ok", "peak_mib": result["memory"]["peak_mb"],
            "memory": result["memory"], "seconds": result["timing"].median_ms / 1000,
            "params": result["num_parameters"]}


def _release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# the driver side: run the parts under their budgets, then judge each goal


def run_goals(device: str, tiny: bool, budget_s: float, now: Callable[[], float],
              run: Runner) -> dict[str, Any]:
    """Every part within ``budget_s`` from ``now()``; ``run(configs, deadline)`` runs them in a
    worker and returns each one's result (``skipped`` where the deadline came first)."""
    start = now()
    end = start + max(0.0, budget_s)
    goals: dict[str, Any] = {"budget_s": budget_s, "tiny": tiny}
    for part, share in PARTS:
        deadline = end if share is None else min(end, now() + share * budget_s)
        try:
            results = run(plan(part, device, tiny), deadline)
        except Exception as err:  # noqa: BLE001 -- recorded, the check goes on
            results = [{"status": "error",
                        "error": f"{type(err).__name__}: {str(err)[:300]}"}]
        goals[part] = {"status": part_status(results), **JUDGES[part](results)}
        if tiny:  # the plumbing: a verdict on small models says nothing of the goal
            goals[part]["line"] = "tiny sizes, not the goal's: " + goals[part]["line"]
    goals["verdicts"] = {part: goals[part]["line"] for part, _ in PARTS}
    goals["seconds"] = now() - start
    return goals


def part_status(results: list[dict[str, Any]]) -> str:
    """``ok`` (every configuration ran), ``partial`` (some), else the status they share
    (``skipped``: the budget ran out first) or ``error``."""
    statuses = {r.get("status") for r in results}
    if statuses == {"ok"}:
        return "ok"
    if "ok" in statuses:
        return "partial"
    return statuses.pop() if len(statuses) == 1 else "error"


def _failure(results: list[dict[str, Any]]) -> str:
    bad = [r for r in results if r.get("status") != "ok"]
    return "; ".join(f"{r.get('model', '')} {r['status']}: {r.get('error', '')}".strip()
                     for r in bad[:3])


def judge_te_vs_tnp(results: list[dict[str, Any]]) -> dict[str, Any]:
    (r,) = results[:1] or [{"status": "error", "error": "no result"}]
    out: dict[str, Any] = {"goal": GOALS["te_vs_tnp"], "max_ratio": MAX_RATIO,
                           "setup": {k: r[k] for k in ("dim_x", "batch", "n_context",
                                                       "n_target", "options",
                                                       "float32_matmul_precision") if k in r},
                           "error": r.get("error")}
    if r["status"] != "ok":
        return {**out, "verdict": "not measured", "line": f"not measured: {_failure([r])}"}
    te, tnp = r["step_ms"]["te-tnp"], r["step_ms"]["tnp"]
    rounds = [a / b for a, b in zip(r["times_ms"]["te-tnp"], r["times_ms"]["tnp"])]
    ratio = te / tnp
    verdict = "met" if ratio <= MAX_RATIO else "not met"
    return {**out, "step_ms": r["step_ms"], "times_ms": r["times_ms"], "ratio": ratio,
            "ratio_per_round_median": statistics.median(rounds), "verdict": verdict,
            "line": f"{verdict}: te-tnp {te:.3g} ms / tnp {tnp:.3g} ms = {ratio:.3g}x "
                    f"(goal <= {MAX_RATIO:g}x)"}


def judge_memory_vs_context(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if r.get("status") == "ok"]
    fit = bench_memory.fit(ok)[0] if ok else {}
    slope = fit.get("loglog_slope")
    first = results[0] if results else {}
    out = {"goal": GOALS["memory_vs_context"], "max_loglog_slope": MAX_SLOPE,
           "memory_method": _method(ok),
           "setup": {k: first[k] for k in ("model", "batch", "n_target", "key_block",
                                           "options") if k in first},
           "points": [{k: r[k] for k in KEEP if k in r} for r in results],
           "loglog_slope": slope, "mib_per_1000_context": fit.get("mb_per_1000_context")}
    if slope is None:
        return {**out, "verdict": "not measured",
                "line": f"not measured: fewer than two sizes ran ({_failure(results)})"}
    verdict = "met" if slope <= MAX_SLOPE else "not met"
    sizes = "/".join(str(r["n_context"]) for r in ok)
    return {**out, "verdict": verdict,
            "line": f"{verdict}: log-log slope {slope:.2f} over {sizes} context points, "
                    f"{fit['mb_per_1000_context']:.3g} MiB per 1,000 (goal <= {MAX_SLOPE:g})"}


def judge_large_context(results: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for r in results:
        row = {k: r[k] for k in KEEP if k in r}
        if r.get("status") == "ok":
            row["within_limit"] = r["peak_mib"] <= LIMIT_MIB
        elif _out_of_memory(r.get("error", "")):
            row["within_limit"] = False
        rows.append(row)
    first = results[0] if results else {}
    out = {"goal": GOALS["large_context"], "limit_mib": LIMIT_MIB,
           "memory_method": _method([r for r in results if r.get("status") == "ok"]),
           "setup": {k: first[k] for k in ("batch", "n_context", "n_target", "key_block")
                     if k in first} | {"dim_x": 2}, "models": rows}
    over = [r for r in rows if r.get("within_limit") is False]
    missing = [r for r in rows if "within_limit" not in r]
    within = len(rows) - len(over) - len(missing)
    largest = max((r for r in rows if r.get("status") == "ok"), key=lambda r: r["peak_mib"],
                  default=None)
    tail = f"{within}/{len(rows)} models within 6 GiB" + (
        f", largest {largest['model']} {largest['peak_mib'] / 1024:.2f} GiB" if largest else "")
    if over:
        verdict = "not met"
        tail += "; over: " + ", ".join(
            f"{r['model']} " + (f"{r['peak_mib'] / 1024:.2f} GiB" if "peak_mib" in r
                                else "out of memory") for r in over)
    else:
        verdict = "not measured" if missing or not rows else "met"
    if missing:
        tail += "; not measured: " + ", ".join(f"{r.get('model', '?')} ({r['status']})"
                                               for r in missing)
    return {**out, "verdict": verdict, "line": f"{verdict}: {tail}"}


def _method(ok: list[dict[str, Any]]) -> str | None:
    """How peak memory was measured (``bench_memory``'s ``PeakMemory``), or ``None``."""
    return ok[0]["memory"]["method"] if ok and "memory" in ok[0] else None


def _out_of_memory(error: str) -> bool:
    return "out of memory" in error.lower() or "OutOfMemoryError" in error


JUDGES = {"te_vs_tnp": judge_te_vs_tnp, "memory_vs_context": judge_memory_vs_context,
          "large_context": judge_large_context}


def skipped(reason: str) -> dict[str, Any]:
    """The goals object when the part did not run at all (``--skip-goals``)."""
    goals: dict[str, Any] = {"budget_s": 0.0, "tiny": False, "seconds": 0.0}
    for part, _ in PARTS:
        goals[part] = {"goal": GOALS[part], "status": "skipped", "error": reason,
                       "verdict": "not measured", "line": f"not measured: {reason}"}
    goals["verdicts"] = {part: goals[part]["line"] for part, _ in PARTS}
    return goals
