"""Throughput of a symmetrised small transformer against its bare base model.

The task is n-body shaped: ``b`` clouds of ``n`` particles in R^3 with velocities and a charge;
the base model is a 2-layer transformer over particles with a learned positional embedding
(so it is neither permutation- nor E(3)-equivariant) that predicts new positions. It is made
S_n × E(3)-equivariant by group averaging (Haar samples, centring) and by probabilistic
symmetrisation (vector-neuron interface network), for k = 1, 2, 4, 8, 16, 32 samples.

For each k the table gives inputs per second of the symmetrised model, of the base model on
one input batch, and ``overhead`` = time(symmetrised, k) / time(base on the k·b batch): the cost
beyond running the base model k times (sampling, transforming, the interface network).

    python benchmarks/bench_symmetrize.py [--out benchmarks/results/symmetrize.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RunRecord, command_line, format_table, machine_info, time_calls, write_json  # noqa: E402

from approxeq.groups import DirectProduct, Euclidean, Permutation  # noqa: E402
from approxeq.nn import SelfAttentionLayer  # noqa: E402
from approxeq.symmetrize import (  # noqa: E402
    GroupAveraging,
    PointCloudFrameNetwork,
    ProbabilisticSymmetrization,
    Symmetrized,
)

KINDS = ("points", "vectors", "nodes")


class ParticleTransformer(nn.Module):
    """Tokens = particles (position, velocity, charge) + a positional embedding; predicts
    positions ``x + Δ``. Shapes: ``(x [b, n, 3], v [b, n, 3], c [b, n, 1]) → [b, n, 3]``."""

    def __init__(self, n: int, dim: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(7, dim)
        self.position = nn.Parameter(torch.randn(n, dim) * 0.1)
        self.layers = nn.ModuleList(SelfAttentionLayer(dim, heads, dim) for _ in range(layers))
        self.head = nn.Linear(dim, 3)

    def forward(self, x, v, c):
        z = self.embed(torch.cat([x, v, c], -1)) + self.position
        for layer in self.layers:
            z = layer(z)
        return x + self.head(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/symmetrize.json")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--particles", type=int, default=5)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--budget", type=float, default=0.4, help="seconds of timing per cell")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    b, n = args.batch, args.particles
    x, v, c = torch.randn(b, n, 3), torch.randn(b, n, 3), torch.randn(b, n, 1)
    group = DirectProduct(Permutation(n), Euclidean(3))
    base = ParticleTransformer(n).eval()
    models = {
        "group averaging": Symmetrized(base, group, GroupAveraging(), in_kinds=KINDS,
                                       out_kinds="points").eval(),
        "probabilistic": Symmetrized(
            base, group, ProbabilisticSymmetrization(
                PointCloudFrameNetwork(KINDS, scalar_dim=1), tau=0.1),
            in_kinds=KINDS, out_kinds="points").eval(),
    }
    record = RunRecord("symmetrize", command_line(), machine_info(),
                       {"batch": b, "particles": n, "samples": args.samples,
                        "threads": args.threads, "base_params": sum(p.numel() for p in
                                                                     base.parameters())})

    def timed(fn):
        with torch.no_grad():
            return time_calls(fn, warmup=1, repeats=50, min_repeats=3, budget_s=args.budget)

    base_one = timed(lambda: base(x, v, c))
    rows = []
    for k in args.samples:
        xk, vk, ck = (t.repeat(k, 1, 1) for t in (x, v, c))
        base_k = timed(lambda xk=xk, vk=vk, ck=ck: base(xk, vk, ck))
        for name, model in models.items():
            t = timed(lambda model=model, k=k: model(x, v, c, n_samples=k))
            result = {"strategy": name, "samples": k,
                      "inputs_per_s": b / (t.median_ms / 1000),
                      "base_inputs_per_s": b / (base_one.median_ms / 1000),
                      "median_ms": t.median_ms, "iqr_ms": t.iqr_ms,
                      "base_kb_median_ms": base_k.median_ms,
                      "overhead": t.median_ms / base_k.median_ms}
            record.results.append(result)
            rows.append([name, k, result["inputs_per_s"], result["base_inputs_per_s"],
                         t.median_ms, base_k.median_ms, result["overhead"]])
    record.finish()
    print(format_table(rows, ["strategy", "k", "inputs/s", "base inputs/s", "ms",
                              "base k·b ms", "overhead"]))
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {write_json(args.out, record)}")


if __name__ == "__main__":
    main()
