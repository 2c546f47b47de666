"""The GPU check: what must run the moment a CUDA GPU is lent, in under 8 minutes, as one JSON.

1. The accelerator tests: the tests that skip without CUDA (the model contract's ``device``
   check of every registered model, and ``approxeq eval --device cuda``), run with pytest.
2. One training step (forward, ``np_loss``, backward, AdamW) of every neural-process model of
   the shipped experiments at its paper size (``experiments/configs/*.yaml``, size ``paper``:
   its options, dimensions and training batch size; random inputs with 64 context and 128
   target points per unit of ``dim_x``), in float32 and bf16 (``torch.autocast``), with
   ``torch.compile`` off and on: median step time and peak memory
   (``torch.cuda.max_memory_allocated`` above the memory in use before the first step).
   Experiments whose models are not neural processes (graphs, n-body, images) are listed under
   ``not_covered`` with the reason.

Between the two, the goals (``gpu_goals.py``, ``--goals-budget-s``, 150 s by default): the
TE-TNP's training step against the TNP's at 1,000 context points, peak memory of one forward
call of every model on the large-context case, and peak memory against the context size at a
fixed key block, each with a verdict (met, not met, not measured).

Every part runs within a time budget: the goals and the steps run in worker processes, the
steps one model of each kind first (eager, then compiled), then the other variants, and
whatever the budget leaves out is marked ``skipped`` with the reason, so the JSON is always
complete. Without CUDA it prints
one line and exits 2. ``--device cpu --tiny`` runs the same code on small models on the CPU
(the format check of the tests). ``benchmarks/gpu_check.sh`` is the entry point on a fresh
machine.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"
SCHEMA = "approxeq-gpu-check/2"
RESULT_MARKER = "@@GPU_CHECK@@ "
NEEDS_GPU = "gpu_check: needs a CUDA GPU and found none ({why}); nothing was run"
#: the tests that skip without CUDA (pytest ``-k`` over these files)
ACCELERATOR_TESTS = ["tests/test_contract.py", "tests/test_cli_eval.py"]
ACCELERATOR_SELECT = "device or cuda"
PRECISIONS = ("float32", "bf16")
POINTS = {"n_context": 64, "n_target": 128}  # per unit of dim_x
TINY_BATCH = 2


def cuda_missing() -> str | None:
    """Why there is no usable CUDA device here, or ``None`` if there is one."""
    try:
        import torch
    except ImportError as err:
        return f"torch is not importable: {err}"
    if not torch.cuda.is_available():
        build = torch.version.cuda
        return (f"torch {torch.__version__} sees no CUDA device" if build else
                f"torch {torch.__version__} is a CPU-only build")
    return None


# --------------------------------------------------------------------------------------------
# the plan: every neural-process model of the shipped experiments at its paper size


def plan(tiny: bool, compile_modes: list[bool], only: list[str] | None = None
         ) -> tuple[list[dict[str, Any]], list[dict]]:
    """The step configurations and the experiments not covered; ``only``: these registry
    names alone. Order: one model of each registry name in float32 and bf16, eager then
    compiled, then the other variants (different options of the same names) likewise."""
    from approxeq.experiments import experiment_names, load_named_experiment
    from approxeq.np import available_models

    registry = set(available_models())
    models: dict[str, dict[str, Any]] = {}
    not_covered = []
    for name in experiment_names():
        config = load_named_experiment(name, "paper")
        foreign = sorted({m.name for m in config.models} - registry)
        if foreign:
            not_covered.append({"experiment": name, "reason": f"models {foreign} are not "
                                "neural processes of approxeq.np's registry; their step "
                                "needs the experiment's own data"})
            continue
        for m in config.models:
            if only and m.name not in only:
                continue
            key = json.dumps([m.name, m.options, config.task.dim_x, config.task.dim_y],
                             sort_keys=True)
            models.setdefault(key, {
                "experiment": name, "label": m.label, "model": m.name, "options": m.options,
                "dim_x": config.task.dim_x, "dim_y": config.task.dim_y,
                "batch": TINY_BATCH if tiny else m.train.batch_size})
    # one model of each registry name first: a short budget still covers every kind
    firsts, rest, seen = [], [], set()
    for m in models.values():
        (rest if m["model"] in seen else firsts).append(m)
        seen.add(m["model"])
    if tiny:
        firsts, rest = _tiny(firsts), []
    # one model of each kind eager, then compiled, then the other variants: a compilation
    # takes tens of seconds, and the budget should see every kind of model compiled first
    configs = [{**m, "precision": p, "compile": c} for group in (firsts, rest)
               for c in compile_modes for p in PRECISIONS for m in group]
    return configs, not_covered


def _tiny(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models at the contract suite's small options (the CPU format check)."""
    from approxeq.testing.specs import CONTRACT_SPECS

    out = []
    for m in models:
        spec = CONTRACT_SPECS.get(m["model"])
        small = dict(spec.options) if spec is not None else {}
        if m["options"].get("approximate"):
            small.update(approximate=True, **dict(getattr(spec, "approximate_options", {})))
        out.append({**m, "options": small, "paper_options": m["options"]})
    return out


