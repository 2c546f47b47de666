"""The ERA5 study's measure of whether a correction follows the terrain."""

from __future__ import annotations

import numpy as np
import pytest

from approxeq.experiments.studies.era5.study import (
    correction_elevation_correlation,
    correction_terrain_correlations,
)

xr = pytest.importorskip("xarray")
REGION = {"lat": [50.0, 54.0], "lon": [-10.0, -6.0]}


def _panel(north_first: bool) -> xr.Dataset:
    rng = np.random.default_rng(0)
    lat = np.arange(50.0, 58.01, 0.5)[::-1 if north_first else 1]
    lon = np.arange(-10.0, 2.01, 0.5)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    elevation = rng.normal(0.0, 400.0, la.shape)  # sea floor below 0, land above
    inside = (la <= 54.0) & (lo <= -6.0)
    # a lapse rate inside the region, and nothing the fixed inputs could do outside it
    correction = np.where(inside, -0.0065 * np.maximum(elevation, 0.0), 0.0)
    dims = ("latitude", "longitude")
    return xr.Dataset({"correction": (dims, correction), "elevation": (dims, elevation)},
                      coords={"latitude": lat, "longitude": lon})


@pytest.mark.parametrize("north_first", [False, True])
def test_a_lapse_rate_in_region_scores_minus_one_on_land_height(north_first):
    panels = [_panel(north_first)]
    got = correction_terrain_correlations(panels, REGION)
    assert got["correction_land_height_corr"] == pytest.approx(-1.0, abs=1e-12)
    assert -1.0 < got["correction_land_corr"] < -0.3
    # the whole-map measure against raw elevation (sea floor, cells beyond the domain) blurs it
    assert correction_elevation_correlation(panels) > -0.6
