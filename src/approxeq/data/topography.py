"""Topography of the shipped regions on their 0.25° grids, and latitude/longitude boxes.

The files (``datasets/weather/*_terrain_0.25deg.nc``, made by ``scripts/make_terrain_data.py``
from ETOPO1; see ``datasets/weather/ATTRIBUTION.md``) hold ``elevation`` (m, the area mean of each
cell, negative over the sea) and ``land`` (0/1) on ascending latitude and longitude. Reading them
needs the ``data`` extra (xarray, netCDF4).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from approxeq.data.normalise import Normaliser
from approxeq.np.prediction import require_xarray

_DATA_DIR = Path(__file__).resolve().parents[1] / "datasets" / "weather"

@dataclass(frozen=True)
class RegionBox:
    """A latitude/longitude box in degrees: ``lat = (south, north)``, ``lon = (west, east)``."""

    lat: tuple[float, float]
    lon: tuple[float, float]

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("lat", self.lat), ("lon", self.lon)):
            if not lo < hi:
                raise ValueError(f"{name}: expected (low, high) with low < high, got {(lo, hi)}")

    @property
    def centre(self) -> tuple[float, float]:
        return 0.5 * (self.lat[0] + self.lat[1]), 0.5 * (self.lon[0] + self.lon[1])

    def normalised(self, normaliser: Normaliser) -> list[tuple[float, float]]:
        """The box in normalised inputs, ``[(lat_lo, lat_hi), (lon_lo, lon_hi)]`` (e.g. the
        ``domain`` of a fixed input)."""
        x = normaliser.normalise_x([self.lat[0], self.lat[1]], [self.lon[0], self.lon[1]])
        return [(float(x[0, 0]), float(x[1, 0])), (float(x[0, 1]), float(x[1, 1]))]

    @classmethod
    def from_normalised(cls, box: Sequence[Sequence[float]],
                        normaliser: Normaliser) -> RegionBox:
        """Inverse of :meth:`normalised`."""
        (a, b), (c, d) = box
        lat, lon = normaliser.unnormalise_x([[a, c], [b, d]])
        return cls((float(lat[0]), float(lat[1])), (float(lon[0]), float(lon[1])))


#: the shipped regions: train on Europe, test out of region on the contiguous US
REGIONS: dict[str, RegionBox] = {
    "europe": RegionBox((35.0, 60.0), (-10.0, 30.0)),
    "conus": RegionBox((25.0, 50.0), (-125.0, -66.0)),
}


def terrain_file(region: str) -> Path:
    """Path of a shipped region's topography (``elevation`` m, ``land`` 0/1, 0.25°)."""
    if region not in REGIONS:
        raise ValueError(f"region: expected one of {sorted(REGIONS)}, got {region!r}")
    return _DATA_DIR / f"{region}_terrain_0.25deg.nc"


@dataclass(frozen=True, eq=False)
class Topography:
    """A region's topography on a regular grid (arrays are read-only).

    Attributes:
        name: the region's name.
        lat: ``[n_lat]`` ascending cell centres (degrees north).
        lon: ``[n_lon]`` ascending cell centres (degrees east).
        elevation: ``[n_lat, n_lon]`` mean surface height in m (negative: sea depth).
        land: ``[n_lat, n_lon]`` bool land mask.
        resolution: the grid step in degrees (both axes).
    """

    name: str
    lat: np.ndarray
    lon: np.ndarray
    elevation: np.ndarray
    land: np.ndarray
    resolution: float

    @property
    def height_km(self) -> np.ndarray:
        """``h⁺ [n_lat, n_lon]``: elevation above sea level in km (0 below sea level)."""
        return np.maximum(self.elevation, 0.0) / 1000.0

    @property
    def box(self) -> RegionBox:
        return RegionBox((float(self.lat[0]), float(self.lat[-1])),
                         (float(self.lon[0]), float(self.lon[-1])))

    def index(self, lat: Any, lon: Any) -> tuple[np.ndarray, np.ndarray]:
        """Grid indices ``(i, j)`` of the cells holding degrees ``lat``, ``lon`` (any shape);
        raises if a point lies outside the grid."""
        lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        i = np.rint((lat - self.lat[0]) / self.resolution).astype(np.int64)
        j = np.rint((lon - self.lon[0]) / self.resolution).astype(np.int64)
        bad = (i < 0) | (i >= self.lat.size) | (j < 0) | (j >= self.lon.size)
        if bad.any():
            k = np.flatnonzero(bad.reshape(-1))[0]
            raise ValueError(f"x: point ({lat.reshape(-1)[k]:.3f} N, {lon.reshape(-1)[k]:.3f} E) "
                             f"lies outside the {self.name} grid {self.box}")
        return i, j


@functools.lru_cache(maxsize=8)
def _read_topography(path: str, name: str) -> Topography:
    xr = require_xarray()
    with xr.open_dataset(path) as ds:
        missing = [v for v in ("elevation", "land") if v not in ds]
        if missing:
            raise ValueError(f"path: {path} lacks the variables {missing} (expected elevation "
                             f"and land on latitude/longitude)")
        ds = ds.sortby(["latitude", "longitude"])
        lat = ds["latitude"].values.astype(np.float64)
        lon = ds["longitude"].values.astype(np.float64)
        elevation = ds["elevation"].transpose("latitude", "longitude").values.astype(np.float64)
        land = ds["land"].transpose("latitude", "longitude").values.astype(bool)
    steps = np.concatenate([np.diff(lat), np.diff(lon)])
    if steps.size == 0 or not np.allclose(steps, steps[0], rtol=0, atol=1e-6):
        raise ValueError(f"path: {path} is not a regular grid with one step on both axes")
    arrays = (lat, lon, elevation, land)
    for a in arrays:
        a.setflags(write=False)  # shared through the cache
    return Topography(name, *arrays, resolution=float(steps[0]))


def load_topography(region: str = "europe", path: str | Path | None = None) -> Topography:
    """A shipped region (``"europe"``, ``"conus"``) or, with ``path``, any netCDF file with
    ``elevation`` (m) and ``land`` on a regular latitude/longitude grid. Read once, cached."""
    if path is None:
        path = terrain_file(region)
    return _read_topography(str(Path(path).resolve()), region)


__all__ = ["REGIONS", "RegionBox", "Topography", "load_topography", "terrain_file"]