# --------------------------------------------------------------------------------------------
# the worker: one process runs the configurations in order and prints one line per result


def time_step(config: dict[str, Any], device: str, steps: int, max_s: float) -> dict[str, Any]:
    """Median time and peak memory of one training step of ``config``."""
    import torch

    from approxeq.np import Batch, build_model
    from approxeq.train.speed import StepRunner

    torch.manual_seed(0)
    dim_x, dim_y, b = config["dim_x"], config["dim_y"], config["batch"]
    model = build_model(config["model"], dim_x, dim_y, **config["options"]).to(device).train()
    gen = torch.Generator().manual_seed(0)

    def points(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = 4 * torch.rand(b, n * dim_x, dim_x, generator=gen) - 2
        return x.to(device), torch.randn(b, n * dim_x, dim_y, generator=gen).to(device)

    batch = Batch(*points(POINTS["n_context"]), *points(POINTS["n_target"]))
    runner = StepRunner(model, torch.device(device), precision=config["precision"],
                        compile=config["compile"])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    cuda = device.startswith("cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        runner.update(runner.loss(batch), opt, model.parameters(), None)
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    t0 = time.perf_counter()
    step()  # the first step: compilation, lazy initialisation, the optimiser's state
    first_s = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < steps and (not times or sum(times) / 1000 < max_s):
        t = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - t))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
    return {"status": "ok", "median_ms": statistics.median(times), "times_ms": times,
            "first_step_s": first_s, "peak_mib": peak,
            "params": sum(p.numel() for p in model.parameters())}


def worker(path: str, device: str, steps: int, max_s: float) -> None:
    """Run the configurations of ``path`` in order: training steps, or the goals'
    configurations (``kind`` ``goal-*``, :func:`gpu_goals.run_config`)."""
    for i, config in enumerate(json.loads(Path(path).read_text())):
        try:
            if config.get("kind", "step").startswith("goal-"):
                import gpu_goals

                result = gpu_goals.run_config(config)
            else:
                result = time_step(config, device, steps, max_s)
        except Exception as err:  # noqa: BLE001 -- recorded, the check goes on
            result = {"status": "error", "error": f"{type(err).__name__}: {str(err)[:300]}"}
        print(RESULT_MARKER + json.dumps({"index": i, **result}), flush=True)


def run_in_worker(configs: list[dict[str, Any]], args: argparse.Namespace, deadline: float,
                  scratch: Path) -> list[dict[str, Any]]:
    """Every configuration's result; a worker killed at the deadline (or crashed) leaves the
    rest ``skipped``, and a crash restarts the worker after the configuration it was on."""
    results: list[dict[str, Any] | None] = [None] * len(configs)
    start = 0
    before = "the time budget ran out before it started"
    while start < len(configs) and time.monotonic() < deadline - 5:
        todo = scratch / "configs.json"
        todo.write_text(json.dumps(configs[start:]))
        cmd = [sys.executable, __file__, "--worker", str(todo), "--device", args.device,
               "--steps", str(args.steps), "--step-seconds", str(args.step_seconds)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(),
                                 timeout=max(1.0, deadline - time.monotonic())).stdout
            why = "the worker process stopped"
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            why = "the time budget ran out"
        done = [json.loads(line[len(RESULT_MARKER):]) for line in out.splitlines()
                if line.startswith(RESULT_MARKER)]
        for r in done:
            results[start + r.pop("index")] = r
        nxt = start + len(done)
        if nxt < len(configs) and why == "the worker process stopped":
            results[nxt] = {"status": "error", "error": "the worker process died on it"}
            nxt += 1
        if why == "the time budget ran out":
            if nxt < len(configs):
                results[nxt] = {"status": "skipped",
                                "error": "the time budget ran out before it finished"}
            break
        start = nxt
    return [{**c, **(r or {"status": "skipped", "error": before})}
            for c, r in zip(configs, results)]


# --------------------------------------------------------------------------------------------
# the accelerator tests


def pytest_counts(output: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, "skipped": n, "errors": n}`` from pytest's summary line."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output):
        key = "errors" if word.startswith("error") else word
        if key in counts:
            counts[key] = int(n)
    return counts


