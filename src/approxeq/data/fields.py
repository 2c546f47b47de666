"""Gridded fields read from any xarray source (ERA5, reanalyses, satellite products): opening
a file lazily, selecting time steps and a region, bilinear interpolation to arbitrary points,
known auxiliary fields (elevation, land mask) read at points, and the rows of a station table.

These are the pieces that :class:`~approxeq.data.xarray_tasks.XarrayTaskGenerator` and
:class:`~approxeq.data.normalise.Normaliser` share; this module imports neither.

Needs the ``data`` extra: ``pip install 'approxeq[data]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from approxeq.np.prediction import coordinate_names, require_pandas, require_xarray, station_columns

#: (first day, last day) of the month, inclusive: the ERA5 experiment's split
DAY_SPLITS = {"train": (1, 21), "val": (22, 24), "test": (25, 31)}


def _has_dask() -> bool:
    try:
        import dask  # noqa: F401
    except ImportError:
        return False
    return True


def open_field(source: Any, *, chunks: dict[str, int] | str | None = "auto") -> Any:
    """Open a netCDF file, a zarr store, or pass through an ``xarray`` object, lazily.

    Args:
        source: a path (``.nc``, ``.zarr``, ...), an ``xarray.Dataset`` or ``DataArray``.
        chunks: dask chunks, used only when dask is installed; without dask the netCDF backend
            still reads lazily (values are read when indexed).
    """
    xr = require_xarray()
    if isinstance(source, (xr.Dataset, xr.DataArray)):
        return source
    path = Path(os.fspath(source))
    if not path.exists():
        raise FileNotFoundError(f"data: no file or store at {path}")
    kwargs = {"chunks": chunks} if (chunks is not None and _has_dask()) else {}
    try:
        if path.suffix == ".zarr" or (path.is_dir() and (path / ".zgroup").exists()):
            return (xr.open_zarr(path, **kwargs) if kwargs
                    else xr.open_dataset(path, engine="zarr"))
        return xr.open_dataset(path, **kwargs)
    except (ValueError, OSError, TypeError, KeyError) as err:
        # xarray's own messages list backends; the user needs to know the file is not a field
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"data: {path} is not a netCDF file or zarr store that xarray can "
                         f"read ({first[:200]})") from None


def select_variable(data: Any, var: str | None) -> Any:
    """The ``DataArray`` ``var`` of a ``Dataset`` (a ``DataArray`` passes through)."""
    xr = require_xarray()
    if isinstance(data, xr.DataArray):
        return data
    if var is None:
        raise ValueError("var: name the variable to model")
    if var not in data:
        raise ValueError(f"var: {var!r} is not a variable of the dataset; it has "
                         f"{list(data.data_vars)}")
    return data[var]


def select_times(da: Any, *, days: Iterable[int] | tuple[int, int] | str | None = None,
                 time_range: tuple[Any, Any] | None = None) -> Any:
    """Restrict ``da`` to some time steps.

    Args:
        days: days of the month to keep: a split name of :data:`DAY_SPLITS` (``"train"`` =
            days 1–21, ``"val"`` 22–24, ``"test"`` 25–31), an inclusive ``(first, last)``
            pair, or any iterable of day numbers.
        time_range: inclusive ``(start, end)`` labels (e.g. ``("2019-03-01", "2019-03-21")``).
    """
    _, _, time_name = coordinate_names(da)
    if days is None and time_range is None:
        return da
    if time_name is None:
        raise ValueError("days/time_range: the data has no time coordinate")
    if time_range is not None:
        da = da.sel({time_name: slice(*time_range)})
    if days is not None:
        if isinstance(days, str):
            if days not in DAY_SPLITS:
                raise ValueError(f"days: expected one of {list(DAY_SPLITS)}, a (first, last) "
                                 f"pair or a list of days, got {days!r}")
            days = DAY_SPLITS[days]
        if isinstance(days, tuple) and len(days) == 2:
            days = range(int(days[0]), int(days[1]) + 1)
        keep = np.isin(da[time_name].dt.day.values, np.asarray(list(days), dtype=int))
        da = da.isel({time_name: np.nonzero(keep)[0]})
    if time_name in da.dims and da.sizes[time_name] == 0:
        raise ValueError(f"days/time_range: no time steps selected (days={days}, "
                         f"time_range={time_range})")
    return da


def select_region(da: Any, region: dict[str, tuple[float, float]] | None) -> Any:
    """Restrict ``da`` to ``{"lat": (lo, hi), "lon": (lo, hi)}`` (inclusive, either order of
    the coordinate values)."""
    if not region:
        return da
    lat_name, lon_name, _ = coordinate_names(da)
    out = da
    for key, name in (("lat", lat_name), ("lon", lon_name)):
        if key in region:
            lo, hi = sorted(map(float, region[key]))
            c = out[name].values
            out = out.isel({name: np.nonzero((c >= lo) & (c <= hi))[0]})
            if out.sizes[name] == 0:
                raise ValueError(f"region: no {key} values in [{lo}, {hi}]")
    unknown = set(region) - {"lat", "lon"}
    if unknown:
        raise ValueError(f"region: unknown keys {sorted(unknown)}; use 'lat' and 'lon'")
    return out


def _axis_weights(axis: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower neighbour index, its weight, and an inside-mask of points ``q`` on a monotone
    ``axis`` (ascending or descending)."""
    if axis.size == 1:
        inside = np.isclose(q, axis[0])
        return np.zeros(q.shape, int), np.ones(q.shape), inside
    descending = axis[0] > axis[-1]
    a = axis[::-1] if descending else axis
    i = np.clip(np.searchsorted(a, q, side="right") - 1, 0, a.size - 2)
    w = (a[i + 1] - q) / (a[i + 1] - a[i])  # weight of the lower neighbour
    inside = (q >= a[0] - 1e-9) & (q <= a[-1] + 1e-9)
    if descending:
        i, w = a.size - 2 - i, 1.0 - w  # index of the larger coordinate, which comes first
    return i, w, inside


