"""The xarray task loader and the normaliser (synthetic netCDF files, plus the shipped ERA5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from approxeq.data.normalise import Normaliser
from approxeq.data.xarray_tasks import (
    AuxiliaryFields,
    XarrayTaskGenerator,
    bilinear,
    open_field,
    select_times,
)

WEATHER = Path(__file__).resolve().parents[1] / "src" / "approxeq" / "datasets" / "weather"


def synthetic(tmp_path, *, sea=True, n_days=6) -> tuple[Path, xr.Dataset]:
    """Hourly field on a descending-latitude grid, NaN over a 'sea' block, in kelvin."""
    time = pd.date_range("2020-01-01", periods=24 * n_days, freq="h")
    lat = np.linspace(55.0, 50.0, 11)
    lon = np.linspace(-5.0, 3.0, 17)
    t, la, lo = np.meshgrid(np.arange(time.size), lat, lon, indexing="ij")
    values = 280 + 3 * np.sin(t / 5.0) + la - 0.5 * lo
    if sea:
        values[:, :3, :4] = np.nan
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), values.astype(np.float32),
                             {"units": "K", "long_name": "air temperature"})},
                    coords={"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
                            "lon": ("lon", lon, {"units": "degrees_east"})})
    path = tmp_path / "field.nc"
    ds.to_netcdf(path)
    return path, ds


def elevation(tmp_path) -> Path:
    """A coarser auxiliary grid (different from the data's)."""
    lat = np.linspace(49.0, 56.0, 8)
    lon = np.linspace(-6.0, 4.0, 11)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ds = xr.Dataset({"elevation": (("latitude", "longitude"), 100 * (la - 49) + 10 * lo,
                                   {"units": "m"}),
                     "land": (("latitude", "longitude"), (lo > -3).astype(np.int8))},
                    coords={"latitude": lat, "longitude": lon})
    path = tmp_path / "elev.nc"
    ds.to_netcdf(path)
    return path


def test_open_is_lazy_and_keeps_coords(tmp_path):
    path, ds = synthetic(tmp_path)
    opened = open_field(path)
    assert not opened["tas"].variable._in_memory
    xr.testing.assert_identical(opened["lat"], ds["lat"])
    assert opened["tas"].attrs["units"] == "K"


def test_normaliser_inverts_exactly_and_round_trips(tmp_path):
    path, _ = synthetic(tmp_path)
    norm = Normaliser.fit(open_field(path), "tas", time_block=7)
    y = np.array([271.3, 280.0, 290.25])
    np.testing.assert_allclose(norm.unnormalise_y(norm.normalise_y(y)), y, rtol=0, atol=1e-12)
    lat, lon = np.array([50.0, 52.5]), np.array([-5.0, 3.0])
    back = norm.unnormalise_x(norm.normalise_x(lat, lon))
    np.testing.assert_allclose(back[0], lat, atol=1e-12)
    np.testing.assert_allclose(back[1], lon, atol=1e-12)
    assert Normaliser.load(norm.save(tmp_path)) == norm
    assert norm.units == "K"


def test_normaliser_statistics_and_shared_scale(tmp_path):
    path, ds = synthetic(tmp_path)
    norm = Normaliser.fit(open_field(path), "tas", time_block=5)
    v = ds["tas"].values.astype(np.float64)
    assert norm.y_mean == pytest.approx(np.nanmean(v), abs=1e-9)
    assert norm.y_std == pytest.approx(np.nanstd(v), rel=1e-9)
    x = norm.normalise_x(np.array([50.0, 55.0, 50.0]), np.array([-5.0, -5.0, 0.0]))
    # One scale for both axes: 5 degrees is the same distance along lat and along lon.
    assert np.linalg.norm(x[1] - x[0]) == pytest.approx(np.linalg.norm(x[2] - x[0]))
    assert np.abs(norm.normalise_x(ds.lat.values, np.zeros(11) - 1)).max() <= 2 + 1e-9


def test_day_split_selects_days(tmp_path):
    path, _ = synthetic(tmp_path)
    da = open_field(path)["tas"]
    assert set(select_times(da, days=(2, 3)).time.dt.day.values) == {2, 3}
    assert select_times(da, time_range=("2020-01-05", "2020-01-06")).sizes["time"] == 48
    with pytest.raises(ValueError, match="no time steps"):
        select_times(da, days="test")


def _cells(gen, x):
    """Grid indices ``(i, j)`` of normalised inputs ``x [n, 2]``."""
    lat, lon = gen.normaliser.unnormalise_x(x.double().numpy())
    return [(int(np.argmin(np.abs(gen.lat - a))), int(np.argmin(np.abs(gen.lon - b))))
            for a, b in zip(lat, lon)]


def test_tasks_disjoint_and_never_use_nan_cells(tmp_path):
    path, _ = synthetic(tmp_path)
    gen = XarrayTaskGenerator(path, "tas", days=(1, 4), patch_size=(6, 8), max_targets=30)
    batch = gen.sample(8, torch.Generator().manual_seed(0))
    for k in range(8):
        truth = gen.field(int(batch.meta["time_index"][k]))
        ctx, tgt = _cells(gen, batch.xc[k]), _cells(gen, batch.xt[k])
        assert ctx and tgt and not set(ctx) & set(tgt)
        for cells, y in ((ctx, batch.yc[k]), (tgt, batch.yt[k])):
            values = np.array([truth[i, j] for i, j in cells])
            assert np.isfinite(values).all()
            np.testing.assert_allclose(gen.normaliser.unnormalise_y(y[:, 0].double().numpy()),
                                       values, atol=1e-3)
    assert batch.xt.shape[1] <= 30


def test_whole_region_tasks_cover_exactly_the_valid_cells(tmp_path):
    path, ds = synthetic(tmp_path)
    gen = XarrayTaskGenerator(path, "tas", context_fraction=(0.2, 0.2))
    batch = gen.sample(3, torch.Generator().manual_seed(1))
    valid = np.isfinite(ds["tas"].values[0])
    assert batch.xc.shape[1] == round(0.2 * valid.sum())
    for k in range(3):
        cells = _cells(gen, batch.xc[k]) + _cells(gen, batch.xt[k])
        assert len(set(cells)) == len(cells)
        assert set(cells) == set(zip(*np.nonzero(valid)))


def test_fixed_sets_reproducible(tmp_path):
    path, _ = synthetic(tmp_path)
    gen = XarrayTaskGenerator(path, "tas", patch_size=5)
    a, b = gen.fixed_set(6, 4, seed=3), gen.fixed_set(6, 4, seed=3)
    for x, y in zip(a, b):
        assert torch.equal(x.xc, y.xc) and torch.equal(x.yt, y.yt)
    assert not torch.equal(gen.fixed_set(6, 4, seed=4)[0].xc, a[0].xc)


def test_aux_fields_in_batch(tmp_path):
    path, _ = synthetic(tmp_path)
    gen = XarrayTaskGenerator(path, "tas", patch_size=6, aux=elevation(tmp_path),
                              aux_vars=["elevation", "land"])
    batch = gen.sample(4, torch.Generator().manual_seed(0))
    assert batch.aux_c.shape == (*batch.xc.shape[:2], 2)
    assert batch.aux_t.shape == (*batch.xt.shape[:2], 2)
    norm = gen.normaliser
    lat, lon = norm.unnormalise_x(batch.xt[0].double().numpy())
    raw = 100 * (lat - 49) + 10 * lon  # the elevation formula, linear so interpolation is exact
    expected = (raw - norm.aux_mean[0]) / norm.aux_std[0]
    np.testing.assert_allclose(batch.aux_t[0, :, 0].double().numpy(), expected, atol=1e-4)


def test_bilinear_exact_on_nodes_and_nan_outside():
    lat, lon = np.array([3.0, 2.0, 1.0]), np.array([0.0, 1.0, 2.0])
    grid = (10 * lat[:, None] + lon[None, :])[..., None]
    out = bilinear(lat, lon, grid, np.array([3.0, 1.5, 0.0]), np.array([2.0, 0.25, 1.0]))
    np.testing.assert_allclose(out[:2, 0], [32.0, 15.25])
    assert np.isnan(out[2, 0])


def test_station_table_as_context(tmp_path):
    path, ds = synthetic(tmp_path, sea=False, n_days=1)
    rng = np.random.default_rng(0)
    rows = []
    for t in ds.time.values[:3]:
        for _ in range(12):
            la, lo = rng.uniform(50.5, 54.5), rng.uniform(-4.5, 2.5)
            rows.append({"time": t, "lat": la, "lon": lo, "tas": 280.0 + la})
    stations = pd.DataFrame(rows)
    gen = XarrayTaskGenerator(path, "tas", time_range=(ds.time.values[0], ds.time.values[2]),
                              stations=stations, context_fraction=(0.5, 0.5))
    batch = gen.sample(2, torch.Generator().manual_seed(0))
    assert batch.xc.shape[1] == 6
    lat, _ = gen.normaliser.unnormalise_x(batch.xc[0].double().numpy())
    np.testing.assert_allclose(gen.normaliser.unnormalise_y(batch.yc[0, :, 0].double().numpy()),
                               280.0 + lat, atol=1e-3)


def test_errors_name_the_argument(tmp_path):
    path, _ = synthetic(tmp_path)
    with pytest.raises(ValueError, match="var"):
        XarrayTaskGenerator(path, "nope")
    with pytest.raises(ValueError, match="context_fraction"):
        XarrayTaskGenerator(path, "tas", context_fraction=(0.5, 0.1))
    with pytest.raises(FileNotFoundError, match="data"):
        open_field(tmp_path / "missing.nc")


def test_shipped_era5_file():
    gen = XarrayTaskGenerator(WEATHER / "era5_t2m_uk_2019-03.nc", "t2m", days="train",
                              patch_size=16, max_targets=64,
                              aux=WEATHER / "uk_elevation_on_era5_grid.nc",
                              aux_vars=["elevation"])
    assert gen.n_times == 21 * 24 and gen.normaliser.units == "K"
    assert 270 < gen.normaliser.y_mean < 290
    batch = gen.sample(2, torch.Generator().manual_seed(0))
    assert batch.xt.shape == (2, 64, 2) and batch.aux_t.shape == (2, 64, 1)
    elev = AuxiliaryFields(WEATHER / "uk_elevation_on_era5_grid.nc", ["elevation"])
    assert elev.raw_grid().max() > 500  # the Scottish Highlands
