"""predict() with several variables: a wind (u10, v10) in, its components out under their own
names; a rotation-equivariant vector model's prediction turns with the wind field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from approxeq.data.normalise import MultiNormaliser
from approxeq.np import build_model
from approxeq.np.prediction import predict

OFFSETS = np.linspace(-2.0, 2.0, 7)  # a square grid about (50 N, 0 E): a quarter turn maps it
WIND = {"units": "m s**-1"}


def wind(seed=0, n_times=None) -> xr.Dataset:
    """u10 (eastward), v10 (northward) on the grid, observed at about 40 % of the points."""
    g = np.random.default_rng(seed)
    shape = (len(OFFSETS),) * 2 if n_times is None else (n_times,) + (len(OFFSETS),) * 2
    keep = g.random(shape) < 0.4
    u, v = (np.where(keep, 3.0 + g.normal(size=shape), np.nan) for _ in range(2))
    dims = ("latitude", "longitude") if n_times is None else ("time", "latitude", "longitude")
    coords = {"latitude": 50.0 + OFFSETS, "longitude": 0.0 + OFFSETS}
    if n_times is not None:
        coords["time"] = pd.date_range("2021-06-01", periods=n_times, freq="h")
    return xr.Dataset({"u10": (dims, u, {**WIND, "long_name": "10 metre U wind component"}),
                       "v10": (dims, v, {**WIND, "long_name": "10 metre V wind component"})},
                      coords=coords)


def moved(a: np.ndarray) -> np.ndarray:
    """A grid array's values moved by R: (lat, lon) offsets (a, b) -> (-b, a) about (50 N,
    0 E)."""
    out = np.full_like(a, np.nan)
    for i, x in enumerate(OFFSETS):
        for j, y in enumerate(OFFSETS):
            out[int(np.argmin(np.abs(OFFSETS + y))), int(np.argmin(np.abs(OFFSETS - x)))] = a[i, j]
    return out


def quarter_turn(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A wind turned by R, values with locations: (northward, eastward) = (v, u) -> (-u, v)."""
    return moved(v), moved(-u)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("e-tnp", 2, 2, y_rep="vector", width=16, num_layers=1,
                       num_heads=2).double().eval()


def test_vector_normaliser_keeps_rotations(model):
    norm = MultiNormaliser.fit(wind(), ["u10", "v10"], y_rep="vector")
    assert norm.y_mean == [0.0, 0.0] and norm.y_std[0] == norm.y_std[1] > 0
    assert norm.order == [1, 0]  # the model's channels follow its inputs (lat, lon)
    y = np.array([[1.0, 2.0]])  # u = 1 east, v = 2 north
    np.testing.assert_allclose(norm.normalise_y(y), [[2.0 / norm.y_std[0], 1.0 / norm.y_std[0]]])
    np.testing.assert_allclose(norm.unnormalise_y(norm.normalise_y(y)), y)
    again = MultiNormaliser.from_dict(norm.to_dict())
    assert again == norm


def test_rotated_wind_gives_the_rotated_prediction(model):
    ds = wind()
    norm = MultiNormaliser.fit(ds, ["u10", "v10"], y_rep="vector")
    grid = {"latitude": ds.latitude.values, "longitude": ds.longitude.values}
    u, v = quarter_turn(ds.u10.values, ds.v10.values)
    out = predict(model, ds, grid, norm)
    out_r = predict(model, ds.copy(data={"u10": u, "v10": v}), grid, norm)
    u, v = quarter_turn(out.u10.values, out.v10.values)
    np.testing.assert_allclose(out_r.u10.values, u, atol=1e-9)
    np.testing.assert_allclose(out_r.v10.values, v, atol=1e-9)
    # the marginal stds of R Σ Rᵀ: a quarter turn swaps them
    np.testing.assert_allclose(out_r.u10_std.values, moved(out.v10_std.values), atol=1e-9)
    np.testing.assert_allclose(out_r.v10_std.values, moved(out.u10_std.values), atol=1e-9)
    assert not np.allclose(out_r.u10.values, out.u10.values, atol=1e-3)


def test_components_come_back_under_their_names_and_units(model):
    ds = wind(n_times=2)
    norm = MultiNormaliser.fit(ds, ["u10", "v10"], y_rep="vector")
    target = xr.Dataset(coords={"latitude": np.linspace(49.0, 51.0, 3),
                                "longitude": np.linspace(-1.0, 1.0, 4)})
    out = predict(model, ds, target, norm)
    assert set(out.data_vars) == {"u10", "v10", "u10_std", "v10_std"}
    assert out.u10.dims == ("time", "latitude", "longitude") and out.u10.shape == (2, 3, 4)
    assert out.v10.attrs["units"] == "m s**-1" and (out.v10_std > 0).all()
    assert "10 metre V wind" in out.v10.attrs["long_name"]
    assert out.attrs["variable"] == "u10 v10"


def test_a_station_table_gives_what_the_grid_gives(model):
    ds = wind()
    norm = MultiNormaliser.fit(ds, ["u10", "v10"], y_rep="vector")
    table = ds.to_dataframe().reset_index()
    table.loc[table.u10.notna().idxmax(), "v10"] = np.nan  # half a vector: left out
    masked = ds.copy(deep=True)
    row = table[table.u10.notna() & table.v10.isna()].iloc[0]
    masked["u10"].loc[{"latitude": row.latitude, "longitude": row.longitude}] = np.nan
    table = table.sample(frac=1.0, random_state=0)  # any row order
    grid = {"latitude": ds.latitude.values, "longitude": ds.longitude.values}
    a, b = predict(model, table, grid, norm), predict(model, masked, grid, norm)
    for name in ("u10", "v10", "u10_std", "v10_std"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=1e-9)


def test_mismatches_are_refused_in_one_line(model):
    ds = wind()
    grid = {"latitude": ds.latitude.values, "longitude": ds.longitude.values}
    scalars = MultiNormaliser.fit(ds, ["u10", "v10"])
    with pytest.raises(ValueError, match=r"normaliser: its fields \['scalar', 'scalar'\]"):
        predict(model, ds, grid, scalars)
    norm = MultiNormaliser.fit(ds, ["u10", "v10"], y_rep="vector")
    with pytest.raises(ValueError, match="no variable 'v10'"):
        predict(model, ds[["u10"]], grid, norm)
    with pytest.raises(ValueError, match="give a Dataset"):
        predict(model, ds.u10, grid, norm)
    with pytest.raises(ValueError, match="no column 'v10'"):
        predict(model, ds.to_dataframe().reset_index().drop(columns="v10"), grid, norm)
    with pytest.raises(ValueError, match="var: expected 2 distinct variables"):
        MultiNormaliser.fit(ds, ["u10"], y_rep="vector")
