"""Task generation against the training step: serial sampling and background prefetching.

On the ``gp1d`` task (Gibbs switching-lengthscale GPs, batch 16, 1-64 context and 128 target
points, no oracle), with the quick ``gp1d`` ConvCNP (32 channels, 5 layers, kernel 9, 16 points
per unit) and AdamW:

- the time to sample one batch (the default float64 sampler, and the opt-in
  ``sample_precision="float32"`` one on the same random numbers), and one training step on a
  ready batch (interleaved), each sampler's cost printed against the step's;
- the float32 sampler's two largest parts alone, on its batch: the noisy covariance, and its
  Cholesky factorisation (in place; LAPACK's ``potrf`` and torch's zeroing of the upper
  triangle), the floor of any exact sampler that factorises in float32; and the
  factorisations they replaced (float32 with subnormals, float64 by ``cholesky_ex``) beside
  the default's float64 one;
- the time per step of a training loop that samples serially, and of one that takes its
  batches from :class:`approxeq.data.prefetch.Prefetcher` (a background thread), in alternating
  blocks of ``--block`` steps. The prefetcher's batches are the serial ones, bit for bit.

The overlap needs a core for the background thread: with one torch thread for the step, a
machine with two free cores hides the sampling entirely.

Run from the repository root::

    python benchmarks/bench_data.py
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

MODEL = {"cnn": "conv", "channels": 32, "num_layers": 5, "kernel_size": 9, "points_per_unit": 16}
SMOKE_MODEL = {"cnn": "conv", "channels": 4, "num_layers": 1, "kernel_size": 3,
               "points_per_unit": 4}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "data.json"


def _time_parts(batch, task) -> dict[str, float]:
    """Milliseconds of the float32 sampler's largest parts on ``batch`` (its covariance, and its
    factorisation in place) and of the factorisation variants they replaced: without flushing
    subnormals; in float64 by ``cholesky_ex`` (torch's copy of the lower triangle) and as the
    default now does it (a whole column-major copy factorised in place; the same bits)."""
    import torch

    from approxeq.data.oracle import column_major_cholesky, float32_cholesky_, noisy_covariance

    kernel, x32 = batch.meta["kernel"], torch.cat([batch.xc, batch.xt], dim=1)
    out, info = {}, torch.empty(x32.shape[0], dtype=torch.int32)

    def in_place(k) -> None:  # float32_cholesky_ with the subnormals left as they are
        a = k.mT
        torch.linalg.cholesky_ex(a, out=(a, info))

    def default(k) -> None:
        column_major_cholesky(k, info)

    t0 = time.perf_counter()
    noisy_covariance(kernel, task.noise_std, x32, task.jitter)
    out["covariance_float32"] = 1000 * (time.perf_counter() - t0)
    for name, fn, dtype in (("factorise_float32", float32_cholesky_, torch.float32),
                            ("factorise_float32_subnormals", in_place, torch.float32),
                            ("factorise_float64_cholesky_ex", torch.linalg.cholesky_ex,
                             torch.float64),
                            ("factorise_float64_default", default, torch.float64)):
        cov = noisy_covariance(kernel, task.noise_std, x32.to(dtype), task.jitter)
        t0 = time.perf_counter()
        fn(cov)
        out[name] = 1000 * (time.perf_counter() - t0)
    return out


def run(config: dict[str, Any]) -> dict[str, Any]:
    import torch

    from approxeq.data import gp_task
    from approxeq.data.prefetch import Prefetcher
    from approxeq.np import build_model, np_loss

    common.worker_setup(config)
    task = gp_task("gibbs", oracle=False)
    task32 = gp_task("gibbs", oracle=False, sample_precision="float32")
    model = build_model("convcnp", 1, 1, **config["model"]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    batch_size = config["batch"]

    def step(batch) -> None:
        opt.zero_grad(set_to_none=True)
        np_loss(model, batch).backward()
        opt.step()

    rng, rng32 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    sample_ms, sample32_ms, step_ms = [], [], []
    parts: dict[str, list[float]] = {}
    for i in range(config["warmup"] + config["repeats"]):
        t0 = time.perf_counter()
        batch = task.sample(batch_size, rng)
        t1 = time.perf_counter()
        batch32 = task32.sample(batch_size, rng32)  # the same tasks, factorised in float32
        t2 = time.perf_counter()
        timed = _time_parts(batch32, task32)
        s0 = time.perf_counter()
        step(batch)
        t3 = time.perf_counter()
        if i >= config["warmup"]:
            sample_ms.append(1000 * (t1 - t0))
            sample32_ms.append(1000 * (t2 - t1))
            step_ms.append(1000 * (t3 - s0))
            for name, ms in timed.items():
                parts.setdefault(name, []).append(ms)

    block = config["block"]
    serial_ms, prefetch_ms = [], []
    for r in range(config["blocks"]):
        for mode in (("serial", "prefetch") if r % 2 == 0 else ("prefetch", "serial")):
            g = torch.Generator().manual_seed(100 + r)
            if mode == "serial":
                t0 = time.perf_counter()
                for _ in range(block):
                    step(task.sample(batch_size, g))
                serial_ms.append(1000 * (time.perf_counter() - t0) / block)
            else:
                with Prefetcher(task, batch_size, g, depth=2, num_batches=block) as pre:
                    t0 = time.perf_counter()
                    for batch in pre:
                        step(batch)
                    prefetch_ms.append(1000 * (time.perf_counter() - t0) / block)
    med = statistics.median
    return {"sample_ms": med(sample_ms), "step_ms": med(step_ms),
            "sample_over_step": med(sample_ms) / med(step_ms),
            "sample_float32_ms": med(sample32_ms),
            "sample_float32_over_step": med(sample32_ms) / med(step_ms),
            **{f"{name}_ms": med(v) for name, v in parts.items()},
            "factorise_float32_over_step": med(parts["factorise_float32"]) / med(step_ms),
            "serial_loop_ms_per_step": med(serial_ms),
            "prefetch_loop_ms_per_step": med(prefetch_ms),
            "prefetch_over_serial": med(p / s for p, s in zip(prefetch_ms, serial_ms)),
            "raw": {"sample_ms": sample_ms, "sample_float32_ms": sample32_ms,
                    **{f"{name}_ms": v for name, v in parts.items()},
                    "step_ms": step_ms, "serial_ms": serial_ms,
                    "prefetch_ms": prefetch_ms}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="timed sample+step pairs")
    p.add_argument("--blocks", type=int, default=6, help="loop blocks per mode")
    p.add_argument("--block", type=int, default=10, help="steps per loop block")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the step")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--smoke", action="store_true", help="tiny model, a few steps")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run)
        return 0
    config = {"label": "gibbs+convcnp", "threads": args.threads, "batch": 16,
              "model": SMOKE_MODEL if args.smoke else MODEL, "warmup": 1 if args.smoke else 3,
              "repeats": 2 if args.smoke else args.repeats,
              "blocks": 2 if args.smoke else args.blocks, "block": 2 if args.smoke else args.block}
    record, r = common.run_one_config(__file__, "data", args, config)
    if r is None:
        return 1
    step_ms = r["step_ms"]
    print(common.format_table(
        [["sample a Gibbs batch of 16 (default, float64)", r["sample_ms"],
          r["sample_over_step"]],
         ["sample it with sample_precision='float32'", r["sample_float32_ms"],
          r["sample_float32_over_step"]],
         ["  its float32 covariance alone", r["covariance_float32_ms"],
          r["covariance_float32_ms"] / step_ms],
         ["  its float32 factorisation alone (in place)", r["factorise_float32_ms"],
          r["factorise_float32_over_step"]],
         ["  the same, subnormals not flushed", r["factorise_float32_subnormals_ms"],
          r["factorise_float32_subnormals_ms"] / step_ms],
         ["  float64 factorisation by cholesky_ex", r["factorise_float64_cholesky_ex_ms"],
          r["factorise_float64_cholesky_ex_ms"] / step_ms],
         ["  float64, the default's (same bits)", r["factorise_float64_default_ms"],
          r["factorise_float64_default_ms"] / step_ms],
         ["ConvCNP step (ready batch)", step_ms, 1.0],
         ["loop, serial sampling (per step)", r["serial_loop_ms_per_step"],
          r["serial_loop_ms_per_step"] / step_ms],
         ["loop, prefetched (per step)", r["prefetch_loop_ms_per_step"],
          r["prefetch_loop_ms_per_step"] / step_ms]],
        ["what", "ms (median)", "/ step"]))
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    print(f"sampling / step: {r['sample_over_step']:.3f} (float32 sampler: "
          f"{r['sample_float32_over_step']:.3f}, its factorisation alone: "
          f"{r['factorise_float32_over_step']:.3f}; goal < 0.10); prefetched loop / serial loop: "
          f"{r['prefetch_over_serial']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
