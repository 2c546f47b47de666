"""Predict a gridded field with a trained neural process: xarray (or pandas) in, xarray out.

:func:`predict` takes the observed context (a gridded ``DataArray``/``Dataset`` with NaN where
nothing was observed, or a station table), a target grid and the
:class:`~approxeq.data.normalise.Normaliser` the model was trained with, and returns an
``xarray.Dataset`` with the predictive ``mean`` and ``std`` in the variable's original units, on
the target grid's coordinates. With a normaliser of several variables (a
:class:`~approxeq.data.normalise.MultiNormaliser`, e.g. the wind ``["u10", "v10"]`` as one
vector), the context holds each of them and the result returns each under its own name (and
``<name>_std``).

This module sits in the ``np`` layer, below ``data``: it uses the normaliser through its
methods only (``normalise_x``, ``normalise_y``, ``unnormalise_y``, ``unnormalise_std``,
``normalise_aux`` and the attributes ``var``, ``units``, ``attrs``, ``dim_aux``) and takes
auxiliary fields as a function of location. The helpers that read coordinates and station
tables live here too so that :mod:`approxeq.data` can share them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from approxeq.nn.placement import model_dtype_device
from approxeq.np.functional import DEFAULT_MAX_MEMORY_MB, evaluation_mode, forward_in_chunks

LAT_NAMES = ("latitude", "lat", "y")
LON_NAMES = ("longitude", "lon", "x")
TIME_NAMES = ("time", "valid_time", "t")

#: ``aux(lat [n], lon [n]) -> raw auxiliary values [n, dim_aux]``, e.g.
#: :meth:`approxeq.data.xarray_tasks.AuxiliaryFields.raw_at`
AuxFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def require_xarray():
    """Import xarray, or explain which extra installs it."""
    try:
        import xarray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the environmental-data workflow needs xarray, netCDF4 and pandas: "
                          "pip install 'approxeq[data]'") from err
    return xarray


def require_pandas():
    """Import pandas, or explain which extra installs it."""
    try:
        import pandas
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("station tables need pandas: pip install 'approxeq[data]'") from err
    return pandas


def _find(names: Sequence[str], candidates: Sequence[str], what: str, where: str,
          required: bool = True) -> str | None:
    for c in candidates:
        if c in names:
            return c
    if required:
        raise ValueError(f"{where}: no {what} coordinate or column (looked for "
                         f"{', '.join(candidates)}); found {sorted(map(str, names))}")
    return None


def coordinate_names(obj: Any, where: str = "data") -> tuple[str, str, str | None]:
    """Names of the latitude, longitude and (``None`` if absent) time coordinates of an
    xarray object."""
    names = list(obj.coords) + [d for d in getattr(obj, "dims", ()) if d not in obj.coords]
    return (_find(names, LAT_NAMES, "latitude", where), _find(names, LON_NAMES, "longitude", where),
            _find(names, TIME_NAMES, "time", where, required=False))


def station_columns(df: Any, where: str = "stations") -> tuple[str, str, str | None]:
    """Names of the latitude, longitude and (``None`` if absent) time columns of a table."""
    cols = list(df.columns)
    return (_find(cols, LAT_NAMES, "latitude", where), _find(cols, LON_NAMES, "longitude", where),
            _find(cols, TIME_NAMES, "time", where, required=False))


def _as_frame(df: Any) -> Any:
    pd = require_pandas()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"context: expected a pandas DataFrame, got {type(df).__name__}")
    return df if isinstance(df.index, pd.RangeIndex) else df.reset_index()


def _context_sets(context: Any, names: Sequence[str]
                  ) -> tuple[list[Any], list[tuple[np.ndarray, ...]], str]:
    """Per time step ``(lat [n], lon [n], values [n, len(names)])`` of the valid context
    observations (a point is valid where every variable is finite); the time labels
    (``[None]`` for a single time) and the name of the time coordinate."""
    xr = require_xarray()
    model_vars = names[0] if len(names) == 1 else names
    if isinstance(context, xr.DataArray) and len(names) > 1:
        raise ValueError(f"context: the model predicts {list(names)}; give a Dataset (or a "
                         f"table) holding each of them, got one DataArray {context.name!r}")
    if isinstance(context, xr.Dataset):
        missing = [v for v in names if v not in context]
        if missing:
            raise ValueError(f"context: the dataset has no variable {missing[0]!r} (the "
                             f"model's: {model_vars!r}); it has {list(context.data_vars)}")
        context = (context[names[0]] if len(names) == 1
                   else context[list(names)].to_array("variable").transpose(..., "variable"))
    if isinstance(context, xr.DataArray):
        lat_n, lon_n, time_n = coordinate_names(context, "context")
        if time_n is not None and time_n in context.dims:
            times = list(context[time_n].values)
            slices = [context.isel({time_n: k}) for k in range(len(times))]
        else:
            times, slices = [None], [context]
        sets = []
        for s in slices:
            extra = [d for d in s.dims if d not in (lat_n, lon_n, "variable")]
            if extra:
                raise ValueError(f"context: unexpected dimensions {extra} besides lat/lon/time")
            s = s.transpose(lat_n, lon_n, ...)
            values = np.asarray(s.values, dtype=np.float64).reshape(
                s.sizes[lat_n], s.sizes[lon_n], len(names))
            la, lo = np.meshgrid(np.asarray(s[lat_n].values, float),
                                 np.asarray(s[lon_n].values, float), indexing="ij")
            ok = np.isfinite(values).all(-1)
            sets.append((la[ok], lo[ok], values[ok]))
        return times, sets, time_n or "time"
    df = _as_frame(context)
    lat_c, lon_c, time_c = station_columns(df, "context")
    missing = [v for v in names if v not in df.columns]
    if missing:
        raise ValueError(f"context: the table has no column {missing[0]!r} (the model's "
                         f"variable{'s' if len(names) > 1 else ''} {model_vars!r}); columns "
                         f"{list(df.columns)}")
    groups = [(None, df)] if time_c is None else list(df.groupby(time_c, sort=True))
    times, sets = [], []
    for t, part in groups:
        values = part[list(names)].to_numpy(dtype=np.float64)
        ok = np.isfinite(values).all(-1)
        times.append(t)
        sets.append((part[lat_c].to_numpy(dtype=np.float64)[ok],
                     part[lon_c].to_numpy(dtype=np.float64)[ok], values[ok]))
    return times, sets, time_c or "time"


def variable_names(normaliser: Any) -> list[str]:
    """The variables a normaliser maps: ``[var]`` for one, its list for several."""
    var = normaliser.var
    return [var] if isinstance(var, str) else [str(v) for v in var]


def points_outside(lat: Any, lon: Any, grid_lat: Any, grid_lon: Any,
                   margin: float = 1e-9) -> np.ndarray:
    """Which points ``(lat [n], lon [n])`` lie more than ``margin`` degrees outside the box of
    a grid's axes ``grid_lat``, ``grid_lon``: ``[n]`` booleans. The one coverage check of
    ``eval --data`` (grid points against the auxiliary fields) and of :func:`predict`
    (observations against the target grid)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    g_lat, g_lon = np.asarray(grid_lat, dtype=np.float64), np.asarray(grid_lon, dtype=np.float64)
    return ~((lat >= g_lat.min() - margin) & (lat <= g_lat.max() + margin)
             & (lon >= g_lon.min() - margin) & (lon <= g_lon.max() + margin))


