"""Forward time and peak memory of TE-TNP, TE-PT-TNP and ConvCNP (1-D) as the context grows.

Each configuration (model, batch size, context size) runs under ``torch.no_grad()`` in a fresh
process, so its peak memory is its own. Sizes run in increasing order; once the next size of a
model is predicted (quadratically from the last one) to take longer than ``--max-config-s`` per
call, the larger sizes of that model are skipped and marked so, which keeps the default run
within a few minutes on a small CPU machine. The log-log slope of time against context size is
fitted per model and batch size (about 2 for TE-TNP, whose attention compares every pair of
points; at most 1 for TE-PT-TNP, whose context talks only to a fixed number of pseudo-tokens, and
for a ConvCNP, whose set convolution pairs every context point with every cell of a grid that
does not grow with the context; fixed costs per call flatten the slope at small sizes).

``--headline`` adds the memory check of the TE attention: TE-TNP (paper size) with batch 1 and
4096 context and 4096 target points. Its pairwise logit MLP would need a
``[batch, heads, n_target, n_context, width]`` activation (64 GiB in float32) if it were
materialised; the chunked attention keeps the peak far below, which the run records and checks.

Run from the repository root::

    python benchmarks/bench_context_scaling.py                 # the sweep, batch 1
    python benchmarks/bench_context_scaling.py --batch 1 16    # and batch 16
    python benchmarks/bench_context_scaling.py --headline --no-sweep \\
        --out benchmarks/results/context_scaling_headline.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: find common.py

import common  # noqa: E402

MODELS = ("te-tnp", "te-pt-tnp", "convcnp")
CONTEXTS = (64, 128, 256, 512, 1024, 2048, 4096)
HEADLINE = {"model": "te-tnp", "batch": 1, "n_context": 4096, "n_target": 4096}
#: the machine size the headline check must fit
HEADLINE_LIMIT_MB = 24 * 1024.0
#: smoke runs: models of a few hundred parameters on a handful of points
SMOKE_OPTIONS = {
    "te-tnp": {"width": 16, "num_layers": 1, "num_heads": 2},
    "te-pt-tnp": {"width": 16, "num_layers": 1, "num_heads": 2, "num_pseudo_tokens": 4},
    "convcnp": {"channels": 4, "num_layers": 1},
}
SMOKE_CONTEXTS = (8, 16)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "context_scaling.json"


# --------------------------------------------------------------------------------------------
# worker


def te_attention_size(model) -> tuple[int, int] | None:
    """``(heads, logit MLP width)`` of the first TE attention in ``model``, if any."""
    from approxeq.nn.te_attention import TEMultiHeadAttention

    for m in model.modules():
        if isinstance(m, TEMultiHeadAttention):
            return m.num_heads, m.logit_hidden
    return None


def run_forward(config: dict[str, Any]) -> dict[str, Any]:
    """Time and peak memory of ``model(xc, yc, xt)`` under ``torch.no_grad()``."""
    import torch

    from approxeq.np import build_model

    device = common.worker_setup(config)
    model = build_model(config["model"], 1, 1, **config["options"]).to(device).eval()
    gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
    b, nc, nt = config["batch"], config["n_context"], config["n_target"]
    xc, yc = common.random_inputs(b, nc, 1, 1, gen, device)
    xt, _ = common.random_inputs(b, nt, 1, 1, gen, device)
    # First-call costs do not depend on the size, so warm up on a small task: a warm-up call
    # at 4096 points would double the cost of the largest configurations.
    nw = min(nc, 64)
    xw, yw, xtw = xc[:, :nw], yc[:, :nw], xt[:, :min(nt, 64)]

    def forward() -> None:
        with torch.no_grad():
            model(xc, yc, xt).mean.sum().item()

    def warm() -> None:
        with torch.no_grad():
            model(xw, yw, xtw).mean.sum().item()

    memory = common.PeakMemory(device)
    memory.start()
    timing = common.time_calls(forward, warmup=config["warmup"], repeats=config["repeats"],
                               budget_s=config["budget_s"], device=device, warmup_fn=warm)
    out: dict[str, Any] = {"timing": timing, "memory": memory.stop(),
                           "num_parameters": sum(p.numel() for p in model.parameters())}
    size = te_attention_size(model)
    if size is not None:
        heads, width = size
        itemsize = torch.finfo(xc.dtype).bits // 8
        out["materialised_pairwise_mb"] = b * heads * nt * nc * width * itemsize / common.MIB
        out["attention"] = {"heads": heads, "logit_width": width}
    return out


# --------------------------------------------------------------------------------------------
# driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS),
                   help="context sizes (default 64 128 ... 4096)")
    p.add_argument("--targets", type=int, default=128, help="target points (default 128)")
    p.add_argument("--batch", nargs="+", type=int, default=[1], help="batch sizes (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls at most (default 3)")
    p.add_argument("--budget-s", type=float, default=10.0,
                   help="stop repeating a configuration after this many seconds (default 10)")
    p.add_argument("--max-config-s", type=float, default=90.0,
                   help="skip sizes predicted to take longer per call (default 90; 0 = no limit)")
    p.add_argument("--headline", action="store_true",
                   help="also run TE-TNP with batch 1, 4096 context and 4096 target points")
    p.add_argument("--no-sweep", action="store_true", help="skip the context-size sweep")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--smoke", action="store_true",
                   help="tiny models and sizes, all in one worker process (checks the plumbing)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.contexts, args.targets, args.repeats = list(SMOKE_CONTEXTS), 8, 1
    return args


def sweep_configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = {"device": args.device, "threads": args.threads, "n_target": args.targets,
            "warmup": 1, "repeats": args.repeats, "budget_s": args.budget_s}
    return [{**base, "kind": "sweep", "model": m, "batch": b, "n_context": n,
             "options": SMOKE_OPTIONS[m] if args.smoke else {}}
            for m in args.models for b in args.batch for n in sorted(args.contexts)]


def headline_config(args: argparse.Namespace) -> dict[str, Any]:
    size = ({"batch": 1, "n_context": 64, "n_target": 64} if args.smoke else
            {k: HEADLINE[k] for k in ("batch", "n_context", "n_target")})
    return {"device": args.device, "threads": args.threads, "kind": "headline",
            "model": HEADLINE["model"], **size, "warmup": 1, "repeats": 1, "budget_s": None,
            "options": SMOKE_OPTIONS["te-tnp"] if args.smoke else {}}


def predicted_s(last: dict[str, Any], n_next: int) -> float:
    """A pessimistic (quadratic) guess of the next size's time per call."""
    return last["timing"]["median_ms"] / 1000.0 * (n_next / last["n_context"]) ** 2


