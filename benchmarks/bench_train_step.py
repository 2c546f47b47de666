"""Training-step time and peak memory of the neural-process models.

One training step is a forward pass, the loss (:func:`approxeq.np.np_loss`), the backward pass
and an AdamW step. Every configuration runs in a fresh process, so its peak memory is its own
(peak RSS above the memory in use before the first step on CPU, so it includes the optimiser
state; ``torch.cuda.max_memory_allocated`` on CUDA). One warm-up step on two tasks precedes the
timed steps; timing stops after ``--repeats`` steps, or after ``--budget-s`` seconds once
``--min-repeats`` steps ran.

Configurations (random inputs uniform on ``[-2, 2]^dim_x``, standard-normal outputs; the values
do not change the cost):

- 1-D task, batch 16, 64 context and 128 target points: every registered model at its default
  (paper) size, and the approximately equivariant versions ``te-tnp:approx``,
  ``te-pt-tnp:approx`` and ``convcnp:approx`` (``approximate=True``).
- 2-D task, batch 16, 128 context and 256 target points: ``tnp``, ``pt-tnp``, ``te-tnp``,
  ``te-pt-tnp`` and ``convcnp`` with ``points_per_unit=8`` (its default for a 2-D ``conv`` CNN:
  a 49 x 49 grid over ``[-2, 2]^2`` with the default 8-cell margin; the 1-D default is 16,
  an 81-point grid).

Run from the repository root::

    python benchmarks/bench_train_step.py
    python benchmarks/bench_train_step.py --models te-tnp convcnp --repeats 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: find common.py

import common  # noqa: E402

TASKS = {1: {"batch": 16, "n_context": 64, "n_target": 128},
         2: {"batch": 16, "n_context": 128, "n_target": 256}}
APPROXIMATE_1D = ("te-tnp", "te-pt-tnp", "convcnp")
MODELS_2D = ("tnp", "pt-tnp", "te-tnp", "te-pt-tnp", "convcnp")
#: options of the 2-D models beyond their defaults (stated, so the table says what ran)
OPTIONS_2D = {"convcnp": {"points_per_unit": 8}}
SMOKE_TASK = {"batch": 2, "n_context": 8, "n_target": 8}
#: smoke runs: models of a few hundred parameters (models not listed run at their defaults)
SMOKE_OPTIONS = {
    "cnp": {"width": 16, "num_layers": 1},
    "tnp": {"width": 16, "num_layers": 1, "num_heads": 2},
    "pt-tnp": {"width": 16, "num_layers": 1, "num_heads": 2, "num_pseudo_tokens": 4},
    "te-tnp": {"width": 16, "num_layers": 1, "num_heads": 2},
    "te-pt-tnp": {"width": 16, "num_layers": 1, "num_heads": 2, "num_pseudo_tokens": 4},
    "convcnp": {"channels": 4, "num_layers": 1},
    "relaxed-convcnp": {"channels": 4, "num_layers": 1},
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_step.json"
LEARNING_RATE = 5e-4


# --------------------------------------------------------------------------------------------
# worker


def run_train_step(config: dict[str, Any]) -> dict[str, Any]:
    """Time and peak memory of one AdamW training step of ``config['model']``."""
    import torch

    from approxeq.np import Batch, build_model, np_loss

    device = common.worker_setup(config)
    dim_x = config["dim_x"]
    try:
        model = build_model(config["model"], dim_x, 1, **config["options"]).to(device).train()
    except ValueError as exc:
        if str(exc).startswith("dim_x"):
            return {"status": "unsupported", "error": str(exc)}
        raise
    gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
    xc, yc = common.random_inputs(config["batch"], config["n_context"], dim_x, 1, gen, device)
    xt, yt = common.random_inputs(config["batch"], config["n_target"], dim_x, 1, gen, device)
    batch = Batch(xc, yc, xt, yt)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)

    # First-call costs (thread pools, lazy initialisation, the optimiser's state) do not depend
    # on the batch size, so warm up on two tasks: a full-size warm-up step would add most of a
    # minute to the slowest configurations.
    small = Batch(xc[:2], yc[:2], xt[:2], yt[:2])

    def step(tasks: Batch = batch) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss = np_loss(model, tasks)
        loss.backward()
        optimiser.step()

    memory = common.PeakMemory(device)
    memory.start()
    timing = common.time_calls(step, warmup=config["warmup"], repeats=config["repeats"],
                               min_repeats=config["min_repeats"], budget_s=config["budget_s"],
                               device=device, warmup_fn=lambda: step(small))
    out = {"timing": timing, "memory": memory.stop(),
           "num_parameters": sum(p.numel() for p in model.parameters()),
           "tasks_per_s": config["batch"] / (timing.median_ms / 1000.0)}
    if hasattr(model, "points_per_unit"):
        out["grid"] = grid_shape(model, xc, xt)
    return out


def grid_shape(model, xc, xt) -> list[int] | None:
    """The internal grid of a ConvCNP on this task (``None`` if the model has no such grid)."""
    from approxeq.nn.setconv import lattice_grid

    encoder = getattr(model, "encoder", None)
    net = getattr(encoder, "net", None)
    if encoder is None or net is None:
        return None
    axes = lattice_grid([xc, xt], encoder.points_per_unit, encoder.margin,
                        multiple=net.grid_multiple)
    return [len(a) for a in axes]


# --------------------------------------------------------------------------------------------
# driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None,
                   help="model names (all their variants) or labels such as te-tnp:approx "
                        "(default: all)")
    p.add_argument("--dims", nargs="+", type=int, default=[1, 2], choices=[1, 2],
                   help="tasks to run (default 1 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps at most (default 5)")
    p.add_argument("--min-repeats", type=int, default=3, help="timed steps at least (default 3)")
    p.add_argument("--budget-s", type=float, default=10.0,
                   help="stop timing a configuration after this many seconds, once "
                        "--min-repeats steps ran (default 10)")
    p.add_argument("--batch", type=int, default=None, help="tasks per step (default: the task's)")
    p.add_argument("--context", type=int, default=None,
                   help="context points per task (default: the task's)")
    p.add_argument("--targets", type=int, default=None,
                   help="target points per task (default: the task's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--timeout-s", type=float, default=600.0,
                   help="give up on a configuration after this long (default 600)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--smoke", action="store_true",
                   help="tiny models and tasks, all in one worker process (checks the plumbing)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = args.min_repeats = 1
    if args.min_repeats > args.repeats:
        p.error(f"--min-repeats ({args.min_repeats}) must not exceed --repeats ({args.repeats})")
    return args


def model_variants(dim_x: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, registry name, options)`` of every configuration of the ``dim_x``-D task."""
    from approxeq.np import available_models

    if dim_x == 1:
        variants = [(name, name, {}) for name in available_models()]
        variants += [(f"{name}:approx", name, {"approximate": True}) for name in APPROXIMATE_1D]
        return sorted(variants, key=lambda v: v[0])
    return [(name, name, dict(OPTIONS_2D.get(name, {}))) for name in MODELS_2D]


