"""The ERA5 UK experiment runner and evaluation on another file (tiny sizes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from approxeq.experiments.schema import experiment_from_dict
from approxeq.experiments.studies.era5 import (
    evaluate_on_file,
    map_panels,
    run_era5_experiment,
    weather_dir,
)

TINY_TNP = {"width": 8, "num_layers": 1, "num_heads": 2, "num_pseudo_tokens": 2}
TINY_CONV = {"channels": 4, "num_layers": 1, "kernel_size": 3, "points_per_unit": 4}


def tiny_config(**task):
    return experiment_from_dict({
        "name": "era5-tiny",
        "task": {"name": "era5-uk", "dim_x": 2, "dim_y": 1,
                 "options": {"patch_size": [6, 6], "max_targets": 16, **task}},
        "models": [
            {"label": "PT-TNP", "name": "pt-tnp", "options": TINY_TNP},
            {"label": "ConvCNP~+elev", "name": "convcnp",
             "options": {**TINY_CONV, "approximate": True, "num_fixed_inputs": 2,
                         "dim_aux": 1, "aux_dropout": 0.5}},
        ],
        "train": {"steps": 2, "batch_size": 2, "val_every": 2, "val_tasks": 2, "test_tasks": 4,
                  "eval_batch_size": 2, "device": "cpu"},
        "extra": {"equivariance_elements": 1, "equivariance_tasks": 1,
                  "map_times": ["2019-03-27T12:00"]},
    }, size="tiny")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("era5")
    drawn = []

    def figures(out_dir, panels, metrics):
        drawn.extend(panels)
        return []

    result = run_era5_experiment(tiny_config(), out, progress=False, log=lambda m: None,
                                 figures=figures)
    return out, result, drawn


def test_metrics_per_model(run):
    out, result, drawn = run
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"PT-TNP", "ConvCNP~+elev"}
    for entry in metrics.values():
        assert np.isfinite(entry["loglik"]) and entry["loglik_se"] > 0 and entry["rmse_K"] > 0
    approx = metrics["ConvCNP~+elev"]
    assert {"component_loglik", "delta_equiv_K", "correction_elevation_corr"} <= set(approx)
    assert approx["aux_vars"] == ["elevation"]
    assert "component_loglik" not in metrics["PT-TNP"]
    assert drawn == ["ConvCNP~+elev"]
    assert "Copernicus" in (out / "results.md").read_text()
    assert json.loads((out / "ConvCNP~+elev" / "normaliser.json").read_text())["var"] == "t2m"


def test_map_panels_in_kelvin_and_component_ignores_aux(run):
    out, result, _ = run
    model = result.models["ConvCNP~+elev"]
    from approxeq.data.normalise import Normaliser

    norm = Normaliser.load(out)
    p = map_panels(model, norm, weather_dir() / "era5_t2m_uk_2019-03.nc", "t2m",
                   "2019-03-27T12:00", aux=weather_dir() / "uk_elevation_on_era5_grid.nc",
                   aux_vars=["elevation"])
    assert p["full"].shape == (33, 49) and p["full"].attrs["units"] == "K"
    assert 250 < float(p["full"].mean()) < 300
    np.testing.assert_allclose(p["correction"].values, (p["full"] - p["component"]).values)
    assert float(np.abs(p["correction"]).max()) > 0


def test_evaluate_on_other_file_without_retraining(run, tmp_path):
    out, result, _ = run
    ds = xr.open_dataset(weather_dir() / "era5_t2m_uk_2019-03.nc")
    # Another region and resolution: every other cell of the south, and another variable name.
    other = ds.isel(latitude=slice(12, None, 2), longitude=slice(0, None, 2),
                    time=slice(0, 48)).rename(t2m="tas")
    path = tmp_path / "other.nc"
    other.to_netcdf(path)
    with pytest.raises(ValueError, match="aux"):
        evaluate_on_file(out, path, "tas", n_tasks=2, batch_size=2, log=lambda m: None)
    metrics, written = evaluate_on_file(out, path, "tas", n_tasks=4, batch_size=2,
                                        aux=weather_dir() / "uk_elevation_on_era5_grid.nc",
                                        log=lambda m: None)
    assert written == out / "eval" / "other-tas" / "metrics.json" and written.is_file()
    assert set(metrics) == {"PT-TNP", "ConvCNP~+elev"}
    assert all(np.isfinite(m["loglik"]) for m in metrics.values())
    single, _ = evaluate_on_file(out / "PT-TNP", path, "tas", n_tasks=2, batch_size=2,
                                 out=tmp_path / "m.json", log=lambda m: None)
    assert list(single) == ["PT-TNP"] and (tmp_path / "m.json").is_file()


def test_rerun_skips_finished_models(run):
    out, result, _ = run
    again = run_era5_experiment(tiny_config(), out, progress=False, log=lambda m: None)
    assert again.metrics["PT-TNP"]["loglik"] == result.metrics["PT-TNP"]["loglik"]


def test_unknown_task_option_is_named(tmp_path):
    with pytest.raises(ValueError, match="bogus"):
        run_era5_experiment(tiny_config(bogus=1), tmp_path, progress=False, log=lambda m: None)


def test_map_figure_carries_attribution(run, tmp_path):
    out, result, _ = run
    from approxeq.plot.maps import ERA5_ATTRIBUTION, era5_figures

    panels = {"ConvCNP~+elev": xr.load_dataset(out / "ConvCNP~+elev" / "map.nc")}
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    paths = era5_figures(tmp_path, panels, {})
    assert [p.name for p in paths] == ["maps-ConvCNP__elev.png"] and paths[0].stat().st_size > 0
    from approxeq.plot.maps import plot_correction_maps

    fig = plot_correction_maps(panels["ConvCNP~+elev"])
    assert ERA5_ATTRIBUTION in [t.get_text() for t in fig.texts]
    assert len(fig.axes) >= 6
    plt.close(fig)
    assert set(plt.get_fignums()) == before


def test_evaluate_on_file_keeps_metadata_and_never_drops_a_model(run, tmp_path):
    import shutil

    out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    ds = xr.open_dataset(weather_dir() / "era5_t2m_uk_2019-03.nc").isel(time=slice(0, 8))
    path = tmp_path / "week.nc"
    ds.to_netcdf(path)
    aux = weather_dir() / "uk_elevation_on_era5_grid.nc"
    before = (copy / "metrics.json").read_bytes()
    metrics, written = evaluate_on_file(copy, path, "t2m", n_tasks=2, batch_size=2, aux=aux,
                                        log=lambda m: None)
    assert written == copy / "eval" / "week-t2m" / "metrics.json"
    assert (copy / "metrics.json").read_bytes() == before
    entry = metrics["PT-TNP"]
    assert entry["steps"] == 2 and entry["checkpoint_step"] >= 1 and entry["parameters"] > 0
    assert {"symmetry", "approximate", "train_seconds", "name", "options"} <= set(entry)
    (copy / "PT-TNP" / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"PT-TNP/best.pt"):
        evaluate_on_file(copy, path, "t2m", n_tasks=2, batch_size=2, aux=aux,
                         out=tmp_path / "x.json", log=lambda m: None)
    assert not (tmp_path / "x.json").exists()
    kept, _ = evaluate_on_file(copy, path, "t2m", n_tasks=2, batch_size=2, aux=aux,
                               out=tmp_path / "x.json", skip_missing=True, log=lambda m: None)
    assert "best.pt" in kept["PT-TNP"]["failed"] and "loglik" in kept["ConvCNP~+elev"]