def run_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    configs = sweep_configs(args)
    if args.smoke:
        return common.run_worker(__file__, configs, threads=args.threads)
    results: list[dict[str, Any]] = []
    last_ok: dict[tuple[str, int], dict[str, Any]] = {}
    failed: set[tuple[str, int]] = set()
    for config in configs:
        key = (config["model"], config["batch"])
        if key in failed:
            results.append({**config, "status": "skipped", "error": "a smaller context failed"})
            continue
        prev = last_ok.get(key)
        if prev is not None and args.max_config_s > 0:
            guess = predicted_s(prev, config["n_context"])
            if guess > args.max_config_s:
                results.append({**config, "status": "skipped",
                                "error": f"predicted {guess:.3g} s per call > --max-config-s "
                                         f"{args.max_config_s:g}"})
                continue
        (result,) = common.run_worker(__file__, [config], threads=args.threads)
        results.append(result)
        if result.get("status") == "ok":
            last_ok[key] = result
        else:
            failed.add(key)
        print(f"  {config['model']:>10} batch {config['batch']:>3} context "
              f"{config['n_context']:>5}: " + _summary(result), flush=True)
    return results


def _summary(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('error')}"
    return (f"{result['timing']['median_ms']:.1f} ms, peak {result['memory']['peak_mb']:.0f} MiB "
            f"({result['timing']['repeats']} calls)")


