"""Training step of approxeq's ConvCNP against neuralprocesses' ConvCNP, network for network.

Both models are the ConvCNP of neuralprocesses' ``construct_convgnp`` with a UNet: a set
convolution of ``[density, data / density]`` onto a grid, a UNet of ``levels`` stride-2 levels of
``channels`` channels with kernel ``kernel``, a linear map to ``2 dim_y`` channels, a set
convolution to the targets and a heteroscedastic Gaussian. approxeq builds it with
``build_model("convcnp", ..., cnn="unet", layout="neuralprocesses")``; the parameter counts are
printed and must be equal. One difference remains inside the UNet: where the receptive field
before a down-sampling layer is odd (its first two layers in 1-D), neuralprocesses runs a
stride-1 convolution followed by average pooling, approxeq a stride-2 convolution (the same
parameters, fewer operations).

Both train on the same batches (EQ GP, lengthscale log-uniform on [0.25, 1], noise std 0.1,
batch 16, 3-30 context and 50 target points on [-2, 2]^dim_x), with AdamW, the loss being the
negative log-likelihood per target point (neuralprocesses computes it in float64, its default).
The steps of the two models alternate in one process (ABBA order, so that drift of the machine's
load hits both alike); the table gives the median and interquartile range of each model's step
time at each thread count, and the ratio approxeq / neuralprocesses of the medians, and of the
per-pair times (the ratio that is robust to load drift), last.

The worker keeps freed memory for reuse (``--allocator keep``, glibc; ``common.keep_freed_memory``).
With glibc's default behaviour (``--allocator default``) a step that allocates megabyte-sized
activations takes fresh pages from the kernel thousands of times per step, and how often
depends on what else the process allocated: in one process, one library's step can run on the
heap the other's left behind, so the comparison would measure the pair, not each step. The
table gives the page faults per step of each side.

neuralprocesses is an optional dependency: ``pip install -e .[bench]``.

Run from the repository root::

    python benchmarks/bench_vs_neuralprocesses.py
    python benchmarks/bench_vs_neuralprocesses.py --dims 1 --threads 1 --repeats 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: find common.py

import common  # noqa: E402

#: the network per grid dimension (the 1-D one is neuralprocesses' default ConvCNP; the 2-D one
#: is smaller so that a run stays within minutes on a laptop CPU)
ARCH = {1: {"points_per_unit": 64, "channels": 64, "levels": 6, "kernel": 5, "margin": 0.1},
        2: {"points_per_unit": 16, "channels": 32, "levels": 5, "kernel": 5, "margin": 0.1}}
TASK = {"batch": 16, "num_context": (3, 30), "num_target": 50, "range": (-2.0, 2.0)}
SMOKE_ARCH = {1: {"points_per_unit": 8, "channels": 4, "levels": 2, "kernel": 3, "margin": 0.1},
              2: {"points_per_unit": 4, "channels": 4, "levels": 2, "kernel": 3, "margin": 0.1}}
SMOKE_TASK = {"batch": 2, "num_context": (3, 5), "num_target": 6, "range": (-2.0, 2.0)}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vs_neuralprocesses.json"
LEARNING_RATE = 5e-4
NUM_BATCHES = 8


def make_batches(dim_x: int, task: dict[str, Any], n: int, seed: int) -> list:
    """``n`` EQ-GP batches, float32, channels-last (:class:`approxeq.np.Batch`)."""
    import torch

    from approxeq.data import gp_task

    gen = gp_task("eq", dim_x, num_context=task["num_context"], num_target=task["num_target"],
                  context_range=task["range"], target_range=task["range"], oracle=False)
    g = torch.Generator().manual_seed(seed)
    return [gen.sample(task["batch"], g) for _ in range(n)]


def build_approxeq(dim_x: int, arch: dict[str, Any], banded_setconv: bool = False):
    """approxeq's ConvCNP; ``banded_setconv`` (1-D only: ignored in 2-D) its banded set
    convolutions."""
    from approxeq.np import build_model

    return build_model("convcnp", dim_x, 1, cnn="unet", layout="neuralprocesses",
                       points_per_unit=arch["points_per_unit"], channels=arch["channels"],
                       num_layers=arch["levels"], kernel_size=arch["kernel"],
                       margin=arch["margin"], banded_setconv=banded_setconv and dim_x == 1)


def build_neuralprocesses(dim_x: int, arch: dict[str, Any]):
    import neuralprocesses.torch as nps

    return nps.construct_convgnp(
        dim_x=dim_x, dim_yc=1, dim_yt=1, likelihood="het", conv_arch="unet",
        unet_channels=(arch["channels"],) * arch["levels"], unet_kernels=arch["kernel"],
        unet_strides=2, points_per_unit=arch["points_per_unit"], margin=arch["margin"])


def neuralprocesses_step(model, optimiser, batches: list) -> Callable[[int], Any]:
    """A training step of neuralprocesses' ``model`` on ``batches[i % len(batches)]`` (given
    as approxeq batches; neuralprocesses is channels-first, ``x [batch, dim_x, n]``); the step
    returns the loss."""
    import lab.torch  # noqa: F401 -- neuralprocesses' torch backend
    import neuralprocesses.torch as nps

    data = [tuple(t.transpose(1, 2).contiguous() for t in (b.xc, b.yc, b.xt, b.yt))
            for b in batches]

    def step(i: int):
        xc, yc, xt, yt = data[i % len(data)]
        optimiser.zero_grad(set_to_none=True)
        loss = -nps.loglik(model, xc, yc, xt, yt, normalise=True).mean()
        loss.backward()
        optimiser.step()
        return loss

    return step


def run_pair(config: dict[str, Any]) -> dict[str, Any]:
    """Interleaved training steps of both models at one thread count and grid dimension."""
    import torch

    from approxeq.np import np_loss

    common.worker_setup(config)
    allocator = config.get("allocator", "keep")
    if allocator == "keep" and not common.keep_freed_memory():
        allocator = "default (keep unavailable: not glibc)"
    dim_x, arch = config["dim_x"], config["arch"]
    torch.manual_seed(0)
    ours = build_approxeq(dim_x, arch, config.get("banded_setconv", False)).train()
    theirs = build_neuralprocesses(dim_x, arch)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=LEARNING_RATE,
                                 **({"fused": True} if config.get("fused_optimizer") else {}))
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=LEARNING_RATE)
    batches = make_batches(dim_x, config["task"], NUM_BATCHES, config["seed"])
    theirs_step = neuralprocesses_step(theirs, opt_theirs, batches)

    def step_ours(i: int) -> float:
        opt_ours.zero_grad(set_to_none=True)
        loss = np_loss(ours, batches[i % NUM_BATCHES])
        loss.backward()
        opt_ours.step()
        return float(loss)

    def step_theirs(i: int) -> float:
        return float(theirs_step(i))

    steps = {"approxeq": step_ours, "neuralprocesses": step_theirs}
    times: dict[str, list[float]] = {k: [] for k in steps}
    losses: dict[str, list[float]] = {k: [] for k in steps}
    faults: dict[str, list[int]] = {k: [] for k in steps}
    for i in range(config["warmup"] + config["repeats"]):
        order = list(steps) if i % 2 == 0 else list(reversed(steps))
        for name in order:
            faults_before = common.minor_page_faults()
            start = time.perf_counter()
            loss = steps[name](i)
            elapsed = 1000.0 * (time.perf_counter() - start)
            if i >= config["warmup"]:
                times[name].append(elapsed)
                losses[name].append(loss)
                faults[name].append(common.minor_page_faults() - faults_before)
    timings = {}
    for name, ts in times.items():
        q25, med, q75 = common.quartiles(ts)
        timings[name] = common.Timing(median_ms=med, iqr_ms=q75 - q25, q25_ms=q25, q75_ms=q75,
                                      times_ms=ts, warmup=config["warmup"], repeats=len(ts))
    pair_ratios = [a / b for a, b in zip(times["approxeq"], times["neuralprocesses"])]
    grid = [len(a) for a in _grid_axes(ours, batches[0])]
    return {"timing": timings, "num_parameters": {"approxeq": n_ours, "neuralprocesses": n_theirs},
            "ratio_of_medians": timings["approxeq"].median_ms
            / timings["neuralprocesses"].median_ms,
            "median_pair_ratio": statistics.median(pair_ratios), "grid_first_batch": grid,
            "allocator": allocator,
            "page_faults_per_step": {k: statistics.median(v) for k, v in faults.items()},
            "mean_loss": {k: statistics.fmean(v) for k, v in losses.items()}}


def _grid_axes(model, batch):
    from approxeq.nn.setconv import lattice_grid

    enc = model.encoder
    return lattice_grid([batch.xc, batch.xt], enc.points_per_unit, enc.margin,
                        multiple=enc.net.grid_multiple)


# --------------------------------------------------------------------------------------------
# driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", nargs="+", type=int, default=[1, 2], choices=[1, 2],
                   help="grid dimensions to run (default 1 2)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2],
                   help="torch thread counts (default 1 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per model (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batches (default 0)")
    p.add_argument("--timeout-s", type=float, default=900.0,
                   help="give up on a configuration after this long (default 900)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--allocator", choices=["keep", "default"], default="keep",
                   help="'keep' (default): glibc keeps freed memory for reuse, so neither "
                        "library's steps page-fault or depend on the other's heap; 'default': "
                        "glibc's own behaviour")
    p.add_argument("--banded-setconv", action="store_true",
                   help="approxeq's opt-in banded set convolutions (1-D configurations only)")
    p.add_argument("--fused-optimizer", action="store_true",
                   help="approxeq's side steps with AdamW(fused=True) (TrainConfig."
                        "fused_optimizer); neuralprocesses' keeps the default AdamW")
    p.add_argument("--smoke", action="store_true", help="tiny networks and tasks, 1 step")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.warmup = 2, 1
    if args.repeats < 1 or args.warmup < 0:
        p.error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    return args


def build_configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    arch, task = (SMOKE_ARCH, SMOKE_TASK) if args.smoke else (ARCH, TASK)
    return [{"label": f"{d}-D, {t} thread{'s' if t > 1 else ''}", "dim_x": d, "threads": t,
             "arch": arch[d], "task": task, "warmup": args.warmup, "repeats": args.repeats,
             "seed": args.seed, "allocator": args.allocator,
             "banded_setconv": args.banded_setconv and d == 1,
             "fused_optimizer": args.fused_optimizer}
            for d in args.dims for t in args.threads]


def results_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        if r.get("status") != "ok":
            rows.append([r["label"], None, None, None, None, None, None, None, r.get("status")])
            continue
        a, b = r["timing"]["approxeq"], r["timing"]["neuralprocesses"]
        params = r["num_parameters"]
        same = params["approxeq"] == params["neuralprocesses"]
        faults = r["page_faults_per_step"]
        rows.append([r["label"], a["median_ms"], a["iqr_ms"], b["median_ms"], b["iqr_ms"],
                     f"{params['approxeq']}" + ("" if same else f" vs {params['neuralprocesses']}"),
                     f"{faults['approxeq']:g} / {faults['neuralprocesses']:g}", a["repeats"], "ok"])
    return common.format_table(rows, ["configuration", "approxeq ms", "IQR", "neuralprocesses ms",
                                      "IQR", "parameters", "page faults per step", "steps",
                                      "status"])


def ratio_lines(results: list[dict[str, Any]]) -> list[str]:
    return [f"ratio approxeq / neuralprocesses, {r['label']}: {r['ratio_of_medians']:.2f} "
            f"(median of per-pair ratios {r['median_pair_ratio']:.2f})"
            for r in results if r.get("status") == "ok"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run_pair)
        return 0
    try:
        import neuralprocesses  # noqa: F401
    except ImportError:
        print("neuralprocesses is not installed: pip install -e .[bench]", file=sys.stderr)
        return 2
    configs = build_configs(args)
    record = common.RunRecord(
        benchmark="vs_neuralprocesses", command=common.command_line(),
        machine=common.machine_info("cpu"),
        settings=common.settings_of(args),
        extra={"optimiser": f"AdamW(lr={LEARNING_RATE})" + (
                   ", approxeq's fused" if args.fused_optimizer else ""),
               "approxeq_options": {"banded_setconv": args.banded_setconv,
                                    "fused_optimizer": args.fused_optimizer},
               "arch": ARCH, "task": TASK, "num_batches": NUM_BATCHES})
    for config in configs:
        (result,) = common.run_worker(__file__, [config], threads=config["threads"],
                                      timeout_s=args.timeout_s)
        record.results.append(result)
        ok = result.get("status") == "ok"
        print(f"  {config['label']}: " + (
            f"approxeq {result['timing']['approxeq']['median_ms']:.1f} ms, neuralprocesses "
            f"{result['timing']['neuralprocesses']['median_ms']:.1f} ms" if ok
            else f"{result.get('status')}: {result.get('error')}"), flush=True)
    record.finish()
    print()
    print(results_table(record.results))
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    for line in ratio_lines(record.results):
        print(line)
    return 1 if any(r.get("status") != "ok" for r in record.results) else 0


if __name__ == "__main__":
    sys.exit(main())
