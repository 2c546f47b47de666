"""Regenerate the terrain files shipped in ``src/approxeq/datasets/weather/``.

Source: the ETOPO1 ice-surface topography at 10 arc-minutes as packaged by Fatiando a Terra
(``global-gravity-topography/earth-topography-10arcmin.nc`` of the GitHub repository
fatiando/data at commit 72ec1878752bd2f33bbb3f515631d65c3c2f0c4a; variable ``topography`` in m
on a regular latitude/longitude grid with nodes every 1/6 degree).

Method: **area average** onto a 0.25-degree grid whose cell centres are multiples of 0.25 degrees
(the ERA5 grid). Each source node stands for a 1/6-degree cell; its weight in an output cell is
the overlap of the two cells in latitude times their overlap in longitude, with the latitude
overlap scaled by ``cos(latitude)`` so the weights are proportional to area on the sphere. The
map is separable, so a region is ``W_lat @ topography @ W_lon.T``.

Outputs, one netCDF4 file per region (zlib level 4), coordinates ``latitude`` (ascending) and
``longitude`` in degrees:

* ``elevation``: float32, m; the area-mean surface height (negative over the sea: the mean depth).
* ``land``: int8, 1 where at least half of the cell's area has a height above 0 m (a crude land
  mask: land below sea level counts as sea).

Run from the repository root::

    python scripts/make_terrain_data.py --source earth-topography-10arcmin.nc

It needs numpy, xarray and netCDF4 (``pip install 'approxeq[data]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

#: name -> ((lat_min, lat_max), (lon_min, lon_max)), cell centres in degrees, inclusive
REGIONS = {
    "europe": ((35.0, 60.0), (-10.0, 30.0)),
    "conus": ((25.0, 50.0), (-125.0, -66.0)),
}
RESOLUTION = 0.25
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "approxeq" / "datasets" / "weather"


def file_name(region: str) -> str:
    return f"{region}_terrain_0.25deg.nc"


def overlap_weights(centres: np.ndarray, width: float, source: np.ndarray,
                    source_width: float) -> np.ndarray:
    """``[n_out, n_src]`` lengths of the overlaps of output and source cells (1-D)."""
    lo = np.maximum(centres[:, None] - width / 2, source[None, :] - source_width / 2)
    hi = np.minimum(centres[:, None] + width / 2, source[None, :] + source_width / 2)
    return np.clip(hi - lo, 0.0, None)


def area_average(values: np.ndarray, src_lat: np.ndarray, src_lon: np.ndarray,
                 lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Area-weighted mean of ``values [n_src_lat, n_src_lon]`` over each output cell."""
    step_lat = float(np.diff(src_lat).mean())
    step_lon = float(np.diff(src_lon).mean())
    w_lat = overlap_weights(lat, RESOLUTION, src_lat, step_lat) * np.cos(np.radians(src_lat))
    w_lon = overlap_weights(lon, RESOLUTION, src_lon, step_lon)
    # Only the source rows/columns that touch the region take part.
    rows = np.nonzero(w_lat.sum(0))[0]
    cols = np.nonzero(w_lon.sum(0))[0]
    w_lat, w_lon = w_lat[:, rows], w_lon[:, cols]
    w_lat /= w_lat.sum(1, keepdims=True)
    w_lon /= w_lon.sum(1, keepdims=True)
    return w_lat @ values[np.ix_(rows, cols)] @ w_lon.T


def make_region(topo: xr.DataArray, name: str) -> xr.Dataset:
    (lat0, lat1), (lon0, lon1) = REGIONS[name]
    lat = np.round(np.arange(lat0, lat1 + RESOLUTION / 2, RESOLUTION), 6)
    lon = np.round(np.arange(lon0, lon1 + RESOLUTION / 2, RESOLUTION), 6)
    src_lat = topo["latitude"].values.astype(np.float64)
    src_lon = topo["longitude"].values.astype(np.float64)
    if np.any(np.diff(src_lat) <= 0) or np.any(np.diff(src_lon) <= 0):
        raise ValueError("source: expected ascending latitude and longitude")
    h = topo.values.astype(np.float64)
    elevation = area_average(h, src_lat, src_lon, lat, lon)
    land_fraction = area_average((h > 0).astype(np.float64), src_lat, src_lon, lat, lon)
    ds = xr.Dataset(
        {"elevation": (("latitude", "longitude"), elevation.astype(np.float32),
                       {"units": "m", "long_name": "area-mean surface height above sea level "
                        "(negative: mean depth of the sea floor)"}),
         "land": (("latitude", "longitude"), (land_fraction >= 0.5).astype(np.int8),
                  {"units": "1", "long_name": "land mask: at least half of the cell above 0 m"})},
        coords={"latitude": ("latitude", lat, {"units": "degrees_north"}),
                "longitude": ("longitude", lon, {"units": "degrees_east"})},
        attrs={"title": f"Topography of the {name} region at 0.25 degrees",
               "source": "ETOPO1 ice-surface topography at 10 arc-minutes (NOAA), packaged by "
                         "Fatiando a Terra: fatiando/data@72ec1878752bd2f33bbb3f515631d65c3c2f0c4a "
                         "global-gravity-topography/earth-topography-10arcmin.nc",
               "method": "area average (cos-latitude weighted overlaps) onto 0.25-degree cells "
                         "centred on multiples of 0.25 degrees; scripts/make_terrain_data.py",
               "license": "ETOPO1: public domain (NOAA). Fatiando packaging: CC-BY-4.0."})
    return ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="earth-topography-10arcmin.nc")
    parser.add_argument("--out", default=str(OUT_DIR), help="output folder")
    args = parser.parse_args()
    topo = xr.open_dataset(args.source)["topography"].load()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoding = {"elevation": {"zlib": True, "complevel": 4},
                "land": {"zlib": True, "complevel": 4}}
    for name in REGIONS:
        ds = make_region(topo, name)
        path = out / file_name(name)
        ds.to_netcdf(path, format="NETCDF4", encoding=encoding)
        e = ds["elevation"]
        peak = e.where(e == e.max(), drop=True)
        print(f"{path.name}: {ds.sizes['latitude']} x {ds.sizes['longitude']}, "
              f"{path.stat().st_size / 1024:.0f} KiB, land {float(ds['land'].mean()):.2f}, "
              f"max {float(e.max()):.0f} m at {float(peak.latitude[0]):.2f} N "
              f"{float(peak.longitude[0]):.2f} E")


if __name__ == "__main__":
    main()