def fit_exponents(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and batch: slope of log time vs log context, over all measured sizes and over
    those >= 512 (where fixed per-call costs matter least)."""
    fits = []
    for key in dict.fromkeys((r["model"], r["batch"]) for r in results):
        ok = [r for r in results if (r["model"], r["batch"]) == key and r.get("status") == "ok"]
        sizes = [r["n_context"] for r in ok]
        times = [r["timing"]["median_ms"] for r in ok]
        large = [(n, t) for n, t in zip(sizes, times) if n >= 512]
        fits.append({"model": key[0], "batch": key[1], "n_points": len(ok),
                     "exponent_all": common.loglog_slope(sizes, times),
                     "exponent_ge_512": common.loglog_slope(*zip(*large)) if len(large) >= 2
                     else None,
                     "context_range": [min(sizes), max(sizes)] if sizes else None})
    return fits


def sweep_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        ok = r.get("status") == "ok"
        rows.append([r["model"], r["batch"], r["n_context"], r["n_target"],
                     r["timing"]["median_ms"] if ok else None,
                     r["timing"]["iqr_ms"] if ok else None,
                     r["timing"]["repeats"] if ok else None,
                     r["memory"]["peak_mb"] if ok else None,
                     "ok" if ok else r.get("status")])
    return common.format_table(rows, ["model", "batch", "context", "targets", "forward ms",
                                      "IQR ms", "calls", "peak MiB", "status"])


def fit_table(fits: list[dict[str, Any]]) -> str:
    rows = [[f["model"], f["batch"],
             f"{f['context_range'][0]}–{f['context_range'][1]}" if f["context_range"] else None,
             f["exponent_all"], f["exponent_ge_512"]] for f in fits]
    return common.format_table(rows, ["model", "batch", "contexts", "exponent (all)",
                                      "exponent (≥ 512)"])


def headline_report(result: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if result.get("status") != "ok":
        return ({"passed": False, "error": result.get("error")},
                f"headline: {result.get('status')}: {result.get('error')}")
    peak, total = result["memory"]["peak_mb"], result["memory"]["peak_total_mb"]
    materialised = result["materialised_pairwise_mb"]
    # "Far below": at least ten times smaller than the tensor it avoids, and the whole process
    # within the machine size.
    passed = total < HEADLINE_LIMIT_MB and peak * 10 < materialised
    summary = {"passed": passed, "forward_s": result["timing"]["median_ms"] / 1000.0,
               "peak_mb": peak, "peak_total_mb": total, "materialised_pairwise_mb": materialised,
               "limit_mb": HEADLINE_LIMIT_MB}
    text = (f"headline: TE-TNP, batch {result['batch']}, {result['n_context']} context, "
            f"{result['n_target']} targets: forward {summary['forward_s']:.1f} s; peak memory "
            f"{peak:.0f} MiB above the start ({total:.0f} MiB for the whole process) vs "
            f"{materialised:.0f} MiB for a materialised [batch, heads, n_target, n_context, "
            f"width] float32 tensor -> {'PASSED' if passed else 'FAILED'} "
            f"(limit {HEADLINE_LIMIT_MB:.0f} MiB)")
    return summary, text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run_forward)
        return 0
    record = common.RunRecord(
        benchmark="context_scaling", command=common.command_line(),
        machine=common.machine_info(args.device) | {"torch_threads": args.threads},
        settings=common.settings_of(args))
    if not args.no_sweep:
        record.results = run_sweep(args)
        fits = fit_exponents(record.results)
        record.extra["exponents"] = fits
        print()
        print(sweep_table(record.results))
        print()
        print("log-log slope of forward time against context size:")
        print(fit_table(fits))
    if args.headline:
        print("running the headline check (TE-TNP, 4096 x 4096; minutes on a small CPU)...",
              flush=True)
        (result,) = common.run_worker(__file__, [headline_config(args)], threads=args.threads)
        summary, text = headline_report(result)
        record.extra["headline"] = {**summary, "result": result}
        print(text)
    record.finish()
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    failed = [r for r in record.results if r.get("status") == "error"]
    if args.headline and not args.smoke and not record.extra["headline"]["passed"]:
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
