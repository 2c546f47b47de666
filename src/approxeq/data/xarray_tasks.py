"""Neural-process tasks from any gridded xarray field (ERA5, reanalyses, satellite products).

:class:`XarrayTaskGenerator` turns a variable with latitude/longitude (and optionally time)
coordinates into :class:`~approxeq.np.Batch` es: each task is one time step and a spatial patch
(or the whole region); a random fraction of its valid cells is the context, the rest (capped at
``max_targets``) are the targets. NaN cells (sea in a land-only product) are never used. An
off-grid station table (a pandas ``DataFrame`` with lat/lon (+ time) columns) can serve as the
context. Known auxiliary fields (elevation, land mask), from another dataset on the same or any
other grid, are interpolated to the context and target locations and returned, normalised, as
``batch.aux_c`` ``[b, nc, dim_aux]`` and ``batch.aux_t`` ``[b, nt, dim_aux]``; ``batch.meta``
holds the ``time_index [b]`` of each task.

Inputs are normalised ``(lat, lon)`` (see :mod:`approxeq.data.normalise`), outputs the
normalised variable. Files are opened lazily (``xarray.open_dataset``; with ``chunks`` through
dask when it is installed), and only the selected time steps are read, one task at a time, unless
the selection is smaller than ``cache_mb``.

Needs the ``data`` extra: ``pip install 'approxeq[data]'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from approxeq.data.base import TaskGenerator
from approxeq.data.fields import (  # noqa: F401  (re-exported: the pieces used to live here)
    DAY_SPLITS,
    AuxiliaryFields,
    bilinear,
    open_field,
    select_region,
    select_times,
    select_variable,
    stations_at,
)
from approxeq.data.normalise import Normaliser
from approxeq.np.batch import Batch
from approxeq.np.prediction import coordinate_names


def _as_tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


class XarrayTaskGenerator(TaskGenerator):
    """Tasks from one variable of an xarray dataset (see the module docstring).

    Args:
        data: a path (netCDF, zarr), ``Dataset`` or ``DataArray``.
        var: the variable (e.g. ``"t2m"``).
        normaliser: a fitted :class:`~approxeq.data.normalise.Normaliser`; default: fitted on
            this generator's own selection (do that only for the training split, and pass the
            training normaliser to the validation and test generators).
        days, time_range: which time steps (see :func:`select_times`); e.g. ``days="train"``.
        region: ``{"lat": (lo, hi), "lon": (lo, hi)}`` in degrees (default: everything).
        patch_size: ``(n_lat, n_lon)`` cells per task at a random position; ``None`` = the
            whole region.
        context_fraction: ``(lo, hi)``: per batch, the fraction of valid cells used as context
            is drawn from U(lo, hi).
        min_context: at least this many context points.
        max_targets: at most this many targets per task (``None``: every other valid cell).
        min_valid: patches with fewer valid cells are redrawn.
        stations: optional station table (lat/lon (+ time) columns and ``var``); with it the
            context comes from the stations inside the patch at the task's time.
        aux, aux_vars: an auxiliary dataset (or path) and the fields to read from it; the
            normaliser is fitted to them if it has none.
        dtype: floating dtype of the batches.
        cache_mb: load the selected variable into memory when it is smaller than this (a
            multi-year file is never loaded whole; it is read one time step per task).
        chunks: dask chunks when opening a path (only used when dask is installed).
        check_range: with a given ``normaliser``, refuse data far outside what it was
            fitted on (:meth:`~approxeq.data.normalise.Normaliser.check_values`: other units).

    The data are checked first: a variable that is not a lat/lon field, a selection without
    valid values, values far outside the normaliser's range and auxiliary fields that do not
    cover the grid (a warning; an error when they cover none of it) are named in one line.

    All tasks of a batch share their context and target sizes (no padding is needed); each has
    its own time step and patch.
    """

    dim_x = 2
    dim_y = 1

    def __init__(self, data: Any, var: str | None = None, *,
                 normaliser: Normaliser | None = None,
                 days: Iterable[int] | tuple[int, int] | str | None = None,
                 time_range: tuple[Any, Any] | None = None,
                 region: dict[str, tuple[float, float]] | None = None,
                 patch_size: Sequence[int] | int | None = None,
                 context_fraction: tuple[float, float] = (0.01, 0.3), min_context: int = 1,
                 max_targets: int | None = None, min_valid: int = 2, stations: Any = None,
                 aux: Any = None, aux_vars: Sequence[str] | None = None,
                 dtype: torch.dtype | None = None, cache_mb: float = 256.0,
                 chunks: dict[str, int] | str | None = "auto", check_range: bool = True
                 ) -> None:
        self.da = self._select(open_field(data, chunks=chunks), var, days=days,
                               time_range=time_range, region=region, cache_mb=cache_mb)
        self.lat = np.asarray(self.da[self.lat_name].values, dtype=np.float64)
        self.lon = np.asarray(self.da[self.lon_name].values, dtype=np.float64)
        self.n_times = self.da.sizes[self.time_name] if self.time_name in self.da.dims else 1
        self._set_sizes(context_fraction, patch_size, max_targets)
        self.min_context, self.min_valid = min_context, min_valid
        self.dtype = dtype or torch.get_default_dtype()
        self.stations = stations
        self.aux = None if aux is None else AuxiliaryFields(aux, aux_vars)
        normaliser = self._checked_normaliser(
            normaliser, check_range, f"days={days}, time_range={time_range}, region={region}")
        if self.aux is not None:
            self._check_aux_coverage()
            normaliser = self._with_aux(normaliser)
        self.normaliser = normaliser
        # Auxiliary values of every grid cell, computed once.
        self._aux_grid = None
        if self.aux is not None:
            la, lo_ = np.meshgrid(self.lat, self.lon, indexing="ij")
            self._aux_grid = normaliser.normalise_aux(
                self.aux.raw_at(la.ravel(), lo_.ravel())).reshape(self.lat.size, self.lon.size,
                                                                  -1)
        self._x_lat = (self.lat - normaliser.centre[0]) / normaliser.scale
        self._x_lon = (self.lon - normaliser.centre[1]) / normaliser.scale

    def _select(self, ds: Any, var: str | None, *, days: Any, time_range: Any, region: Any,
                cache_mb: float) -> Any:
        """The variable as a ``(time,) lat, lon`` field over the selected times and region
        (loaded when smaller than ``cache_mb``); sets the variable's and coordinates' names."""
        da = select_variable(ds, var)
        self.var = str(var or da.name)
        try:
            self.lat_name, self.lon_name, self.time_name = coordinate_names(da, self.var)
        except ValueError as err:
            raise ValueError(f"{err}: {self.var!r} is not a lat/lon field") from None
        missing = [n for n in (self.lat_name, self.lon_name) if n not in da.dims]
        if missing:
            raise ValueError(f"{self.var}: not a lat/lon field: its dimensions are "
                             f"{list(da.dims)}, without {missing}")
        da = select_region(select_times(da, days=days, time_range=time_range), region)
        extra = [d for d in da.dims if d not in (self.lat_name, self.lon_name, self.time_name)]
        if extra:
            raise ValueError(f"var: {self.var!r} has dimensions {extra} besides lat/lon/time; "
                             "select one level first (e.g. ds.sel(level=1000))")
        order = [d for d in (self.time_name, self.lat_name, self.lon_name) if d in da.dims]
        da = da.transpose(*order)
        return da.load() if da.nbytes / 2 ** 20 <= cache_mb else da

    def _set_sizes(self, context_fraction: tuple[float, float],
                   patch_size: Sequence[int] | int | None, max_targets: int | None) -> None:
        """Check and set the context fraction, the patch size and the target cap."""
        lo, hi = (float(context_fraction[0]), float(context_fraction[1]))
        if not 0 < lo <= hi < 1:
            raise ValueError(f"context_fraction: expected 0 < lo <= hi < 1, got "
                             f"{context_fraction}")
        self.context_fraction = (lo, hi)
        if patch_size is not None:
            patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(
                int(p) for p in patch_size)
            if len(patch_size) != 2 or min(patch_size) < 1:
                raise ValueError(f"patch_size: expected (n_lat, n_lon) >= 1, got {patch_size}")
            patch_size = (min(patch_size[0], self.lat.size), min(patch_size[1], self.lon.size))
        self.patch_size = patch_size
        if max_targets is not None and max_targets < 1:
            raise ValueError(f"max_targets: expected None or >= 1, got {max_targets}")
        self.max_targets = max_targets

    def _checked_normaliser(self, normaliser: Normaliser | None, check_range: bool,
                            selection: str) -> Normaliser:
        """Refuse a selection without valid values; fit a normaliser to it, or check the
        given one against it (``check_range``)."""
        sample = self._sample_values()
        if np.isfinite(sample).sum() < self.min_valid:
            raise ValueError(f"{self.var}: the selection has no valid values (every value "
                             f"{'read' if self.n_times <= 8 else 'of 8 sampled time steps'} "
                             f"is NaN; {selection})")
        if normaliser is None:
            return Normaliser.fit(self.da, self.var)
        if check_range:
            normaliser.check_values(sample,
                                    units=str(self.da.attrs.get("units", normaliser.units)))
        return normaliser

    def _with_aux(self, normaliser: Normaliser) -> Normaliser:
        """``normaliser`` fitted to the auxiliary fields if it is not yet; refuse one fitted to
        other fields."""
        if normaliser.dim_aux == 0:
            normaliser = normaliser.fit_aux(self.aux.ds, self.aux.names, lat=self.lat,
                                            lon=self.lon)
        if list(normaliser.aux_vars) != list(self.aux.names):
            raise ValueError(f"aux_vars: the normaliser was fitted to {normaliser.aux_vars}, "
                             f"the generator reads {self.aux.names}")
        return normaliser

    def _sample_values(self, max_times: int = 8) -> np.ndarray:
        """The values of up to ``max_times`` evenly spaced time steps (all when loaded), for
        the checks of the data: a long record is never read whole for them."""
        if self.time_name not in self.da.dims or self.n_times <= max_times:
            return np.asarray(self.da.values, dtype=np.float64)
        idx = np.unique(np.linspace(0, self.n_times - 1, max_times).round().astype(int))
        return np.asarray(self.da.isel({self.time_name: idx}).values, dtype=np.float64)

    def _check_aux_coverage(self) -> None:
        """Warn when grid points of the variable lie outside the auxiliary fields' grid (their
        auxiliary values become the training mean there); refuse when none lies inside."""
        a_lat = np.asarray(self.aux.ds[self.aux.lat_name].values, dtype=np.float64)
        a_lon = np.asarray(self.aux.ds[self.aux.lon_name].values, dtype=np.float64)
        from approxeq.np.prediction import points_outside  # the check predict() runs too

        la, lo = np.meshgrid(self.lat, self.lon, indexing="ij")
        outside = points_outside(la, lo, a_lat, a_lon)
        n_out, n = int(outside.sum()), outside.size
        if n_out == 0:
            return
        where = (f"the grid of the auxiliary field(s) {self.aux.names} (lat {a_lat.min():g} to "
                 f"{a_lat.max():g}, lon {a_lon.min():g} to {a_lon.max():g})")
        if n_out == n:
            raise ValueError(f"aux: every grid point of {self.var} (lat {self.lat.min():g} to "
                             f"{self.lat.max():g}, lon {self.lon.min():g} to "
                             f"{self.lon.max():g}) lies outside {where}; give auxiliary fields "
                             "that cover the data")
        import warnings

        warnings.warn(f"aux: {n_out} of {n} grid points of {self.var} lie outside {where}; "
                      "there the auxiliary inputs are taken as their training mean",
                      UserWarning, stacklevel=3)

    @property
    def dim_aux(self) -> int:
        return 0 if self.aux is None else len(self.aux.names)

    @property
    def times(self) -> np.ndarray:
        """The selected time stamps (empty without a time coordinate)."""
        if self.time_name is None or self.time_name not in self.da.dims:
            return np.array([])
        return self.da[self.time_name].values

    def field(self, time_index: int) -> np.ndarray:
        """The raw values ``[n_lat, n_lon]`` of one time step (NaN where invalid)."""
        if self.time_name in self.da.dims:
            return np.asarray(self.da.isel({self.time_name: int(time_index)}).values,
                              dtype=np.float64)
        return np.asarray(self.da.values, dtype=np.float64)

    def _draw_patch(self, g: torch.Generator) -> tuple[int, slice, slice, np.ndarray]:
        for _ in range(100):
            t = int(torch.randint(self.n_times, (1,), generator=g))
            if self.patch_size is None:
                i = j = 0
                si, sj = slice(None), slice(None)
            else:
                pi, pj = self.patch_size
                i = int(torch.randint(self.lat.size - pi + 1, (1,), generator=g))
                j = int(torch.randint(self.lon.size - pj + 1, (1,), generator=g))
                si, sj = slice(i, i + pi), slice(j, j + pj)
            values = self.field(t)[si, sj]
            if np.isfinite(values).sum() >= self.min_valid:
                return t, si, sj, values
        raise ValueError(f"{self.var}: 100 random patches in a row had fewer than "
                         f"{self.min_valid} valid (non-NaN) cells; the data are mostly NaN "
                         "there: use a larger patch_size, a smaller min_valid, or another "
                         "region or period")

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` tasks (see the class docstring).

        Returns:
            A :class:`~approxeq.np.Batch` with ``xc [b, nc, 2]`` (normalised lat, lon),
            ``yc [b, nc, 1]``, ``xt [b, nt, 2]``, ``yt [b, nt, 1]`` (normalised variable),
            ``meta`` holding ``time_index [b]`` (long) and, with auxiliary fields,
            ``aux_c [b, nc, dim_aux]`` and ``aux_t [b, nt, dim_aux]``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        g = generator
        tasks = [self._draw_patch(g) for _ in range(batch_size)]
        frac = self.context_fraction[0] + float(torch.rand((), generator=g, dtype=torch.float64)
                                                ) * (self.context_fraction[1]
                                                     - self.context_fraction[0])
        n_valid = min(int(np.isfinite(v).sum()) for *_, v in tasks)
        station_sets = None
        if self.stations is not None:
            station_sets = [self._stations_in(t, si, sj) for t, si, sj, _ in tasks]
            n_avail = min(s[0].size for s in station_sets)
            nc = min(n_avail, max(self.min_context, int(round(frac * n_avail))))
            nt = n_valid
        else:
            nc = min(n_valid - 1, max(self.min_context, int(round(frac * n_valid))))
            nt = n_valid - nc
        if self.max_targets is not None:
            nt = min(nt, self.max_targets)
        norm = self.normaliser
        xc, yc, xt, yt, ac, at = [], [], [], [], [], []
        for k, (_, si, sj, values) in enumerate(tasks):
            ii, jj = np.nonzero(np.isfinite(values))
            ii = ii + (si.start or 0)
            jj = jj + (sj.start or 0)
            vals = values[np.isfinite(values)]
            perm = torch.randperm(ii.size, generator=g).numpy()
            if station_sets is None:
                c, tg = perm[:nc], perm[nc:nc + nt]
                xc.append(np.stack([self._x_lat[ii[c]], self._x_lon[jj[c]]], -1))
                yc.append(norm.normalise_y(vals[c]))
                if self._aux_grid is not None:
                    ac.append(self._aux_grid[ii[c], jj[c]])
            else:
                s_lat, s_lon, s_val = station_sets[k]
                pick = torch.randperm(s_lat.size, generator=g).numpy()[:nc]
                xc.append(norm.normalise_x(s_lat[pick], s_lon[pick]))
                yc.append(norm.normalise_y(s_val[pick]))
                if self.aux is not None:
                    ac.append(norm.normalise_aux(self.aux.raw_at(s_lat[pick], s_lon[pick])))
                tg = perm[:nt]
            xt.append(np.stack([self._x_lat[ii[tg]], self._x_lon[jj[tg]]], -1))
            yt.append(norm.normalise_y(vals[tg]))
            if self._aux_grid is not None:
                at.append(self._aux_grid[ii[tg], jj[tg]])
        d = self.dtype

        def stack(arrays, last=None):
            a = np.stack(arrays, 0)
            return _as_tensor(a if last is None else a.reshape(*a.shape[:2], last), d)

        meta: dict[str, Any] = {"time_index": torch.tensor([t for t, *_ in tasks])}
        aux_c = aux_t = None
        if self.aux is not None:
            aux_c, aux_t = stack(ac, self.dim_aux), stack(at, self.dim_aux)
        return Batch(xc=stack(xc, 2), yc=stack(yc, 1), xt=stack(xt, 2), yt=stack(yt, 1),
                     aux_c=aux_c, aux_t=aux_t, meta=meta)

    def _stations_in(self, t: int, si: slice, sj: slice):
        time = self.times[t] if self.times.size else None
        lat, lon, val = stations_at(self.stations, self.var, time=time)
        la, lo = self.lat[si], self.lon[sj]
        inside = ((lat >= la.min()) & (lat <= la.max()) & (lon >= lo.min()) & (lon <= lo.max()))
        if not inside.any():
            raise ValueError("stations: no station with a valid value inside a task's patch "
                             f"at time index {t}")
        return lat[inside], lon[inside], val[inside]


__all__ = ["DAY_SPLITS", "AuxiliaryFields", "XarrayTaskGenerator", "coordinate_names",
           "open_field", "select_region", "select_times", "stations_at"]


def embedded_weather_files() -> dict[str, Path]:
    """Paths of the real data shipped with the package (see its ``ATTRIBUTION.md``):
    ``"t2m"``, ERA5 hourly 2 m temperature over the UK for March 2019 (0.25°, 33 × 49, K), and
    ``"elevation"``, elevation (m) and a crude land mask on the same grid."""
    folder = Path(__file__).resolve().parents[1] / "datasets" / "weather"
    return {"t2m": folder / "era5_t2m_uk_2019-03.nc",
            "elevation": folder / "uk_elevation_on_era5_grid.nc"}
