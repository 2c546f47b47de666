"""Peak memory of one forward call of every neural process against the context size, and the
large-context case of one call in 6 GiB of address space.

Each configuration runs ``model(xc, yc, xt)`` in eval mode under ``torch.no_grad()`` in a fresh
process (:func:`common.run_worker`), so its peak resident memory is its own. The TE and E
attentions run their blocked kernel at a fixed tile (``--key-block`` keys, queries from the
default memory budget), so that what grows with the context is what is linear in it; the plain
attentions run through torch's fused kernel. The sweep fits peak memory against the context size
per model: the log-log slope (1 = linear, 2 = quadratic) and the MiB per 1,000 context points of
a straight line. ``quadratic_mb`` is what one ``[batch, heads, n_target + n_context, n_context]``
float32 array of logits, the smallest quadratic array of a plain attention, would take.

``--case`` runs the case of the issue instead: ``--case-batch`` frames of a grid with
``--case-context`` context points and ``--case-target`` targets each (4, 7,500 and 17,500 by
default), 2-D locations, under an address-space limit (``RLIMIT_AS``, ``--limit-gb``, 6 by
default): the call fits or the worker fails with an out-of-memory error. A full-width TE-TNP or
E-TNP takes hours of CPU for it (its logit MLP runs on 750 million pairs per layer);
``--case-options`` shrinks chosen models, which changes only their per-point arrays and the
compute, not the tile (the budget sets it).

Run from the repository root::

    python benchmarks/bench_memory.py                       # the sweep, every model
    python benchmarks/bench_memory.py --case --models tnp pt-tnp --out benchmarks/results/m.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: find common.py

import common  # noqa: E402

MODELS = ("cnp", "tnp", "pt-tnp", "lps-tnp", "te-tnp", "te-pt-tnp", "e-tnp", "convcnp",
          "relaxed-convcnp", "equivcnp")
CONTEXTS = (250, 500, 1000, 2000)
TARGETS = 500  # target points of the sweep
KEY_BLOCK = 256  # keys per tile of the TE and E attentions
CASE = {"batch": 4, "n_context": 7500, "n_target": 17500}
SMOKE_CASE = {"batch": 1, "n_context": 16, "n_target": 24}
SMOKE_OPTIONS = {"width": 8, "num_layers": 1, "num_heads": 2}
SMOKE_CONVOLUTIONAL = {"channels": 4, "num_layers": 1}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "memory.json"


# --------------------------------------------------------------------------------------------
# worker


def _limit_address_space(limit_gb: float | None) -> None:
    if limit_gb:
        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _vm_peak_mb() -> float | None:
    kib = common._status_kib("VmPeak")
    return None if kib is None else kib / 1024


def run_forward(config: dict[str, Any]) -> dict[str, Any]:
    """Peak memory and time of one ``model(xc, yc, xt)`` under ``torch.no_grad()``."""
    import torch

    from approxeq.nn.te_attention import TEMultiHeadAttention
    from approxeq.np import build_model

    _limit_address_space(config.get("limit_gb"))
    device = common.worker_setup(config)
    model = build_model(config["model"], 2, 1, **config["options"]).to(device).eval()
    heads = [m.num_heads for m in model.modules() if hasattr(m, "num_heads")]
    for m in model.modules():
        if isinstance(m, TEMultiHeadAttention):
            m.key_block = config["key_block"]
    gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
    b, nc, nt = config["batch"], config["n_context"], config["n_target"]
    xc, yc = common.random_inputs(b, nc, 2, 1, gen, device)
    xt, _ = common.random_inputs(b, nt, 2, 1, gen, device)

    def forward(n_c: int, n_t: int) -> None:
        with torch.no_grad():
            model(xc[:, :n_c], yc[:, :n_c], xt[:, :n_t]).mean.sum().item()

    forward(min(nc, 16), min(nt, 16))  # first-call costs, on a small task
    memory = common.PeakMemory(device)
    memory.start()
    timing = common.time_calls(lambda: forward(nc, nt), warmup=0, repeats=1, device=device)
    quadratic = b * max(heads, default=0) * (nt + nc) * nc * 4 / common.MIB
    return {"timing": timing, "memory": memory.stop(), "vm_peak_mb": _vm_peak_mb(),
            "quadratic_mb": quadratic,
            "num_parameters": sum(p.numel() for p in model.parameters())}


# --------------------------------------------------------------------------------------------
# driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS),
                   help="context sizes of the sweep (default 250 500 1000 2000)")
    p.add_argument("--targets", type=int, default=TARGETS, help="target points (default 500)")
    p.add_argument("--batch", type=int, default=1, help="tasks per call (default 1)")
    p.add_argument("--key-block", type=int, default=KEY_BLOCK,
                   help="keys per tile of the TE and E attentions (default 256)")
    p.add_argument("--case", action="store_true", help="run the large-context case instead")
    p.add_argument("--case-batch", type=int, default=CASE["batch"])
    p.add_argument("--case-context", type=int, default=CASE["n_context"])
    p.add_argument("--case-target", type=int, default=CASE["n_target"])
    p.add_argument("--limit-gb", type=float, default=6.0,
                   help="address-space limit of a case worker, GiB (default 6; 0 = none)")
    p.add_argument("--case-options", type=json.loads, default={},
                   help='build options per model for the case, JSON: {"te-tnp": {"width": 16}}')
    p.add_argument("--timeout-s", type=float, default=3600.0,
                   help="give up on a configuration after this long (default 3600)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--smoke", action="store_true", help="tiny models and sizes (the plumbing)")
    p.add_argument("--report", type=Path, default=None,
                   help="print the table of a saved run (refitting it) and exit")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.contexts, args.targets, args.key_block = [8, 16], 8, 4
        args.case_batch, args.case_context, args.case_target = (
            SMOKE_CASE["batch"], SMOKE_CASE["n_context"], SMOKE_CASE["n_target"])
    return args


def smoke_options(model: str) -> dict[str, Any]:
    """The small build options of ``model`` in smoke runs (the plumbing, not the numbers)."""
    return dict(SMOKE_CONVOLUTIONAL if model.endswith("convcnp") or model == "equivcnp"
                else SMOKE_OPTIONS)


def _options(args: argparse.Namespace, model: str) -> dict[str, Any]:
    if args.smoke:
        return smoke_options(model)
    return args.case_options.get(model, {}) if args.case else {}


def configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = {"device": args.device, "threads": args.threads, "key_block": args.key_block}
    if args.case:
        return [{**base, "kind": "case", "model": m, "batch": args.case_batch,
                 "n_context": args.case_context, "n_target": args.case_target,
                 "limit_gb": args.limit_gb or None, "options": _options(args, m)}
                for m in args.models]
    return [{**base, "kind": "sweep", "model": m, "batch": args.batch, "n_context": n,
             "n_target": args.targets, "options": _options(args, m)}
            for m in args.models for n in sorted(args.contexts)]


def _line_slope(n: list[int], values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against ``n``, per 1,000."""
    if len(set(n)) < 2:
        return None
    mn, mv = sum(n) / len(n), sum(values) / len(values)
    return 1000 * sum((a - mn) * (c - mv) for a, c in zip(n, values)) \
        / sum((a - mn) ** 2 for a in n)