def run_tests(budget_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           "-k", ACCELERATOR_SELECT, *ACCELERATOR_TESTS]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(),
                              timeout=budget_s)
        out, status = proc.stdout + proc.stderr, ("passed" if proc.returncode == 0 else
                                                  "failed")
        if "No module named pytest" in out:
            status = "unavailable"
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        status = "timeout"
    return {"status": status, "command": cmd[1:], "seconds": time.monotonic() - t0,
            **pytest_counts(out), "tail": out[-3000:]}


# --------------------------------------------------------------------------------------------


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__,
                            "cuda_build": torch.version.cuda, "python": sys.version.split()[0]}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(name=props.name, capability=list(torch.cuda.get_device_capability(device)),
                    total_memory_mib=props.total_memory / 2**20)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    p.add_argument("--tiny", action="store_true", help="small models (the CPU format check)")
    p.add_argument("--budget-s", type=float, default=420.0, help="all parts together")
    p.add_argument("--tests-budget-s", type=float, default=120.0, help="the tests' share")
    p.add_argument("--skip-tests", action="store_true", help="no accelerator tests")
    p.add_argument("--goals-budget-s", type=float, default=150.0, help="the goals' share")
    p.add_argument("--skip-goals", action="store_true", help="no goals part")
    p.add_argument("--compile", choices=("both", "off", "on"), default="both")
    p.add_argument("--only", nargs="+", metavar="MODEL", help="these registry names alone")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--step-seconds", type=float, default=2.0, help="timed seconds at most")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _env() -> dict[str, str]:
    """The environment of the child processes: this checkout's package first."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + (os.pathsep + path if path else "")}


def run_goals(args: argparse.Namespace, deadline: float, scratch: Path) -> dict[str, Any]:
    """The goals part (``gpu_goals.py``) within its budget and what is left of the whole;
    never fatal: a failure of the part itself is recorded."""
    try:
        import gpu_goals

        if args.skip_goals:
            return gpu_goals.skipped("--skip-goals")
        budget = min(args.goals_budget_s, deadline - time.monotonic())
        return gpu_goals.run_goals(
            args.device, args.tiny, budget, time.monotonic,
            lambda configs, end: run_in_worker(configs, args, end, scratch))
    except Exception as err:  # noqa: BLE001 -- recorded, the check goes on
        return {"status": "error", "error": f"{type(err).__name__}: {str(err)[:300]}",
                "verdicts": {}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))  # this checkout's package, whatever is installed
    if args.worker:
        worker(args.worker, args.device, args.steps, args.step_seconds)
        return 0
    t0, started = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    deadline = t0 + args.budget_s
    if args.device.startswith("cuda") and (why := cuda_missing()) is not None:
        print(NEEDS_GPU.format(why=why), file=sys.stderr)
        return 2
    if args.device != "cpu" and not args.device.startswith("cuda"):
        print(f"gpu_check: --device: expected cuda[:i] or cpu, got {args.device!r}",
              file=sys.stderr)
        return 1
    from approxeq.files import write_json_atomic

    modes = {"both": [False, True], "off": [False], "on": [True]}[args.compile]
    try:
        configs, not_covered = plan(args.tiny, modes, args.only)
    except ImportError as err:  # the experiment files need PyYAML
        configs, not_covered = [], [{"experiment": "*", "reason": f"cannot read the "
                                     f"experiment files: {err}"}]
    tests_budget = min(args.tests_budget_s, args.budget_s / 2)
    tests = ({"status": "skipped", "error": "--skip-tests"} if args.skip_tests else
             {"status": "skipped", "error": "the time budget ran out before it started"}
             if tests_budget < 1 else run_tests(tests_budget))
    scratch = args.out.parent / f".{args.out.name}.work"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        goals = run_goals(args, deadline, scratch)
        steps = run_in_worker(configs, args, deadline, scratch)
    finally:
        for f in scratch.glob("*"):
            f.unlink()
        scratch.rmdir()
    record = {"schema": SCHEMA, "command": [Path(sys.argv[0]).name, *(argv or sys.argv[1:])],
              "started_utc": started,
              "tiny": args.tiny, "budget_s": args.budget_s, "machine": device_info(args.device),
              "tests": tests, "goals": goals, "steps": steps, "not_covered": not_covered,
              "seconds": time.monotonic() - t0}
    write_json_atomic(args.out, record)
    ok = sum(s["status"] == "ok" for s in steps)
    for part, line in goals.get("verdicts", {}).items():
        print(f"gpu_check: goal {part}: {line}")
    print(f"gpu_check: tests {tests['status']}; {ok}/{len(steps)} step configurations timed; "
          f"wrote {args.out}")
    return 0 if tests["status"] in ("passed", "skipped") and ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
