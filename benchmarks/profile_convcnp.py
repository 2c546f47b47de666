"""Where a ConvCNP training step spends its time (``torch.profiler``), with the current kernels
and with the plain ones they replaced, profiled alternately in one process; with
``--neuralprocesses``, neuralprocesses' step of the same network on the same batches too.

The network and the batches are those of ``bench_vs_neuralprocesses.py`` (the ConvCNP of
neuralprocesses' ``construct_convgnp``, EQ-GP batches of 16). "plain" swaps in the previous
kernels: channels-first convolutions (``conv(h)``, ``torch.cat`` along channels) and set
convolution weights ``exp(-(x - g)^2 / (2 l^2))`` under autograd.

Run from the repository root::

    python benchmarks/profile_convcnp.py --dim 1
    python benchmarks/profile_convcnp.py --dim 1 --neuralprocesses   # needs .[bench]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: find the benches

import bench_vs_neuralprocesses as vs  # noqa: E402

CATEGORIES = (
    ("convolutions (fwd + bwd)", lambda k: "conv" in k),
    ("ReLU (fwd + bwd)", lambda k: "threshold" in k or "clamp_min" in k),
    ("AdamW", lambda k: "Optimizer" in k or k in ("aten::lerp_", "aten::addcdiv_", "aten::sqrt",
                                                 "aten::add_", "aten::div_")),
    ("copies, cat", lambda k: k in ("aten::copy_", "aten::cat", "aten::clone")),
    ("set convolutions, likelihood (element-wise, bmm)",
     lambda k: k in ("aten::exp", "aten::exp_", "aten::pow", "aten::sub", "aten::div",
                     "aten::neg", "aten::bmm", "aten::mul", "aten::masked_fill_", "aten::clamp_",
                     "aten::square", "aten::lt", "aten::sum", "aten::mul_", "aten::log")),
)


def category(key: str) -> str:
    for name, test in CATEGORIES:
        if test(key):
            return name
    return "other (dispatch, Python, small ops)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=1, choices=[1, 2])
    p.add_argument("--steps", type=int, default=8, help="profiled steps per variant and round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=12, help="operators listed for the current code")
    p.add_argument("--allocator", choices=["keep", "default"], default="keep",
                   help="as bench_vs_neuralprocesses.py (default keep: no page faults)")
    p.add_argument("--neuralprocesses", action="store_true",
                   help="profile neuralprocesses' step of the same network too (.[bench])")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import profile

    import approxeq.nn.cnn as cnn
    import approxeq.nn.setconv as setconv
    from approxeq.np import np_loss

    torch.set_num_threads(args.threads)
    if args.allocator == "keep" and not vs.common.keep_freed_memory():
        print("--allocator keep: not glibc, glibc's default behaviour kept", file=sys.stderr)
    current = (cnn.apply_conv, cnn._cat_channels, setconv.rbf_weights)
    plain = (lambda conv, h: conv(h), lambda a, b: torch.cat([a, b], 1),
             lambda x, a, ls: torch.exp(-0.5 * ((x[..., None] - a) / ls) ** 2))

    def use(kernels) -> None:
        cnn.apply_conv, cnn._cat_channels, setconv.rbf_weights = kernels

    torch.manual_seed(0)
    model = vs.build_approxeq(args.dim, vs.ARCH[args.dim]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=vs.LEARNING_RATE)
    batches = vs.make_batches(args.dim, vs.TASK, vs.NUM_BATCHES, 0)

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        np_loss(model, batches[i % len(batches)]).backward()
        opt.step()

    # name -> (kernels to swap in, or None for neuralprocesses' own step; the step)
    variants = {"plain": (plain, step), "current": (current, step)}
    if args.neuralprocesses:
        theirs = vs.build_neuralprocesses(args.dim, vs.ARCH[args.dim])
        opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=vs.LEARNING_RATE)
        variants["neuralprocesses"] = (None, vs.neuralprocesses_step(theirs, opt_theirs, batches))

    for i in range(2):
        for kernels, run in variants.values():
            use(kernels or current)
            run(i)
    sums: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    last: dict[str, Any] = {}  # name -> its last profile
    for _ in range(args.rounds):
        for name, (kernels, run) in variants.items():
            use(kernels or current)
            with profile() as prof:
                for i in range(args.steps):
                    run(i)
            per: dict[str, float] = {}
            for e in prof.key_averages():
                c = category(e.key)
                per[c] = per.get(c, 0.0) + e.self_cpu_time_total / 1000 / args.steps
            sums[name].append(per)
            last[name] = prof
    use(current)
    names = sorted({k for rows in sums.values() for r in rows for k in r})
    print(f"ConvCNP training step, {args.dim}-D, {args.threads} thread(s): self CPU time per "
          f"step, ms (mean of {args.rounds} rounds of {args.steps} steps)")
    widths = [max(7, len(v)) for v in sums]
    print(f"| {'category':50s} | " + " | ".join(f"{v:>{w}s}" for v, w in zip(sums, widths)) + " |")
    print(f"|{'-' * 52}|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for k in names + ["total"]:
        vals = [statistics.fmean(sum(r.values()) if k == "total" else r.get(k, 0.0)
                                 for r in sums[v]) for v in sums]
        print(f"| {k:50s} | " + " | ".join(f"{x:{w}.1f}" for x, w in zip(vals, widths)) + " |")
    for name in ("current", "neuralprocesses")[:len(variants) - 1]:
        print(f"\ntop operators, {name} (ms per step, {args.steps} steps):")
        for e in sorted(last[name].key_averages(), key=lambda e: -e.self_cpu_time_total)[:args.top]:
            print(f"  {e.key:40s} {e.self_cpu_time_total / 1000 / args.steps:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