def bilinear(lat_axis: np.ndarray, lon_axis: np.ndarray, grid: np.ndarray, lat: Any,
             lon: Any) -> np.ndarray:
    """Bilinear interpolation of ``grid [n_lat, n_lon, k]`` on a rectilinear grid at points
    ``lat [n]``, ``lon [n]``: ``[n, k]``, NaN outside the grid. Exact at grid nodes."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    i, wi, in_i = _axis_weights(lat_axis, lat)
    j, wj, in_j = _axis_weights(lon_axis, lon)
    i1 = np.minimum(i + 1, lat_axis.size - 1)
    j1 = np.minimum(j + 1, lon_axis.size - 1)
    wi, wj = wi[:, None], wj[:, None]
    out = (wi * wj * grid[i, j] + wi * (1 - wj) * grid[i, j1]
           + (1 - wi) * wj * grid[i1, j] + (1 - wi) * (1 - wj) * grid[i1, j1])
    out[~(in_i & in_j)] = np.nan
    return out


class AuxiliaryFields:
    """Known fields (elevation, land mask) from a dataset on any lat/lon grid, read at arbitrary
    points by bilinear interpolation (``NaN`` outside the grid).

    Args:
        data: a ``Dataset`` (or a path opened with :func:`open_field`).
        names: the variables to use, in channel order (default: every 2-D data variable).
    """

    def __init__(self, data: Any, names: Sequence[str] | None = None) -> None:
        xr = require_xarray()
        ds = open_field(data)
        if isinstance(ds, xr.DataArray):
            ds = ds.to_dataset(name=ds.name or "aux")
        self.lat_name, self.lon_name, _ = coordinate_names(ds)
        if names is None:
            names = [n for n, v in ds.data_vars.items()
                     if set(v.dims) == {self.lat_name, self.lon_name}]
        names = list(names)
        for n in names:
            if n not in ds:
                raise ValueError(f"aux_vars: {n!r} is not a variable of the auxiliary dataset; "
                                 f"it has {list(ds.data_vars)}")
        if not names:
            raise ValueError("aux_vars: the auxiliary dataset has no lat/lon field")
        self.names = names
        # Auxiliary fields are static 2-D maps, small enough to hold in memory.
        self.ds = ds[names].load().astype("float64")
        self.units = [str(ds[n].attrs.get("units", "")) for n in names]

    def raw_at(self, lat: Any, lon: Any) -> np.ndarray:
        """Values ``[n, len(names)]`` at points ``lat [n]``, ``lon [n]`` (degrees)."""
        grid = np.stack([self.ds[n].transpose(self.lat_name, self.lon_name).values
                         for n in self.names], -1)
        return bilinear(np.asarray(self.ds[self.lat_name].values, dtype=np.float64),
                        np.asarray(self.ds[self.lon_name].values, dtype=np.float64), grid,
                        lat, lon)

    def raw_grid(self) -> np.ndarray:
        """Every grid value, ``[n_cells, len(names)]``."""
        return np.stack([self.ds[n].values.reshape(-1) for n in self.names], -1)


def stations_at(stations: Any, var: str, *, time: Any = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a station table usable as context: ``(lat [n], lon [n], value [n])`` with a
    finite value, at ``time`` when the table has a time column (or a time index level)."""
    pd = require_pandas()
    if not isinstance(stations, pd.DataFrame):
        raise TypeError(f"stations: expected a pandas DataFrame, got {type(stations).__name__}")
    df = stations.reset_index() if not isinstance(stations.index, pd.RangeIndex) else stations
    lat_c, lon_c, time_c = station_columns(df)
    cols = set(df.columns)
    if var not in cols:
        raise ValueError(f"stations: no column {var!r} (the variable); columns {sorted(cols)}")
    if time_c is not None and time is not None:
        df = df[pd.to_datetime(df[time_c]) == pd.Timestamp(time)]
    values = df[var].to_numpy(dtype=np.float64)
    ok = np.isfinite(values)
    return (df[lat_c].to_numpy(dtype=np.float64)[ok], df[lon_c].to_numpy(dtype=np.float64)[ok],
            values[ok])


__all__ = ["DAY_SPLITS", "AuxiliaryFields", "bilinear", "open_field", "select_region",
           "select_times", "select_variable", "stations_at"]
