"""predict(): xarray/pandas in, xarray out, in the variable's units and on the target grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from approxeq.approximate import equivariant_component
from approxeq.data.normalise import Normaliser
from approxeq.data.xarray_tasks import AuxiliaryFields
from approxeq.np import build_model
from approxeq.np.prediction import predict

SMALL = {"width": 16, "num_layers": 1, "num_heads": 2, "num_pseudo_tokens": 4}


def field(n_times=2) -> xr.DataArray:
    lat = np.linspace(56.0, 50.0, 7)
    lon = np.linspace(-4.0, 2.0, 9)
    time = pd.date_range("2021-06-01", periods=n_times, freq="h")
    t, la, lo = np.meshgrid(np.arange(n_times), lat, lon, indexing="ij")
    da = xr.DataArray(290 + la - lo + t, dims=("time", "latitude", "longitude"),
                      coords={"time": time,
                              "latitude": ("latitude", lat, {"units": "degrees_north"}),
                              "longitude": lon},
                      name="t2m", attrs={"units": "K", "long_name": "2 metre temperature"})
    return da


def observed(da: xr.DataArray, frac=0.3, seed=0) -> xr.DataArray:
    keep = np.random.default_rng(seed).random(da.shape) < frac
    return da.where(keep)


@pytest.fixture
def setup():
    da = field()
    norm = Normaliser.fit(da)
    model = build_model("tnp", 2, 1, **SMALL).eval()
    return da, norm, model


def test_output_on_target_grid_in_units(setup):
    da, norm, model = setup
    target = xr.Dataset(coords={"latitude": np.linspace(55.0, 51.0, 5),
                                "longitude": np.linspace(-3.0, 1.0, 4)})
    out = predict(model, observed(da), target, norm)
    assert out["mean"].dims == ("time", "latitude", "longitude")
    np.testing.assert_array_equal(out.latitude.values, target.latitude.values)
    np.testing.assert_array_equal(out.longitude.values, target.longitude.values)
    np.testing.assert_array_equal(out.time.values, da.time.values)
    assert out["mean"].attrs["units"] == "K" and out["std"].attrs["units"] == "K"
    assert (out["std"] > 0).all()


def test_values_are_the_unnormalised_model_prediction(setup):
    da, norm, model = setup
    ctx = observed(da.isel(time=0))
    out = predict(model, ctx, da, norm)
    assert out["mean"].dims == ("latitude", "longitude")
    ok = np.isfinite(ctx.values)
    la, lo = np.meshgrid(da.latitude.values, da.longitude.values, indexing="ij")
    xc = torch.tensor(norm.normalise_x(la[ok], lo[ok]), dtype=torch.float32)[None]
    yc = torch.tensor(norm.normalise_y(ctx.values[ok]), dtype=torch.float32)[None, :, None]
    xt = torch.tensor(norm.normalise_x(la.ravel(), lo.ravel()), dtype=torch.float32)[None]
    with torch.no_grad():
        pred = model(xc, yc, xt)
    np.testing.assert_allclose(out["mean"].values.ravel(),
                               pred.mean[0, :, 0].double().numpy() * norm.y_std + norm.y_mean,
                               rtol=1e-6)
    np.testing.assert_allclose(out["std"].values.ravel(),
                               pred.stddev[0, :, 0].double().numpy() * norm.y_std, rtol=1e-5)


def test_nan_cells_ignored_and_station_table_equivalent(setup):
    da, norm, model = setup
    ctx = observed(da.isel(time=0), seed=3)
    table = ctx.to_dataframe().dropna().reset_index()[["latitude", "longitude", "t2m"]]
    grid_out = predict(model, ctx, da, norm)
    station_out = predict(model, table, da, norm)
    np.testing.assert_allclose(grid_out["mean"].values, station_out["mean"].values, rtol=1e-6)
    shuffled = table.sample(frac=1.0, random_state=0).rename(columns={"latitude": "lat",
                                                                       "longitude": "lon"})
    np.testing.assert_allclose(predict(model, shuffled, da, norm)["mean"].values,
                               grid_out["mean"].values, rtol=1e-5)


def test_target_batching_does_not_change_attention_predictions(setup):
    da, norm, model = setup
    ctx = observed(da)
    whole = predict(model, ctx, da, norm)
    chunked = predict(model, ctx, da, norm, batch_targets=5)
    xr.testing.assert_allclose(whole, chunked)


@pytest.mark.parametrize("name, options", [
    ("convcnp", {"channels": 4, "num_layers": 2, "kernel_size": 3, "points_per_unit": 4}),
    ("e-tnp", {"width": 8, "num_layers": 1, "num_heads": 2}),
    ("lps-tnp", {"width": 8, "num_layers": 1, "num_heads": 2, "n_samples_eval": 2}),
])
def test_memory_budget_does_not_change_predictions(setup, name, options):
    # the grid model too: its grid covers the whole target grid, whatever the chunks
    da, norm, _ = setup
    model = build_model(name, 2, 1, **options).double().eval()
    ctx = observed(da.isel(time=0))
    torch.manual_seed(0)
    whole = predict(model, ctx, da, norm, max_memory_mb=1e4)
    torch.manual_seed(0)
    chunked = predict(model, ctx, da, norm, max_memory_mb=1e-3)
    np.testing.assert_allclose(chunked["mean"].values, whole["mean"].values, rtol=0, atol=1e-9)
    np.testing.assert_allclose(chunked["std"].values, whole["std"].values, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="batch_targets"):
        predict(model, ctx, da, norm, batch_targets=0)


def test_station_table_with_time_column(setup):
    da, norm, model = setup
    table = observed(da).to_dataframe().dropna().reset_index()
    out = predict(model, table, {"latitude": [52.0, 53.0], "longitude": [0.0, 1.0, 1.5]}, norm)
    assert out["mean"].shape == (2, 2, 3)
    assert "time" in out.coords


def test_aux_model_and_component(tmp_path):
    da = field(1)
    elev = xr.Dataset({"elevation": (("latitude", "longitude"),
                                     np.outer(np.linspace(0, 500, 7), np.ones(9)))},
                      coords={"latitude": da.latitude.values, "longitude": da.longitude.values})
    aux = AuxiliaryFields(elev, ["elevation"])
    norm = Normaliser.fit(da).fit_aux(elev, ["elevation"])
    model = build_model("te-tnp", 2, 1, **SMALL, dim_aux=1).eval()
    ctx = observed(da.isel(time=0))
    with pytest.raises(ValueError, match="aux"):
        predict(model, ctx, da, norm)
    full = predict(model, ctx, da, norm, aux=aux.raw_at)
    comp = predict(model, ctx, da, norm, aux=aux.raw_at, component=True)
    assert not np.allclose(full["mean"].values, comp["mean"].values)
    with equivariant_component(model):
        inside = predict(model, ctx, da, norm, aux=aux.raw_at)
    xr.testing.assert_allclose(inside, comp)


def stations(da: xr.DataArray) -> pd.DataFrame:
    return da.isel(time=0).to_dataframe().reset_index()[["latitude", "longitude", "t2m"]][::4]


@pytest.mark.parametrize("spoil, message", [
    (lambda t: t.assign(t2m=t.t2m - 273.15), r"t2m: values from .* are far outside the "
                                             r"training range .* other units"),
    (lambda t: t.rename(columns={"latitude": "longitude", "longitude": "latitude"}),
     r"context: every observation \(lat -4 to 2, lon 5\d to 5\d\) lies more than .* degrees "
     r"outside the target grid .* swapped\?"),
    (lambda t: t.assign(t2m=np.nan), r"context: no valid values of 't2m' .*prior"),
])
def test_station_tables_are_checked_as_eval_checks_data(setup, spoil, message):
    # °C against a model trained in K, swapped lat/lon, an all-NaN column: each used to give
    # the prior or a shifted field without a word
    da, norm, model = setup
    table = stations(da)
    predict(model, table, da, norm)  # the table itself is fine
    with pytest.raises(ValueError, match=message):
        predict(model, spoil(table), da, norm)


def test_gridded_context_in_other_units_is_refused_naming_them(setup):
    da, norm, model = setup
    celsius = (observed(da) - 273.15).assign_attrs(units="degC")
    with pytest.raises(ValueError, match="units 'degC', training units 'K'"):
        predict(model, celsius, da, norm)


@pytest.mark.parametrize("grid, message", [
    (xr.DataArray(np.zeros((3, 4)), dims=("latitude", "longitude")),
     "latitude is a dimension without coordinate values"),
    ({"latitude": [], "longitude": [0.0]}, "expected at least one finite latitude, got 0"),
    ({"latitude": [51.0, np.nan], "longitude": [0.0]}, "with NaN or inf"),
])
def test_a_target_grid_without_points_is_refused(setup, grid, message):
    # a grid of dimensions only used to predict at the indices 0, 1, 2 as if they were degrees
    da, norm, model = setup
    with pytest.raises(ValueError, match=f"target_grid: .*{message}"):
        predict(model, observed(da), grid, norm)


def test_a_missing_model_or_normaliser_is_named(setup):
    da, norm, model = setup
    with pytest.raises(TypeError, match="normaliser: expected the Normaliser .* got NoneType"):
        predict(model, observed(da), da, None)
    with pytest.raises(TypeError, match="model: expected a trained neural process .* got str"):
        predict("best.pt", observed(da), da, norm)
