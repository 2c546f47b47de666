"""Where a ConvCNP training step spends its time (``torch.profiler``), with the current kernels
and with the plain ones they replaced, profiled alternately in one process.

The network and the batches are those of ``bench_vs_neuralprocesses.py`` (the ConvCNP of
neuralprocesses' ``construct_convgnp``, EQ-GP batches of 16). "plain" swaps in the previous
kernels: channels-first convolutions (``conv(h)``, ``torch.cat`` along channels) and set
convolution weights ``exp(-(x - g)^2 / (2 l^2))`` under autograd.

Run from the repository root::

    python benchmarks/profile_convcnp.py --dim 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

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
    args = p.parse_args(argv)

    import torch
    from torch.profiler import profile

    import approxeq.nn.cnn as cnn
    import approxeq.nn.setconv as setconv
    from approxeq.np import np_loss

    torch.set_num_threads(args.threads)
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

    for i in range(2):
        for kernels in (current, plain):
            use(kernels)
            step(i)
    sums: dict[str, list[dict[str, float]]] = {"plain": [], "current": []}
    last = None
    for _ in range(args.rounds):
        for name, kernels in (("plain", plain), ("current", current)):
            use(kernels)
            with profile() as prof:
                for i in range(args.steps):
                    step(i)
            per: dict[str, float] = {}
            for e in prof.key_averages():
                c = category(e.key)
                per[c] = per.get(c, 0.0) + e.self_cpu_time_total / 1000 / args.steps
            sums[name].append(per)
            if name == "current":
                last = prof
    use(current)
    names = sorted({k for rows in sums.values() for r in rows for k in r})
    print(f"ConvCNP training step, {args.dim}-D, {args.threads} thread(s): self CPU time per "
          f"step, ms (mean of {args.rounds} rounds of {args.steps} steps)")
    print(f"| {'category':50s} | plain | current |")
    print(f"|{'-' * 52}|-------|---------|")
    for k in names + ["total"]:
        vals = [statistics.fmean(sum(r.values()) if k == "total" else r.get(k, 0.0)
                                 for r in sums[v]) for v in ("plain", "current")]
        print(f"| {k:50s} | {vals[0]:5.1f} | {vals[1]:7.1f} |")
    print(f"\ntop operators, current kernels (ms per step, {args.steps} steps):")
    for e in sorted(last.key_averages(), key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"  {e.key:40s} {e.self_cpu_time_total / 1000 / args.steps:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