def _axis(values: Any, name: str, has_coordinate: bool = True) -> np.ndarray:
    axis = np.asarray(values, dtype=np.float64)
    if not has_coordinate:
        raise ValueError(f"target_grid: {name} is a dimension without coordinate values; give "
                         f"the grid's {name} values (e.g. grid.assign_coords({name}=[...]))")
    if axis.ndim > 1:
        raise ValueError(f"target_grid: {name} must be one axis of a regular grid, got a "
                         f"{axis.ndim}-D coordinate of shape {axis.shape}")
    axis = axis.reshape(-1)
    if axis.size == 0 or not np.isfinite(axis).all():
        raise ValueError(f"target_grid: expected at least one finite {name}, got "
                         f"{axis.size} value(s){'' if axis.size == 0 else ' with NaN or inf'}")
    return axis


def _target_axes(target_grid: Any) -> tuple[str, np.ndarray, str, np.ndarray]:
    xr = require_xarray()
    if isinstance(target_grid, (xr.Dataset, xr.DataArray)):
        lat_n, lon_n, _ = coordinate_names(target_grid, "target_grid")
        return (lat_n, _axis(target_grid[lat_n].values, lat_n, lat_n in target_grid.coords),
                lon_n, _axis(target_grid[lon_n].values, lon_n, lon_n in target_grid.coords))
    if isinstance(target_grid, dict):
        lat_n = _find(list(target_grid), LAT_NAMES, "latitude", "target_grid")
        lon_n = _find(list(target_grid), LON_NAMES, "longitude", "target_grid")
        return (lat_n, _axis(np.ravel(target_grid[lat_n]), lat_n), lon_n,
                _axis(np.ravel(target_grid[lon_n]), lon_n))
    raise TypeError("target_grid: expected an xarray Dataset/DataArray or a dict "
                    f"{{'latitude': [...], 'longitude': [...]}}, got {type(target_grid).__name__}")


