"""Normalisation of gridded environmental data: fitted on training data, stored with the model,
inverted on output.

* The variable is z-scored: ``y' = (y - mean) / std``, with ``mean`` and ``std`` over every valid
  (non-NaN) value of the training selection, in the variable's own units (e.g. kelvin).
* Coordinates ``(lat, lon)`` are mapped by ``x' = (x - centre) / scale`` with **one** scale shared
  by latitude and longitude. A shared scale keeps the map a similarity, so a rotation or
  reflection of the ``(lat, lon)`` plane is still one after normalisation and a translation is
  still a translation (an E(2) symmetry of the data is an E(2) symmetry of the model's inputs).
  By default ``centre`` is the middle of the training region and ``scale`` a quarter of its
  wider side, so the training region spans ``[-2, 2]`` along its wider axis (the default
  fixed-input domain of the approximately equivariant models).
* Auxiliary fields (elevation, land mask) are z-scored one channel at a time.
* Several variables (:class:`MultiNormaliser`, e.g. the wind ``["u10", "v10"]`` as one vector):
  scalars z-scored one at a time; a vector's two components divided by one shared scale and not
  centred, so that a rotated wind is still a rotated wind after normalisation.

A :class:`Normaliser` is a few numbers: :meth:`Normaliser.to_dict` gives a JSON-ready dict
(``normaliser.json`` next to a model's checkpoints), :meth:`Normaliser.from_dict` reads it back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from approxeq.data.fields import AuxiliaryFields
from approxeq.files import write_json_atomic
from approxeq.np.prediction import coordinate_names, require_pandas, require_xarray

NORMALISER_FILE = "normaliser.json"
_FORMAT = "approxeq-normaliser"


@dataclass
class Normaliser:
    """How a variable, its coordinates and auxiliary fields are normalised (see the module
    docstring).

    Attributes:
        var: the variable's name. units: its units (``attrs["units"]``), restored on output.
        y_mean, y_std: z-scoring of the variable, in its units.
        centre: ``(lat, lon)`` mapped to the origin. scale: degrees per normalised unit, shared
            by latitude and longitude.
        aux_vars: names of the auxiliary fields, in channel order.
        aux_mean, aux_std: their z-scoring, one number per channel.
        aux_units: their units (informational).
        attrs: the variable's other attributes (``long_name`` ...), restored on output.
    """

    var: str
    y_mean: float
    y_std: float
    centre: tuple[float, float]
    scale: float
    units: str = ""
    aux_vars: list[str] = field(default_factory=list)
    aux_mean: list[float] = field(default_factory=list)
    aux_std: list[float] = field(default_factory=list)
    aux_units: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.y_std) and self.y_std > 0):
            raise ValueError(f"y_std: expected a positive number, got {self.y_std!r} (is the "
                             f"variable {self.var!r} constant or all NaN in the training data?)")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale: expected a positive number, got {self.scale!r}")
        self.centre = (float(self.centre[0]), float(self.centre[1]))
        if not (len(self.aux_vars) == len(self.aux_mean) == len(self.aux_std)):
            raise ValueError(f"aux_mean, aux_std: expected one value per auxiliary field "
                             f"{self.aux_vars}, got {self.aux_mean}, {self.aux_std}")
        if any(not (s > 0) for s in self.aux_std):
            raise ValueError(f"aux_std: expected positive numbers, got {self.aux_std}")

    @property
    def dim_aux(self) -> int:
        return len(self.aux_vars)

    # ---- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(cls, values: Any, var: str | None = None, *, lat: Sequence[float] | None = None,
            lon: Sequence[float] | None = None, aux: Any = None,
            aux_vars: Sequence[str] | None = None, scale: float | None = None,
            centre: Sequence[float] | None = None, time_block: int = 256) -> Normaliser:
        """Fit on training data.

        Args:
            values: an ``xarray.DataArray`` (or a ``Dataset`` with ``var``) of the *training*
                selection, read ``time_block`` time steps at a time so a long record is never
                loaded whole.
            var: the variable's name (needed for a ``Dataset``).
            lat, lon: the training region's coordinates (default: those of ``values``).
            aux: a ``Dataset`` of auxiliary fields; ``aux_vars`` selects and orders them
                (default: every data variable of ``aux``). Their statistics are taken over
                the training region.
            scale, centre: override the coordinate map (degrees per unit; ``(lat, lon)``).
        """
        xr = require_xarray()
        if isinstance(values, xr.Dataset):
            if var is None:
                raise ValueError("var: needed to pick the variable of a Dataset")
            if var not in values:
                raise ValueError(f"var: {var!r} is not a variable of the dataset; it has "
                                 f"{list(values.data_vars)}")
            values = values[var]
        if not isinstance(values, xr.DataArray):
            raise TypeError(f"values: expected an xarray DataArray or Dataset, got "
                            f"{type(values).__name__}")
        var = var or str(values.name)
        lat_name, lon_name, time_name = coordinate_names(values)
        lat = np.asarray(values[lat_name].values if lat is None else lat, dtype=np.float64)
        lon = np.asarray(values[lon_name].values if lon is None else lon, dtype=np.float64)
        total, total_sq, count = 0.0, 0.0, 0
        blocks = [values] if time_name is None else [
            values.isel({time_name: slice(i, i + time_block)})
            for i in range(0, values.sizes[time_name], time_block)]
        shift = None
        for block in blocks:
            v = np.asarray(block.values, dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            if shift is None:  # shifted sums keep the variance accurate for e.g. ~280 K
                shift = float(v.mean())
            d = v - shift
            total, total_sq, count = total + d.sum(), total_sq + (d * d).sum(), count + v.size
        if count < 2:
            raise ValueError(f"values: fewer than 2 valid values of {var!r} to fit a normaliser")
        mean_d = total / count
        y_mean = shift + mean_d
        y_std = math.sqrt(max(total_sq / count - mean_d ** 2, 0.0))
        if centre is None:
            centre = (0.5 * (lat.min() + lat.max()), 0.5 * (lon.min() + lon.max()))
        if scale is None:
            extent = max(float(np.ptp(lat)), float(np.ptp(lon)))
            scale = extent / 4.0 if extent > 0 else 1.0
        norm = cls(var=var, y_mean=float(y_mean), y_std=float(y_std), centre=tuple(centre),
                   scale=float(scale), units=str(values.attrs.get("units", "")),
                   attrs={k: str(v) for k, v in values.attrs.items()
                          if k in ("long_name", "standard_name", "units")})
        if aux is not None:
            norm = norm.fit_aux(aux, aux_vars, lat=lat, lon=lon)
        return norm

    def fit_aux(self, aux: Any, aux_vars: Sequence[str] | None = None, *,
                lat: Sequence[float] | None = None, lon: Sequence[float] | None = None
                ) -> Normaliser:
        """A copy with the z-scoring of auxiliary fields fitted on ``aux`` (a ``Dataset``),
        over the region ``lat`` × ``lon`` when given (interpolated there)."""
        fields = AuxiliaryFields(aux, aux_vars)
        if lat is not None and lon is not None:
            la, lo = np.meshgrid(np.asarray(lat, float), np.asarray(lon, float), indexing="ij")
            raw = fields.raw_at(la.ravel(), lo.ravel())
        else:
            raw = fields.raw_grid()
        means, stds = [], []
        for k, name in enumerate(fields.names):
            v = raw[:, k][np.isfinite(raw[:, k])]
            if v.size < 2:
                raise ValueError(f"aux: field {name!r} has no valid values over the region")
            means.append(float(v.mean()))
            stds.append(float(v.std()) if v.std() > 0 else 1.0)
        return Normaliser(**{**asdict(self), "aux_vars": list(fields.names), "aux_mean": means,
                             "aux_std": stds, "aux_units": fields.units})

    # ---- sanity ------------------------------------------------------------------------------

    def check_values(self, values: Any, *, units: str | None = None, far: float = 10.0,
                     tolerance: float = 0.01) -> None:
        """Refuse values that this normaliser never saw the like of: more than ``tolerance``
        of the finite ``values`` (any shape, in the variable's units) lying over ``far``
        training standard deviations from the training mean, the mark of other units (a
        field in °C against a normaliser fitted in K) or another variable. ``units`` (the
        data's ``units`` attribute) is named in the message when it differs."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return
        z = np.abs(v - self.y_mean) / self.y_std
        share = float((z > far).mean())
        if share <= tolerance:
            return
        said = f" {self.units}" if self.units else ""
        given = f" (units {units!r}, training units {self.units!r})" if (
            units is not None and units != self.units) else ""
        raise ValueError(
            f"{self.var}: values from {v.min():.4g} to {v.max():.4g} (mean {v.mean():.4g})"
            f"{given} are far outside the training range (mean {self.y_mean:.4g}{said}, std "
            f"{self.y_std:.3g}{said}): {100 * share:.0f}% of them lie more than {far:g} "
            "training standard deviations away. Are they in other units (units?) or another "
            "variable?")

    # ---- the maps ----------------------------------------------------------------------------

    def normalise_x(self, lat: Any, lon: Any) -> np.ndarray:
        """Normalised inputs ``[n, 2]`` (columns lat, lon) of degrees ``lat``, ``lon`` ``[n]``."""
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        return np.stack([(lat - self.centre[0]) / self.scale,
                         (lon - self.centre[1]) / self.scale], -1)

    def unnormalise_x(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Degrees ``(lat [n], lon [n])`` of normalised inputs ``x [n, 2]``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 2)
        return x[:, 0] * self.scale + self.centre[0], x[:, 1] * self.scale + self.centre[1]

    def normalise_y(self, y: Any) -> Any:
        """``(y - y_mean) / y_std`` (NumPy arrays, tensors and xarray objects alike)."""
        return (y - self.y_mean) / self.y_std

    def unnormalise_y(self, y: Any) -> Any:
        """Inverse of :meth:`normalise_y`."""
        return y * self.y_std + self.y_mean

    def unnormalise_std(self, s: Any) -> Any:
        """A standard deviation in normalised units, in the variable's units."""
        return s * self.y_std

    def normalise_aux(self, a: Any) -> np.ndarray:
        """Z-scored auxiliary values ``[n, dim_aux]``; NaN (outside the auxiliary grid) becomes
        0, the training mean."""
        a = np.asarray(a, dtype=np.float64).reshape(-1, self.dim_aux)
        out = (a - np.asarray(self.aux_mean)) / np.asarray(self.aux_std)
        return np.where(np.isfinite(out), out, 0.0)

    # ---- storage -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it exactly (floats are kept as they
        are, and JSON round-trips Python floats exactly)."""
        d = asdict(self)
        d["centre"] = list(self.centre)
        return {"format": _FORMAT, "version": 1, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normaliser:
        if d.get("format") != _FORMAT:
            raise ValueError(f"normaliser: expected a dict with format={_FORMAT!r}, got keys "
                             f"{sorted(d)}")
        d = {k: v for k, v in d.items() if k not in ("format", "version")}
        d["centre"] = tuple(d["centre"])
        return cls(**d)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict()`` as JSON, atomically (a directory gets ``normaliser.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / NORMALISER_FILE
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normaliser:
        """Read a file written by :meth:`save` (a directory: its ``normaliser.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / NORMALISER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"normaliser: no file {path}")
        return cls.from_dict(json.loads(path.read_text()))


_MULTI_FORMAT = "approxeq-multi-normaliser"
_FIELD_KINDS = ("scalar", "vector")


@dataclass
class MultiNormaliser:
    """How several variables, e.g. the wind components ``u10`` and ``v10``, and their
    coordinates are normalised for a model with ``dim_y = len(var)``.

    ``var`` lists the variables and ``y_rep`` their fields (as a model's ``y_rep``: one kind
    per field, a ``"vector"`` taking two variables, named **eastward then northward**, e.g.
    ``["u10", "v10"]``). A scalar is z-scored as by :class:`Normaliser`; a vector's two
    components are divided by **one** number, the root mean square of its components, and not
    centred, so that a rotation of the field is still a rotation after normalisation. The
    model's channels follow its inputs ``(lat, lon)``: a vector enters as (northward,
    eastward). Coordinates and auxiliary fields are those of ``base`` (a :class:`Normaliser`).

    Attributes:
        var: the variables. y_rep: their fields' kinds. y_mean, y_std: per variable, in its
            units (``0`` and the shared scale for a vector's components). units, attrs: per
            variable. base: the coordinate and auxiliary normalisation.
    """

    var: list[str]
    y_rep: list[str]
    y_mean: list[float]
    y_std: list[float]
    base: Normaliser
    units: list[str] = field(default_factory=list)
    attrs: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.var, self.y_rep = [str(v) for v in self.var], [str(k) for k in self.y_rep]
        if any(k not in _FIELD_KINDS for k in self.y_rep):
            raise ValueError(f"y_rep: expected 'scalar' or 'vector' per field, got {self.y_rep}")
        need = sum(2 if k == "vector" else 1 for k in self.y_rep)
        if need != len(self.var) or len(set(self.var)) != len(self.var):
            raise ValueError(f"var: expected {need} distinct variables for y_rep {self.y_rep} (a "
                             f"vector takes two: eastward, northward), got {self.var}")
        if not (len(self.y_mean) == len(self.y_std) == len(self.var)):
            raise ValueError(f"y_mean, y_std: expected one value per variable {self.var}, got "
                             f"{self.y_mean}, {self.y_std}")
        if any(not (math.isfinite(v) and v > 0) for v in self.y_std):
            raise ValueError(f"y_std: expected positive numbers, got {self.y_std} (is a variable "
                             f"of {self.var} constant or all NaN in the training data?)")
        self.units = list(self.units) or [""] * len(self.var)
        self.attrs = list(self.attrs) or [{} for _ in self.var]

    @property
    def order(self) -> list[int]:
        """The variable behind each model channel: a vector's northward one first."""
        out: list[int] = []
        for kind in self.y_rep:
            k = len(out)
            out += [k + 1, k] if kind == "vector" else [k]
        return out

    @property
    def centre(self) -> tuple[float, float]:
        return self.base.centre

    @property
    def scale(self) -> float:
        return self.base.scale

    @property
    def dim_aux(self) -> int:
        return self.base.dim_aux

    @property
    def aux_vars(self) -> list[str]:
        return self.base.aux_vars

    @classmethod
    def fit(cls, values: Any, var: Sequence[str], y_rep: str | Sequence[str] = "scalar",
            **kwargs: Any) -> MultiNormaliser:
        """Fit on a training ``Dataset`` holding every variable of ``var``; ``y_rep``:
        ``"scalar"`` (each variable z-scored), ``"vector"`` (two variables: eastward,
        northward) or a list of kinds. ``kwargs`` (``lat``, ``lon``, ``aux``, ``aux_vars``,
        ``scale``, ``centre``, ``time_block``) as :meth:`Normaliser.fit`."""
        xr = require_xarray()
        var = [var] if isinstance(var, str) else list(var)
        kinds = ["scalar"] * len(var) if y_rep == "scalar" else (
            ["vector"] if y_rep == "vector" else list(y_rep))
        if not isinstance(values, xr.Dataset):
            raise TypeError(f"values: expected an xarray Dataset holding {var}, got "
                            f"{type(values).__name__}")
        fits = [Normaliser.fit(values, v, **kwargs) for v in var]
        mean, std = [f.y_mean for f in fits], [f.y_std for f in fits]
        k = 0
        for kind in kinds:
            if kind == "vector" and k + 1 < len(var):
                both = np.stack([np.asarray(values[var[k + j]].values, np.float64).ravel()
                                 for j in (0, 1)], -1)
                both = both[np.isfinite(both).all(-1)]
                rms = float(np.sqrt(np.mean(both ** 2))) if both.size else 0.0
                mean[k:k + 2], std[k:k + 2] = [0.0, 0.0], [rms, rms]
            k += 2 if kind == "vector" else 1
        return cls(var, kinds, mean, std, fits[0], [f.units for f in fits],
                   [f.attrs for f in fits])

    def check_values(self, values: Any, *, units: Sequence[str | None] | None = None,
                     **kwargs: Any) -> None:
        """:meth:`Normaliser.check_values` for each variable: ``values [n, len(var)]``."""
        v = np.asarray(values, dtype=np.float64).reshape(-1, len(self.var))
        for k, name in enumerate(self.var):
            one = Normaliser(name, self.y_mean[k], self.y_std[k], self.centre, self.scale,
                             units=self.units[k])
            one.check_values(v[:, k], units=None if units is None else units[k], **kwargs)

    def normalise_x(self, lat: Any, lon: Any) -> np.ndarray:
        return self.base.normalise_x(lat, lon)

    def unnormalise_x(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.base.unnormalise_x(x)

    def normalise_aux(self, a: Any) -> np.ndarray:
        return self.base.normalise_aux(a)

    def normalise_y(self, y: Any) -> np.ndarray:
        """Model values ``[n, dim_y]`` (channel order, see :attr:`order`) of ``y [n, len(var)]``
        in the variables' order and units."""
        y = np.asarray(y, dtype=np.float64).reshape(-1, len(self.var))
        return ((y - np.asarray(self.y_mean)) / np.asarray(self.y_std))[:, self.order]

    def unnormalise_y(self, y: Any) -> np.ndarray:
        """Inverse of :meth:`normalise_y`: ``[n, len(var)]`` in the variables' order."""
        out = np.empty_like(np.asarray(y, dtype=np.float64).reshape(-1, len(self.var)))
        out[:, self.order] = np.asarray(y, dtype=np.float64).reshape(out.shape)
        return out * np.asarray(self.y_std) + np.asarray(self.y_mean)

    def unnormalise_std(self, s: Any) -> np.ndarray:
        """Standard deviations ``[n, dim_y]`` (channel order) in the variables' order and
        units."""
        out = np.empty_like(np.asarray(s, dtype=np.float64).reshape(-1, len(self.var)))
        out[:, self.order] = np.asarray(s, dtype=np.float64).reshape(out.shape)
        return out * np.asarray(self.y_std)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it exactly."""
        d = {k: v for k, v in asdict(self).items() if k != "base"}
        return {"format": _MULTI_FORMAT, "version": 1, **d, "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiNormaliser:
        if d.get("format") != _MULTI_FORMAT:
            raise ValueError(f"normaliser: expected a dict with format={_MULTI_FORMAT!r}, got "
                             f"keys {sorted(d)}")
        d = {k: v for k, v in d.items() if k not in ("format", "version")}
        return cls(**{**d, "base": Normaliser.from_dict(d["base"])})

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict()`` as JSON, atomically (a directory gets ``normaliser.json``)."""
        path = Path(path)
        return write_json_atomic(path / NORMALISER_FILE if path.is_dir() else path,
                                 self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> MultiNormaliser:
        """Read a file written by :meth:`save` (a directory: its ``normaliser.json``)."""
        path = Path(path)
        path = path / NORMALISER_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"normaliser: no file {path}")
        return cls.from_dict(json.loads(path.read_text()))


__all__ = ["NORMALISER_FILE", "MultiNormaliser", "Normaliser", "require_pandas",
           "require_xarray"]
