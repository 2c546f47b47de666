"""FLOPs and achieved FLOP rate of a TE-TNP training step against a plain TNP step.

The TE-TNP runs an MLP on every (target, context) pair, so it does more arithmetic than the
TNP; the question here is how fast it does it. Both models (width 32, 2 layers, 4 heads by
default) train on the same random 1-D batch (16 tasks, 32 context and 128 target points) with
AdamW; their steps alternate in one process. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward pass: matrix
products and convolutions only (element-wise work such as activations, softmax and the
optimiser is not counted, so the achieved rates are lower bounds of the work done).

``te-tnp:plain`` is the same TE-TNP (the same weights) with its attention's logit MLP run the
way it was before the split first layer (``TEMultiHeadAttention.split_first_layer = False``),
for a before/after comparison in the same process. One profiled step per model
(``torch.profiler``) gives the share of the step spent in matrix products, against the
element-wise and copying work the FLOP counter does not see.

Run from the repository root::

    python benchmarks/bench_te_flops.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: find common.py

import common  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "te_flops.json"
MODELS = ("tnp", "te-tnp", "te-tnp:plain")
_MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmm_",
               "aten::matmul")


def run(config: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from approxeq.np import Batch, build_model, np_loss

    common.worker_setup(config)
    gen = torch.Generator().manual_seed(0)
    xc, yc = common.random_inputs(config["batch"], config["n_context"], 1, 1, gen, "cpu")
    xt, yt = common.random_inputs(config["batch"], config["n_target"], 1, 1, gen, "cpu")
    batch = Batch(xc, yc, xt, yt)
    opts = {"width": config["width"], "num_layers": config["layers"],
            "num_heads": config["heads"]}
    models = {name: build_model(name, 1, 1, **opts).train() for name in MODELS[:2]}
    plain = build_model("te-tnp", 1, 1, **opts).train()
    plain.load_state_dict(models["te-tnp"].state_dict())
    for module in plain.modules():
        if hasattr(module, "split_first_layer"):
            module.split_first_layer = False
    models["te-tnp:plain"] = plain
    optims = {n: torch.optim.AdamW(m.parameters(), lr=5e-4) for n, m in models.items()}

    def step(name: str) -> None:
        optims[name].zero_grad(set_to_none=True)
        np_loss(models[name], batch).backward()
        optims[name].step()

    flops = {}
    for name, model in models.items():
        counter = FlopCounterMode(display=False)
        with counter:
            np_loss(model, batch).backward()
        flops[name] = counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    times: dict[str, list[float]] = {n: [] for n in MODELS}
    for i in range(config["warmup"] + config["repeats"]):
        for name in (MODELS if i % 2 == 0 else tuple(reversed(MODELS))):
            t0 = time.perf_counter()
            step(name)
            if i >= config["warmup"]:
                times[name].append(1000 * (time.perf_counter() - t0))
    out: dict[str, Any] = {"flops": flops, "step_ms": {}, "gflops_per_s": {}}
    for name in MODELS:
        med = statistics.median(times[name])
        out["step_ms"][name] = med
        out["gflops_per_s"][name] = flops[name] / (med / 1000) / 1e9
    out["times_ms"] = times
    out["parameters"] = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    out["matmul_share"] = {}
    for name in MODELS:
        with torch.profiler.profile() as prof:
            step(name)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        matmul = sum(e.self_cpu_time_total for e in events if e.key in _MATMUL_OPS)
        out["matmul_share"][name] = matmul / total if total else float("nan")
    out["flop_ratio"] = flops["te-tnp"] / flops["tnp"]
    out["step_ratio"] = out["step_ms"]["te-tnp"] / out["step_ms"]["tnp"]
    out["rate_ratio"] = out["gflops_per_s"]["te-tnp"] / out["gflops_per_s"]["tnp"]
    out["plain_over_split"] = statistics.median(
        p / s for p, s in zip(times["te-tnp:plain"], times["te-tnp"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--targets", type=int, default=128)
    p.add_argument("--batch", type=int, default=16, help="tasks per batch")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 step")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run)
        return 0
    small = args.smoke
    config = {"label": "te-tnp vs tnp", "threads": args.threads,
              "batch": 2 if small else args.batch, "n_context": 4 if small else args.context,
              "n_target": 4 if small else args.targets, "width": 8 if small else args.width,
              "layers": 1 if small else args.layers, "heads": 2 if small else args.heads,
              "warmup": 1, "repeats": 1 if small else args.repeats}
    record, r = common.run_one_config(__file__, "te_flops", args, config)
    if r is None:
        return 1
    rows = [[n, r["parameters"][n], r["flops"][n] / 1e9, r["step_ms"][n], r["gflops_per_s"][n],
             100 * r["matmul_share"][n]] for n in MODELS]
    print(common.format_table(rows, ["model", "parameters", "GFLOP per step (fwd+bwd)",
                                     "step ms (median)", "achieved GFLOP/s",
                                     "% of step in matmuls"]))
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    print(f"te-tnp / tnp: FLOPs {r['flop_ratio']:.1f}x, step time {r['step_ratio']:.1f}x, "
          f"achieved FLOP rate {r['rate_ratio']:.2f}x; te-tnp:plain / te-tnp step time "
          f"{r['plain_over_split']:.2f}x (median of interleaved pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