def _context_units(context: Any, names: Sequence[str]) -> list[str | None]:
    xr = require_xarray()
    out = []
    for var in names:
        source = context[var] if isinstance(context, xr.Dataset) else context
        units = getattr(source, "attrs", {}).get("units") if isinstance(
            source, (xr.Dataset, xr.DataArray)) else None
        out.append(None if units is None else str(units))
    return out


def check_context(sets: list[tuple[np.ndarray, ...]], normaliser: Any, lat: np.ndarray,
                  lon: np.ndarray, *, units: str | None = None, far: float = 2.0) -> None:
    """Refuse observations that cannot be what the model was trained on, as ``approxeq eval
    --data`` does: none valid (all NaN: the prediction would be the prior), values far
    outside the training range (other units; the normaliser's own ``check_values``), and
    observations that all lie more than ``far`` training scales (half the training region's
    wider side) outside the target grid (latitude and longitude swapped). ``units``: the
    data's, one per variable for a normaliser of several."""
    var = normaliser.var
    values = np.concatenate([s[2] for s in sets]) if sets else np.empty(0)
    if values.size == 0:
        raise ValueError(f"context: no valid values of {var!r} (every value is NaN, or there "
                         "are none); the prediction would be the model's prior")
    check_values = getattr(normaliser, "check_values", None)
    if check_values is not None:
        check_values(values if isinstance(var, str) else values.reshape(-1, len(var)),
                     units=units)
    c_lat, c_lon = np.concatenate([s[0] for s in sets]), np.concatenate([s[1] for s in sets])
    margin = far * float(getattr(normaliser, "scale", 1.0))
    if points_outside(c_lat, c_lon, lat, lon, margin).all():
        raise ValueError(
            f"context: every observation (lat {c_lat.min():g} to {c_lat.max():g}, lon "
            f"{c_lon.min():g} to {c_lon.max():g}) lies more than {margin:.3g} degrees outside "
            f"the target grid (lat {lat.min():g} to {lat.max():g}, lon {lon.min():g} to "
            f"{lon.max():g}); are latitude and longitude swapped?")