def select(label: str, name: str, wanted: list[str] | None) -> bool:
    return wanted is None or label in wanted or name in wanted


def build_configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = []
    for dim_x in args.dims:
        task = dict(SMOKE_TASK if args.smoke else TASKS[dim_x])
        for key, value in (("batch", args.batch), ("n_context", args.context),
                           ("n_target", args.targets)):
            if value is not None:
                task[key] = value
        for label, name, options in model_variants(dim_x):
            if not select(label, name, args.models):
                continue
            if args.smoke:
                options = {**options, **SMOKE_OPTIONS.get(name, {})}
            configs.append({"label": label, "model": name, "options": options, "dim_x": dim_x,
                            **task, "device": args.device, "threads": args.threads,
                            "warmup": 1, "repeats": args.repeats,
                            "min_repeats": args.min_repeats, "budget_s": args.budget_s})
    if args.models is not None:
        known = {c["label"] for c in configs} | {c["model"] for c in configs}
        unknown = sorted(set(args.models) - known)
        if unknown:
            raise SystemExit(f"--models: no configuration named {', '.join(unknown)}")
    return configs


def results_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        ok = r.get("status") == "ok"
        rows.append([r["label"], r["dim_x"], r["timing"]["median_ms"] if ok else None,
                     r["timing"]["iqr_ms"] if ok else None,
                     r["timing"]["repeats"] if ok else None,
                     r["memory"]["peak_mb"] if ok else None,
                     r["tasks_per_s"] if ok else None,
                     r.get("num_parameters"), "ok" if ok else r.get("status")])
    return common.format_table(rows, ["model", "dim_x", "step ms (median)", "IQR ms", "steps",
                                      "peak MiB", "tasks/s", "parameters", "status"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run_train_step)
        return 0
    configs = build_configs(args)
    record = common.RunRecord(
        benchmark="train_step", command=common.command_line(),
        machine=common.machine_info(args.device) | {"torch_threads": args.threads},
        settings=common.settings_of(args),
        extra={"optimiser": f"AdamW(lr={LEARNING_RATE})", "tasks": TASKS,
               "options_2d": OPTIONS_2D})
    if args.smoke:
        record.results = common.run_worker(__file__, configs, threads=args.threads,
                                           timeout_s=args.timeout_s)
    else:
        for config in configs:
            (result,) = common.run_worker(__file__, [config], threads=args.threads,
                                          timeout_s=args.timeout_s)
            record.results.append(result)
            ok = result.get("status") == "ok"
            print(f"  {config['label']:>18} {config['dim_x']}-D: " + (
                f"{result['timing']['median_ms']:.1f} ms, peak {result['memory']['peak_mb']:.0f}"
                f" MiB" if ok else f"{result.get('status')}: {result.get('error')}"), flush=True)
    record.finish()
    print()
    print(results_table(record.results))
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    return 1 if any(r.get("status") in ("error", "timeout") for r in record.results) else 0


if __name__ == "__main__":
    sys.exit(main())
