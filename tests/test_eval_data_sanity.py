"""`eval --data` refuses data that cannot be what the model was trained on: other units, all
NaN, not a field, and auxiliary fields that do not cover the grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from approxeq.data.normalise import Normaliser
from approxeq.data.xarray_tasks import XarrayTaskGenerator
from approxeq.experiments.studies.era5 import evaluate_on_file
from approxeq.np import build_model

LAT = np.linspace(50.0, 52.5, 6)
LON = np.linspace(-3.0, -0.5, 6)


def field(values=None, name="t2m", units="K", lat=LAT, lon=LON):
    rng = np.random.default_rng(0)
    if values is None:
        values = 280.0 + 3.0 * rng.standard_normal((4, lat.size, lon.size))
    da = xr.DataArray(values, dims=("time", "latitude", "longitude"),
                      coords={"time": pd.date_range("2019-03-01", periods=4, freq="6h"),
                              "latitude": lat, "longitude": lon},
                      name=name, attrs={"units": units})
    return da.to_dataset()


def elevation(lat, lon):
    grid = np.outer(np.arange(lat.size), np.ones(lon.size)) * 100.0
    return xr.Dataset({"elevation": (("latitude", "longitude"), grid, {"units": "m"})},
                      coords={"latitude": lat, "longitude": lon})


@pytest.fixture
def kelvin(tmp_path):
    path = tmp_path / "kelvin.nc"
    field().to_netcdf(path)
    return path, Normaliser.fit(field()["t2m"], "t2m")


def test_celsius_against_a_kelvin_normaliser_is_refused(kelvin, tmp_path):
    _, norm = kelvin
    celsius = field()
    celsius["t2m"] = celsius["t2m"] - 273.15
    celsius["t2m"].attrs["units"] = "degC"
    path = tmp_path / "celsius.nc"
    celsius.to_netcdf(path)
    with pytest.raises(ValueError, match=r"t2m: values .* far outside the training range.*"
                                         r"units\?"):
        XarrayTaskGenerator(path, "t2m", normaliser=norm)
    model = build_model("cnp", 2, 1, width=8, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="'degC', training units 'K'"):
        evaluate_on_file(model, path, "t2m", normaliser=norm, n_tasks=2, batch_size=2,
                         log=lambda m: None)
    # data in the training units, even from another month, pass
    warmer = field()
    warmer["t2m"] = warmer["t2m"] + 10.0
    warmer.to_netcdf(tmp_path / "warmer.nc")
    gen = XarrayTaskGenerator(tmp_path / "warmer.nc", "t2m", normaliser=norm)
    assert gen.sample(2, __import__("torch").Generator().manual_seed(0)).yt.shape[0] == 2


def test_all_nan_data_is_named_not_blamed_on_patch_size(kelvin, tmp_path):
    _, norm = kelvin
    path = tmp_path / "nan.nc"
    field(np.full((4, LAT.size, LON.size), np.nan)).to_netcdf(path)
    with pytest.raises(ValueError, match="t2m: the selection has no valid values") as err:
        XarrayTaskGenerator(path, "t2m", normaliser=norm, patch_size=[3, 3])
    assert "patch_size" not in str(err.value)


def test_a_file_that_is_not_a_field_is_named(kelvin, tmp_path):
    _, norm = kelvin
    text = tmp_path / "notes.nc"
    text.write_text("these are not the data you are looking for\n")
    with pytest.raises(ValueError, match="notes.nc is not a netCDF file"):
        XarrayTaskGenerator(text, "t2m", normaliser=norm)
    series = xr.Dataset({"t2m": ("time", np.arange(4.0) + 280)},
                        coords={"time": pd.date_range("2019-03-01", periods=4)})
    series.to_netcdf(tmp_path / "series.nc")
    with pytest.raises(ValueError, match="'t2m' is not a lat/lon field"):
        XarrayTaskGenerator(tmp_path / "series.nc", "t2m", normaliser=norm)
    with pytest.raises(ValueError, match="var: 'tas' is not a variable"):
        XarrayTaskGenerator(kelvin[0], "tas", normaliser=norm)


def test_points_outside_the_auxiliary_grid_warn_or_refuse(kelvin):
    path, norm = kelvin
    half = elevation(LAT[:3], LON)  # covers the southern half only
    with pytest.warns(UserWarning, match=r"aux: 18 of 36 grid points of t2m lie outside"):
        XarrayTaskGenerator(path, "t2m", normaliser=norm, aux=half, aux_vars=["elevation"])
    far = elevation(LAT + 20.0, LON)
    with pytest.raises(ValueError, match="aux: every grid point of t2m .* lies outside"):
        XarrayTaskGenerator(path, "t2m", normaliser=norm, aux=far, aux_vars=["elevation"])
