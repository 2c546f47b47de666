"""The ERA5 UK spatial hold-out: an ``ood`` block on a part of the grid that the fixed inputs
never saw, and RelaxedConvCNP among the shipped models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("xarray")

from approxeq.approximate import FixedInput
from approxeq.experiments import load_named_experiment
from approxeq.experiments.schema import experiment_from_dict
from approxeq.experiments.studies.era5.study import ERA5_EXPERIMENT, run_era5_experiment

WEST = {"lat": [50.0, 58.0], "lon": [-10.0, -4.25]}
EAST = {"lat": [50.0, 58.0], "lon": [-1.75, 2.0]}


def holdout_config():
    return experiment_from_dict({
        "name": "era5-holdout-tiny",
        "task": {"name": "era5-uk", "dim_x": 2, "dim_y": 1,
                 "options": {"patch_size": [6, 6], "max_targets": 16, "region": WEST,
                             "holdout_region": EAST}},
        "models": [{"label": "ConvCNP~", "name": "convcnp",
                    "options": {"channels": 4, "num_layers": 1, "kernel_size": 3,
                                "points_per_unit": 8, "approximate": True,
                                "num_fixed_inputs": 2}}],
        "train": {"steps": 2, "batch_size": 2, "val_every": 2, "val_tasks": 2, "test_tasks": 4,
                  "eval_batch_size": 2, "device": "cpu"},
        "extra": {"equivariance_elements": 1, "equivariance_tasks": 1,
                  "map_times": ["2019-03-27T12:00"], "figures": False},
    }, size="tiny")


def test_holdout_gives_an_ood_block_where_the_fixed_inputs_vanish(tmp_path):
    config = holdout_config()
    result = run_era5_experiment(config, tmp_path, progress=False, log=lambda m: None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    entry = metrics["ConvCNP~"]
    assert entry["id"] == entry["test"]
    ood = entry["ood"]
    assert np.isfinite(ood["loglik"]) and ood["loglik_se"] > 0
    # outside the training part the model is exactly its equivariant component
    assert ood["delta_equiv"] == 0.0 and ood["component"]["loglik"] == ood["loglik"]
    fixed = [m for m in result.models["ConvCNP~"].modules() if isinstance(m, FixedInput)]
    tasks = ERA5_EXPERIMENT.train_tasks_only(config)
    x = torch.cat([b.xt.reshape(-1, 2) for b in
                   ERA5_EXPERIMENT.tasks(config, tmp_path, lambda m: None)["ood_plain"]])[None]
    assert fixed and all(torch.equal(f(x), torch.zeros(1, x.shape[1], f.num_channels))
                         for f in fixed)
    # the domain is the training part, widened by half a cell
    norm = tasks["normaliser"]
    (lat_lo, lat_hi), (lon_lo, lon_hi) = tasks["domain"]
    lat, lon = norm.unnormalise_x([[lat_lo, lon_lo], [lat_hi, lon_hi]])
    assert np.allclose(lat, [49.875, 58.125]) and np.allclose(lon, [-10.125, -4.125])
    assert "log-lik OOD" in (tmp_path / "results.md").read_text()


def test_shipped_era5_has_the_holdout_and_relaxed_convcnp():
    config = load_named_experiment("era5-uk", size="quick")
    assert config.task.options["holdout_region"]["lon"][0] > config.task.options["region"][
        "lon"][1]
    assert "RelaxedConvCNP" in [m.label for m in config.models]