def fit(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: log-log slope of the call's peak memory against the context size, and the
    slopes of straight lines through the call's and the whole process's peaks (MiB per 1,000
    context points)."""
    fits = []
    for model in dict.fromkeys(r["model"] for r in results):
        ok = [r for r in results if r["model"] == model and r.get("status") == "ok"]
        n = [r["n_context"] for r in ok]
        peak = [max(r["memory"]["peak_mb"], 1e-3) for r in ok]
        total = [r["memory"]["peak_total_mb"] for r in ok]
        fits.append({"model": model, "loglog_slope": common.loglog_slope(n, peak),
                     "mb_per_1000_context": _line_slope(n, peak),
                     "process_mb_per_1000_context": _line_slope(n, total)})
    return fits


def table(results: list[dict[str, Any]], fits: list[dict[str, Any]]) -> str:
    by_model = {f["model"]: f for f in fits}
    rows = []
    for r in results:
        ok = r.get("status") == "ok"
        f = by_model.get(r["model"], {})
        rows.append([r["model"], r["batch"], r["n_context"], r["n_target"],
                     r["memory"]["peak_mb"] if ok else None,
                     r["memory"]["peak_total_mb"] if ok else None,
                     r["vm_peak_mb"] if ok else None, r["quadratic_mb"] if ok else None,
                     r["timing"]["median_ms"] / 1000 if ok else None,
                     f.get("loglog_slope"), f.get("mb_per_1000_context"),
                     f.get("process_mb_per_1000_context"),
                     "ok" if ok else f"{r.get('status')}: {r.get('error', '')[:60]}"])
    return common.format_table(rows, ["model", "batch", "context", "targets", "peak MiB",
                                      "process MiB", "VmPeak MiB", "quadratic MiB",
                                      "forward s", "slope", "MiB/1000", "process MiB/1000",
                                      "status"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run_forward)
        return 0
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        case = saved["settings"].get("case")
        print(table(saved["results"], [] if case else fit(saved["results"])))
        return 0
    record = common.RunRecord(
        benchmark="memory", command=common.command_line(),
        machine=common.machine_info(args.device) | {"torch_threads": args.threads},
        settings=common.settings_of(args))
    todo = configs(args)
    if args.smoke:
        record.results = common.run_worker(__file__, todo, threads=args.threads)
    for config in [] if args.smoke else todo:
        (result,) = common.run_worker(__file__, [config], threads=args.threads,
                                      timeout_s=args.timeout_s)
        record.results.append(result)
        mem = result.get("memory", {}).get("peak_mb")
        print(f"  {config['model']:>15} context {config['n_context']:>6}: "
              + (f"peak {mem:.0f} MiB, {result['timing']['median_ms'] / 1000:.1f} s"
                 if result.get("status") == "ok" else f"{result.get('status')}: "
                 f"{result.get('error')}"), flush=True)
    fits = [] if args.case else fit(record.results)
    record.extra["fits"] = fits
    print()
    print(table(record.results, fits))
    record.finish()
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    return 1 if any(r.get("status") != "ok" for r in record.results) else 0


if __name__ == "__main__":
    sys.exit(main())
