"""Training-step time of the attention models with their attention kernels before and after the
bounded-memory kernels, steps interleaved in one process.

Labels (paper sizes unless ``--width``/``--layers``/``--heads`` say otherwise):

- ``tnp``: plain attention through torch's fused ``scaled_dot_product_attention``;
  ``tnp:unfused``: the same weights with the ``[b, h, nq, nk]`` logits and ``masked_attention``
  (``MultiHeadAttention.fused = False``), the kernel as it was.
- ``te-tnp``, ``e-tnp``: the TE and E attentions as they are now (the whole path where every
  pair fits the memory budget, else the blocked online-softmax kernel);
  ``te-tnp:whole``, ``e-tnp:whole``: the same weights with the whole path at any size
  (``TEMultiHeadAttention.allow_blocked = False``: query chunks with activation checkpointing
  and the ``[b, h, nq, nk]`` arrays held), the kernel as it was.

The models train on one random batch with AdamW; in every round each label takes one step, the
order reversed every other round, so that a change of machine load hits every label alike. The
table gives each label's median step and the median of the per-round ratios of each new kernel
to its old one. Runs in one worker process (:func:`common.run_one_config`).

Run from the repository root::

    python benchmarks/bench_attention_kernel.py --dim-x 2 --batch 16 --context 128 --targets 256
    python benchmarks/bench_attention_kernel.py --models tnp te-tnp --batch 1 --context 1000
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

LABELS = ("tnp", "tnp:unfused", "te-tnp", "te-tnp:whole", "e-tnp", "e-tnp:whole")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "attention_kernel.json"


def _build(label: str, dim_x: int, options: dict[str, Any], built: dict[str, Any]):
    """The model of ``label``; an old-kernel label shares the new one's weights."""
    from approxeq.nn.attention import MultiHeadAttention
    from approxeq.nn.te_attention import TEMultiHeadAttention
    from approxeq.np import build_model

    name, _, variant = label.partition(":")
    model = build_model(name, dim_x, 1, **options).train()
    if name in built:
        model.load_state_dict(built[name].state_dict())
    for m in model.modules():
        if variant == "unfused" and isinstance(m, MultiHeadAttention):
            m.fused = False
        if variant == "whole" and isinstance(m, TEMultiHeadAttention):
            m.allow_blocked = False
    return model


def run(config: dict[str, Any]) -> dict[str, Any]:
    """Median step time of each label, rounds interleaved. ``config["device"]`` (default
    ``"cpu"``): where the models run (CUDA work is synchronised after every step);
    ``config["budget_s"]`` (optional): no further round once this long has passed since the
    first, after at least one timed round."""
    import torch

    from approxeq.np import Batch, np_loss

    device = common.worker_setup(config)
    gen = torch.Generator().manual_seed(0)
    b, dx = config["batch"], config["dim_x"]
    xc, yc = common.random_inputs(b, config["n_context"], dx, 1, gen, device)
    xt, yt = common.random_inputs(b, config["n_target"], dx, 1, gen, device)
    batch = Batch(xc, yc, xt, yt)
    models: dict[str, Any] = {}
    for label in sorted(config["labels"], key=lambda s: ":" in s):  # new kernels first
        models[label] = _build(label, dx, config["options"], models).to(device)
    optims = {n: torch.optim.AdamW(m.parameters(), lr=5e-4) for n, m in models.items()}

    def step(label: str) -> None:
        optims[label].zero_grad(set_to_none=True)
        np_loss(models[label], batch).backward()
        optims[label].step()

    labels = list(config["labels"])
    times: dict[str, list[float]] = {n: [] for n in labels}
    budget_s, start = config.get("budget_s"), time.perf_counter()
    for i in range(config["warmup"] + config["repeats"]):
        for label in (labels if i % 2 == 0 else labels[::-1]):
            t0 = time.perf_counter()
            step(label)
            common.synchronize(device)
            if i >= config["warmup"]:
                times[label].append(1000 * (time.perf_counter() - t0))
        if budget_s is not None and i >= config["warmup"] \
                and time.perf_counter() - start > budget_s:
            break
    ratios = {f"{new}/{old}": statistics.median(a / c for a, c in zip(times[new], times[old]))
              for old in labels if ":" in old for new in [old.partition(":")[0]]
              if new in times}
    return {"step_ms": {n: statistics.median(t) for n, t in times.items()}, "times_ms": times,
            "new_over_old": ratios}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(LABELS), choices=LABELS)
    p.add_argument("--dim-x", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--targets", type=int, default=128)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds (default 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--smoke", action="store_true", help="tiny models and sizes, one round")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run)
        return 0
    if args.smoke:
        args.width, args.layers, args.heads = 8, 1, 2
        args.batch, args.context, args.targets, args.repeats = 2, 6, 5, 1
    options = {k: v for k, v in (("width", args.width), ("num_layers", args.layers),
                                 ("num_heads", args.heads)) if v is not None}
    config = {"labels": args.models, "dim_x": args.dim_x, "batch": args.batch,
              "n_context": args.context, "n_target": args.targets, "options": options,
              "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads}
    record, result = common.run_one_config(__file__, "attention_kernel", args, config,
                                           timeout_s=args.timeout_s)
    if result is None:
        common.write_json(args.out, record)
        return 1
    rows = [[label, result["step_ms"][label], len(result["times_ms"][label])]
            for label in args.models]
    print(common.format_table(rows, ["model", "step ms (median)", "steps"]))
    for pair, ratio in result["new_over_old"].items():
        print(f"{pair}: {ratio:.3f} (median of per-round ratios)")
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