def _output_variables(normaliser: Any, names: list[str], dims: tuple[str, ...],
                      mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """The Dataset variables of a prediction: ``mean`` and ``std`` for one variable, each
    variable under its own name (and ``<name>_std``) for several."""
    var = normaliser.var
    if not isinstance(var, str):
        return _named_outputs(normaliser, names, dims, mean, std)
    units = getattr(normaliser, "units", "")
    long_name = getattr(normaliser, "attrs", {}).get("long_name", var)
    return {"mean": (dims, mean[..., 0], {"units": units,
                                          "long_name": f"predictive mean of {long_name}"}),
            "std": (dims, std[..., 0], {"units": units, "long_name":
                                        f"predictive standard deviation of {long_name}"})}


@torch.no_grad()
def predict(model: nn.Module, context: Any, target_grid: Any, normaliser: Any, *,
            aux: AuxFunction | None = None, batch_targets: int | None = None,
            max_memory_mb: float = DEFAULT_MAX_MEMORY_MB, component: bool = False) -> Any:
    """Predict the model's variable on a grid from observations.

    Args:
        model: a trained neural process on normalised ``(lat, lon)`` inputs.
        context: the observations: an ``xarray.DataArray`` (or ``Dataset`` holding
            ``normaliser.var``) with latitude/longitude (and optionally time) coordinates and
            NaN where nothing was observed, or a pandas ``DataFrame`` of stations with
            lat/lon (and optionally time) columns and a ``normaliser.var`` column. Every
            time step is predicted separately. For a normaliser of several variables
            (``normaliser.var`` a list, e.g. ``["u10", "v10"]``): a ``Dataset`` or table
            holding each; a point is observed where every variable is finite.
        target_grid: where to predict: an xarray object whose latitude/longitude coordinates
            define the grid, or ``{"latitude": [...], "longitude": [...]}``.
        normaliser: the :class:`~approxeq.data.normalise.Normaliser` of the training data,
            or a :class:`~approxeq.data.normalise.MultiNormaliser` for several variables
            (fitted with the model's ``y_rep``: a mismatch is refused).
        aux: for a model with auxiliary inputs, a function giving the raw auxiliary fields
            ``[n, dim_aux]`` at points ``(lat [n], lon [n])``, e.g.
            ``AuxiliaryFields(elevation_ds, ["elevation"]).raw_at``.
        batch_targets: target points per forward pass; ``None`` (default) sizes the passes
            from ``max_memory_mb``.
        max_memory_mb: memory budget of one forward pass (MiB), so that a field of any size is
            predicted in memory linear in its number of cells; see
            :func:`~approxeq.np.functional.forward_in_chunks`. The prediction is the same for
            any budget and any ``batch_targets``: attention models attend from each target to
            the context only, and a grid model (ConvCNP, EquivCNP) builds one grid over the
            context and the whole target grid and decodes it in chunks. A TE attention too
            large even for one target raises a ``MemoryError`` naming its own option,
            ``memory_budget_mb``.
        component: predict with the model's equivariant component (every fixed input and
            auxiliary embedding zero; see :func:`approxeq.approximate.equivariant_component`).

    Returns:
        An ``xarray.Dataset`` with ``mean`` and ``std`` of dims ``(lat, lon)`` (``(time, lat,
        lon)`` when the context has several time steps or a time coordinate), named and
        valued as the target grid's coordinates, in the variable's units
        (``attrs["units"]``). For several variables: each variable's predictive mean under
        its own name (``u10``) and its standard deviation as ``<name>_std`` (``u10_std``),
        each in its units; a vector's stds are the marginal ones of its components.

    Raises:
        ValueError: for observations ``approxeq eval --data`` refuses too (see
            :func:`check_context`: none valid, other units, all far off the target grid), and
            for a target grid without coordinate values or without points.
    """
    xr = require_xarray()
    dim_aux = _check_predict_arguments(model, normaliser, aux, batch_targets)
    var, names = normaliser.var, variable_names(normaliser)
    times, sets, time_name = _context_sets(context, names)
    lat_n, lat, lon_n, lon = _target_axes(target_grid)
    units = _context_units(context, names)
    check_context(sets, normaliser, lat, lon, units=units[0] if isinstance(var, str) else units)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    means, stds = _predict_sets(model, sets, la.ravel(), lo.ravel(), normaliser, aux, dim_aux,
                                batch_targets=batch_targets, max_memory_mb=max_memory_mb,
                                component=component)
    coords = {lat_n: lat, lon_n: lon}
    dims: tuple[str, ...] = (lat_n, lon_n)
    mean = np.stack([m.reshape(la.shape + (len(names),)) for m in means])
    std = np.stack([s.reshape(la.shape + (len(names),)) for s in stds])
    if times == [None]:
        mean, std = mean[0], std[0]
    else:
        coords = {time_name: np.asarray(times), **coords}
        dims = (time_name, *dims)
    ds = xr.Dataset(_output_variables(normaliser, names, dims, mean, std), coords=coords)
    xr_target = target_grid if isinstance(target_grid, (xr.Dataset, xr.DataArray)) else None
    if xr_target is not None:
        for name in (lat_n, lon_n):
            ds[name].attrs.update(xr_target[name].attrs)
    ds.attrs.update({"variable": var if isinstance(var, str) else " ".join(names),
                     "model": str(getattr(model, "model_name",
                                                           type(model).__name__)),
                     "equivariant_component": int(component)})
    return ds


def _named_outputs(normaliser: Any, names: Sequence[str], dims: tuple[str, ...],
                   mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """The data variables of a prediction of several variables: each variable's mean under
    its own name and its standard deviation as ``<name>_std``, in its units."""
    units = list(getattr(normaliser, "units", []) or [""] * len(names))
    attrs = list(getattr(normaliser, "attrs", []) or [{}] * len(names))
    out = {}
    for k, name in enumerate(names):
        long_name = attrs[k].get("long_name", name)
        out[name] = (dims, mean[..., k], {"units": units[k],
                                          "long_name": f"predictive mean of {long_name}"})
        out[f"{name}_std"] = (dims, std[..., k], {
            "units": units[k], "long_name": f"predictive standard deviation of {long_name}"})
    return out


def _check_outputs(model: Any, normaliser: Any) -> None:
    """The model predicts what the normaliser maps: as many outputs, the same fields."""
    from approxeq.groups.representation import output_rep

    names = variable_names(normaliser)
    rep = output_rep(model)
    dim_y = getattr(model, "dim_y", None)
    if dim_y is not None and int(dim_y) != len(names):
        raise ValueError(f"normaliser: maps {len(names)} variable(s) {names}, but the model "
                         f"predicts dim_y = {dim_y}")
    kinds = list(getattr(normaliser, "y_rep", None) or ["scalar"] * len(names))
    if dim_y is not None and list(rep.kinds) != kinds:
        raise ValueError(f"normaliser: its fields {kinds} (for {names}) differ from the model's "
                         f"y_rep {list(rep.kinds)}; fit it with the model's y_rep (e.g. "
                         f"MultiNormaliser.fit(data, {names}, y_rep={list(rep.kinds)}))")


def _check_predict_arguments(model: Any, normaliser: Any, aux: AuxFunction | None,
                             batch_targets: int | None) -> int:
    """The checks of :func:`predict`'s arguments; returns the model's ``dim_aux``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a trained neural process (an nn.Module, e.g. "
                        f"approxeq.train.checkpoint.load_model(path)), got {type(model).__name__}")
    if not all(hasattr(normaliser, a) for a in ("var", "normalise_x", "unnormalise_y")):
        raise TypeError(f"normaliser: expected the Normaliser the model was trained with (e.g. "
                        f"Normaliser.load(run_dir)), got {type(normaliser).__name__}")
    _check_outputs(model, normaliser)
    if batch_targets is not None and (not isinstance(batch_targets, int) or batch_targets < 1):
        raise ValueError(f"batch_targets: expected an int >= 1 or None, got {batch_targets!r}")
    dim_aux = int(getattr(model, "dim_aux", 0) or 0)
    if dim_aux and aux is None:
        raise ValueError(f"aux: the model reads {dim_aux} auxiliary field(s) "
                         f"{list(getattr(normaliser, 'aux_vars', []))}; pass aux=... (e.g. "
                         "AuxiliaryFields(dataset, names).raw_at)")
    return dim_aux


def _predict_sets(model: nn.Module, sets: list[tuple[np.ndarray, ...]], t_lat: np.ndarray,
                  t_lon: np.ndarray, normaliser: Any, aux: AuxFunction | None, dim_aux: int, *,
                  batch_targets: int | None, max_memory_mb: float, component: bool
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predictive means and stds ``[n_targets, n_vars]`` (in the variables' units and order)
    at the targets ``(t_lat, t_lon)``, one per context set ``(lat, lon, values)``."""
    from approxeq.approximate import equivariant_component

    xt_all = normaliser.normalise_x(t_lat, t_lon)
    at_all = normaliser.normalise_aux(aux(t_lat, t_lon)) if dim_aux else None
    dtype, device = model_dtype_device(model)

    def tensor(a: np.ndarray, last: int) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(1, -1, last),
                               dtype=dtype, device=device)

    means, stds = [], []
    with evaluation_mode(model), (equivariant_component(model) if component else nullcontext()):
        for c_lat, c_lon, c_val in sets:
            xc = tensor(normaliser.normalise_x(c_lat, c_lon), 2)
            yc = tensor(normaliser.normalise_y(c_val), c_val.shape[-1])
            kwargs = {}
            if dim_aux:
                kwargs["aux_c"] = tensor(normaliser.normalise_aux(aux(c_lat, c_lon)), dim_aux)
                kwargs["aux_t"] = tensor(at_all, dim_aux)
            pred = forward_in_chunks(model, xc, yc, tensor(xt_all, 2), **kwargs,
                                     max_memory_mb=max_memory_mb,
                                     chunk_targets=batch_targets)
            mean = pred.mean[0].double().cpu().numpy()
            std = pred.stddev[0].double().cpu().numpy()
            del pred
            means.append(np.asarray(normaliser.unnormalise_y(mean)))
            stds.append(np.asarray(normaliser.unnormalise_std(std)))
    return means, stds

__all__ = ["AuxFunction", "LAT_NAMES", "LON_NAMES", "TIME_NAMES", "check_context",
           "coordinate_names", "points_outside", "predict", "require_pandas", "require_xarray",
           "station_columns", "variable_names"]
