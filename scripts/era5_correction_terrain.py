"""How the learned corrections of an ERA5 run relate to the terrain, inside the training region.

``era5-uk`` reports ``correction_elevation_corr``: the correlation of the correction (full minus
equivariant-component mean) with the elevation field, pooled over the maps' whole grid. Two
things blur that measure: the grid reaches beyond the fixed inputs' domain (the held-out east,
where the correction is exactly zero), and the elevation file holds the sea floor as negative
heights, which do nothing to the 2 m temperature. This script recomputes, from each model's best
checkpoint and on the run's own map times and context draws, inside the training region only:

* ``corr_elevation_whole_map``: the run's own measure (whole grid, sea floor included);
* ``corr_elevation_in_region``: the same inside the training region;
* ``correction_land_height_corr``: with ``h⁺ = max(elevation, 0)``, the height a lapse rate
  acts on, and ``correction_land_corr``: with the land–sea mask (the study's own measures
  since this script was written: :func:`correction_terrain_correlations`);

and writes them, per seed and as the mean over seeds, as JSON::

    python scripts/era5_correction_terrain.py runs/era5-fi --json docs/results/.../terrain.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from approxeq.approximate import is_approximate
from approxeq.experiments import experiment_for, load_experiment
from approxeq.experiments.aggregate import mean_and_se
from approxeq.experiments.studies.era5.study import (
    EXTRA_DEFAULTS,
    correction_elevation_correlation,
    correction_terrain_correlations,
    in_region,
    map_panels,
)
from approxeq.files import write_json_atomic
from approxeq.train.checkpoint import load_model
from approxeq.train.rundir import BEST, CONFIG


def terrain_correlations(panels: list[Any], region: dict[str, list[float]]) -> dict[str, float]:
    inside = [in_region(p, region) for p in panels]
    c = np.concatenate([p["correction"].values.ravel() for p in inside])
    return {"corr_elevation_whole_map": correction_elevation_correlation(panels),
            "corr_elevation_in_region": correction_elevation_correlation(inside),
            **correction_terrain_correlations(panels, region),
            "correction_std_K_in_region": float(np.nanstd(c))}


def seed_correlations(seed_dir: Path) -> dict[str, dict[str, float]]:
    raw = load_experiment(seed_dir / CONFIG, size="quick")
    tasks = experiment_for(raw).train_tasks_only(raw)
    o, normaliser = tasks["options"], tasks["normaliser"]
    extra = {**EXTRA_DEFAULTS, **raw.extra}
    out = {}
    for mc in raw.models:
        ckpt = seed_dir / mc.label / BEST
        if not ckpt.is_file():
            continue
        model = load_model(ckpt).eval()
        if not (is_approximate(model) or getattr(model, "dim_aux", 0)):
            continue
        panels = [map_panels(model, normaliser, o["data"], o["var"], when, aux=o["aux"],
                             aux_vars=o["aux_vars"],
                             context_fraction=float(extra["map_context_fraction"]),
                             seed=int(extra["map_seed"]) + k)
                  for k, when in enumerate(extra["map_times"])]
        out[mc.label] = terrain_correlations(panels, o["region"])
        print(seed_dir.name, mc.label, {k: round(v, 3) for k, v in out[mc.label].items()},
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an era5-uk run directory (seed-*/ or one seed)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = sorted(args.run.glob("seed-*/"), key=lambda p: int(p.name[5:])) or [args.run]
    per_seed = {s.name: seed_correlations(s) for s in seeds}
    labels = {label for numbers in per_seed.values() for label in numbers}
    mean: dict[str, dict[str, Any]] = {}
    for label in sorted(labels):
        rows = [numbers[label] for numbers in per_seed.values() if label in numbers]
        mean[label] = {}
        for key in rows[0]:
            m, se = mean_and_se([r[key] for r in rows])
            mean[label][key] = {"mean": m, "se_seeds": se}
        print(label, {k: f"{v['mean']:.2f} ({v['se_seeds']:.2f})" for k, v in mean[label].items()})
    if args.json is not None:
        write_json_atomic(args.json, {"per_seed": per_seed, "mean_over_seeds": mean})


if __name__ == "__main__":
    main()
