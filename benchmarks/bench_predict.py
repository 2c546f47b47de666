"""Time and peak memory of ``approxeq.np.predict`` on one frame of a continental field, per model.

The scenario of a user who trained on the shipped UK month (0.25°, 50–58° N, 10° W–2° E) and
maps one frame of a continental grid: 105 × 237 cells (35–61° N, 20° W–39° E; 24,885 targets),
with about 2,500 observed cells (a random 10 %) as the context. Coordinates are normalised as
for the UK month (centre 54° N 4° W, 3° per unit), so the field spans about 9 × 20 normalised
units, far beyond the training region.

Models are the ``era5-uk`` experiment's at its ``quick`` size (options read from its YAML);
registered models the experiment does not train get the same quick widths (``--size paper``
takes the paper options). Each model runs in a fresh process, so the peak resident set size is
its own; the goal is that every model predicts the frame within 4 GiB for the whole process
(``peak_total_mb``, torch and the data included). Weights are random: speed and memory do not
depend on them.

Run from the repository root::

    python benchmarks/bench_predict.py                        # every model, slowest last
    python benchmarks/bench_predict.py --models convcnp e-tnp
    python benchmarks/bench_predict.py --max-memory-mb 256    # a smaller budget per pass
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: find common.py

import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ERA5_CONFIG = ROOT / "src" / "approxeq" / "experiments" / "configs" / "era5-uk.yaml"
#: every registered model, cheapest first, so that the slowest run last
MODELS = ("cnp", "tnp", "pt-tnp", "te-pt-tnp", "lps-tnp", "convcnp", "relaxed-convcnp",
          "equivcnp", "te-tnp", "e-tnp")
#: quick-size options of the models the era5-uk experiment does not train
EXTRA_OPTIONS = {
    "quick": {"cnp": {"width": 32, "num_layers": 2},
              "tnp": {"width": 32, "num_layers": 2, "num_heads": 4},
              "te-tnp": {"width": 32, "num_layers": 2, "num_heads": 4},
              "relaxed-convcnp": {"channels": 16, "num_layers": 3, "points_per_unit": 8}},
    "paper": {"cnp": {"width": 128, "num_layers": 5},
              "tnp": {"width": 128, "num_layers": 5, "num_heads": 8},
              "te-tnp": {"width": 128, "num_layers": 5, "num_heads": 8},
              "relaxed-convcnp": {"cnn": "unet", "channels": 32, "num_layers": 4,
                                  "points_per_unit": 12}},
}
#: the continental grid: (first, number of cells) per axis at 0.25°
GRID = {"lat": (35.0, 105), "lon": (-20.0, 237)}
#: the UK month's coordinate map: centre and degrees per normalised unit
UK_CENTRE, UK_SCALE = (54.0, -4.0), 3.0
CONTEXT_FRACTION = 0.1
#: the goal: peak memory of the whole process
LIMIT_MB = 4096.0
SMOKE_GRID = {"lat": (50.0, 9), "lon": (-6.0, 13)}
_SMOKE_TOKENS = {"width": 8, "num_layers": 1, "num_heads": 2}
_SMOKE_GRID_MODEL = {"channels": 4, "num_layers": 1, "points_per_unit": 4}
SMOKE_OPTIONS = {"cnp": {"width": 8, "num_layers": 1}, "tnp": _SMOKE_TOKENS,
                 "pt-tnp": {**_SMOKE_TOKENS, "num_pseudo_tokens": 4},
                 "te-pt-tnp": {**_SMOKE_TOKENS, "num_pseudo_tokens": 4},
                 "lps-tnp": {**_SMOKE_TOKENS, "n_samples_eval": 2},
                 "convcnp": _SMOKE_GRID_MODEL, "relaxed-convcnp": _SMOKE_GRID_MODEL,
                 "equivcnp": {**_SMOKE_GRID_MODEL, "channels": 2},
                 "te-tnp": _SMOKE_TOKENS, "e-tnp": _SMOKE_TOKENS}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "predict.json"


def model_options(name: str, size: str) -> dict[str, Any]:
    """The options of ``name`` at ``size``: the era5-uk experiment's plain (exact, no
    elevation) model of that name, else :data:`EXTRA_OPTIONS`."""
    import yaml

    config = yaml.safe_load(ERA5_CONFIG.read_text())
    sized = config["sizes"][size].get("models", {})
    for entry in config["models"]:
        if entry["name"] == name and not entry.get("options", {}).get("dim_aux") \
                and not entry.get("options", {}).get("approximate"):
            return {**entry.get("options", {}),
                    **sized.get(entry["label"], {}).get("options", {})}
    return dict(EXTRA_OPTIONS[size][name])


# --------------------------------------------------------------------------------------------
# worker


def field_and_context(grid: dict[str, tuple[float, int]], fraction: float, seed: int):
    """A smooth random field on the grid (kelvin) and its observed cells (NaN elsewhere)."""
    import numpy as np
    import xarray as xr

    lat, lon = grid_axis(*grid["lat"]), grid_axis(*grid["lon"])
    rng = np.random.default_rng(seed)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    values = 280.0 - 0.6 * (la - 50) + 3 * np.sin(lo / 7.0) + rng.normal(0, 0.5, la.shape)
    truth = xr.DataArray(values, dims=("latitude", "longitude"),
                         coords={"latitude": lat, "longitude": lon}, name="t2m",
                         attrs={"units": "K"})
    return truth, truth.where(rng.random(la.shape) < fraction)


def grid_axis(first: float, n: int):
    """``n`` coordinates at 0.25° from ``first``."""
    import numpy as np

    return first + 0.25 * np.arange(n)


def run_predict(config: dict[str, Any]) -> dict[str, Any]:
    """Time and peak memory of one ``predict`` call on the continental frame."""
    import torch

    from approxeq.data.normalise import Normaliser
    from approxeq.np import build_model, predict

    common.worker_setup(config)
    model = build_model(config["model"], 2, 1, **config["options"]).eval()
    norm = Normaliser(var="t2m", y_mean=280.0, y_std=5.0, centre=UK_CENTRE, scale=UK_SCALE,
                      units="K")
    truth, context = field_and_context(config["grid"], CONTEXT_FRACTION, int(config["seed"]))
    n_context = int(context.notnull().sum())
    target = {"latitude": truth.latitude.values, "longitude": truth.longitude.values}
    kwargs = {"max_memory_mb": config["max_memory_mb"]}
    # first-call costs (thread pools, lazy initialisation) on a corner of the field
    predict(model, context.isel(latitude=slice(0, 8), longitude=slice(0, 8)),
            {"latitude": target["latitude"][:8], "longitude": target["longitude"][:8]}, norm,
            **kwargs)
    memory = common.PeakMemory("cpu")
    memory.start()
    out = {}

    def call():
        out["ds"] = predict(model, context, target, norm, **kwargs)

    timing = common.time_calls(call, warmup=0, repeats=1)
    peak = memory.stop()
    ds = out["ds"]
    finite = bool(torch.isfinite(torch.as_tensor(ds["mean"].values)).all()
                  and torch.isfinite(torch.as_tensor(ds["std"].values)).all())
    return {"n_context": n_context, "n_target": int(truth.size), "timing": timing,
            "memory": peak, "finite": finite,
            "parameters": sum(p.numel() for p in model.parameters())}


# --------------------------------------------------------------------------------------------
# driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--size", default="quick", choices=("quick", "paper"))
    p.add_argument("--max-memory-mb", type=float, default=None,
                   help="predict's memory budget per pass (default: predict's default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-config-s", type=float, default=900.0,
                   help="time limit per model (its own process); 0: none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a tiny grid and tiny models (tests)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def configs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from approxeq.np.functional import DEFAULT_MAX_MEMORY_MB

    budget = args.max_memory_mb or DEFAULT_MAX_MEMORY_MB
    out = []
    for name in sorted(args.models, key=MODELS.index):
        options = dict(SMOKE_OPTIONS[name]) if args.smoke else model_options(name, args.size)
        out.append({"model": name, "options": options, "size": args.size,
                    "grid": SMOKE_GRID if args.smoke else GRID, "max_memory_mb": budget,
                    "seed": args.seed, "threads": args.threads})
    return out


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        ok = r.get("status") == "ok"
        rows.append([r["model"], r.get("parameters"), r.get("n_context"), r.get("n_target"),
                     r["timing"]["median_ms"] / 1000.0 if ok else None,
                     r["memory"]["peak_mb"] if ok else None,
                     r["memory"]["peak_total_mb"] if ok else None,
                     ("yes" if r["memory"]["peak_total_mb"] <= LIMIT_MB else "NO") if ok else "—",
                     "ok" if ok else f"{r.get('status')}: {r.get('error', '')[:60]}"])
    return common.format_table(rows, ["model", "params", "context", "targets", "predict s",
                                      "peak MiB (call)", "peak MiB (process)", "≤ 4 GiB",
                                      "status"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        common.worker_main(args.worker, run_predict)
        return 0
    record = common.RunRecord(
        benchmark="predict", command=common.command_line(),
        machine=common.machine_info("cpu") | {"torch_threads": args.threads, "device": "cpu"},
        settings=common.settings_of(args))
    timeout = args.max_config_s if args.max_config_s > 0 else None
    for config in configs(args):
        (result,) = common.run_worker(__file__, [config], timeout_s=timeout, threads=args.threads)
        record.results.append(result)
        if result.get("status") == "ok":
            print(f"  {config['model']:>16}: {result['timing']['median_ms'] / 1000:.1f} s, peak "
                  f"{result['memory']['peak_total_mb']:.0f} MiB", flush=True)
        else:
            print(f"  {config['model']:>16}: {result.get('status')}: {result.get('error')}",
                  flush=True)
    ok = [r for r in record.results if r.get("status") == "ok"]
    within = [r for r in ok if r["memory"]["peak_total_mb"] <= LIMIT_MB and r["finite"]]
    record.extra["limit_mb"] = LIMIT_MB
    record.extra["all_within_limit"] = len(within) == len(record.results)
    record.finish()
    print()
    print(table(record.results))
    print()
    print(f"{len(within)} of {len(record.results)} models predicted the "
          f"{ok[0]['n_target'] if ok else '?'}-cell field within {LIMIT_MB / 1024:g} GiB"
          " (whole process)")
    note = record.load_note()
    if note:
        print(note)
    print(f"wrote {common.write_json(args.out, record)}")
    return 0 if record.extra["all_within_limit"] or args.smoke and len(ok) == len(within) else 1


if __name__ == "__main__":
    sys.exit(main())
