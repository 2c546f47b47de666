"""The terrain field: shipped topography, task generator and exact oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from approxeq.data.terrain import (
    REGIONS,
    RegionBox,
    TerrainField,
    TerrainTaskGenerator,
    deterministic_part,
    load_topography,
    terrain_file,
    terrain_normaliser,
)
from approxeq.np import Batch

MONT_BLANC = (45.83, 6.86)
COLORADO = (39.0, -106.0)


def _cell(topo, lat, lon):
    """Grid cell nearest to (lat, lon), found independently of ``Topography.index``."""
    return int(np.abs(topo.lat - lat).argmin()), int(np.abs(topo.lon - lon).argmin())


def _matern52(d, lengthscale, variance):
    r = math.sqrt(5.0) * d / lengthscale
    return variance * (1.0 + r + r**2 / 3.0) * np.exp(-r)


def _dense_scores(topo, field, lat, lon, y, nc, blind):
    """Oracle scores of one task by a direct dense GP computation in degrees and kelvin."""
    idx = [_cell(topo, a, b) for a, b in zip(lat, lon)]
    h = np.array([max(topo.elevation[i, j], 0.0) / 1000.0 for i, j in idx])
    land = np.array([float(topo.land[i, j]) for i, j in idx])
    mean = np.zeros_like(h) if blind else field.lapse_rate * h + field.land_offset * land
    y_k = y * field.y_scale
    d = np.hypot(lat[:, None] - lat[None, :], lon[:, None] - lon[None, :])
    cov = _matern52(d, field.lengthscale, field.amplitude**2)
    cov += (field.noise_std**2 + field.jitter * field.y_scale**2) * np.eye(lat.size)
    c, t = slice(0, nc), slice(nc, None)
    gain = cov[t, c] @ np.linalg.inv(cov[c, c])
    mu = mean[t] + gain @ (y_k[c] - mean[c])
    post = cov[t, t] - gain @ cov[c, t]
    # Back to normalised outputs: densities gain log(y_scale) per point.
    var = np.diag(post) / field.y_scale**2
    resid = y[t] - mu / field.y_scale
    point = -0.5 * (resid**2 / var + np.log(var) + math.log(2 * math.pi))
    _, logdet = np.linalg.slogdet(post / field.y_scale**2)
    quad = resid @ np.linalg.solve(post / field.y_scale**2, resid)
    joint = -0.5 * (quad + logdet + resid.size * math.log(2 * math.pi)) / resid.size
    return point.mean(), joint, math.sqrt((resid**2).mean())


def test_oracle_matches_a_dense_gp():
    field = TerrainField(lengthscale=2.0, amplitude=2.5, lapse_rate=-7.0, land_offset=1.5,
                         noise_std=0.4, y_scale=3.0)
    gen = TerrainTaskGenerator("europe", field, patch_degrees=3.0, context_fraction=(0.1, 0.3),
                               max_targets=12, dtype=torch.float64)
    alps = gen.patch_corner(*MONT_BLANC)
    batch = gen.sample(3, torch.Generator().manual_seed(3), corners=[alps, (0, 0), (40, 60)])
    nc = batch.xc.shape[1]
    for k in range(3):
        x = torch.cat([batch.xc[k], batch.xt[k]]).numpy()
        lat, lon = gen.normaliser.unnormalise_x(x)
        y = torch.cat([batch.yc[k], batch.yt[k]])[:, 0].numpy()
        for key, blind in (("gt", False), ("blind", True)):
            ll, joint, rmse = _dense_scores(gen.topography, field, lat, lon, y, nc, blind)
            assert batch.meta[f"{key}_loglik"].dtype == torch.float64
            assert float(batch.meta[f"{key}_loglik"][k]) == pytest.approx(ll, abs=1e-8)
            assert float(batch.meta[f"{key}_loglik_joint"][k]) == pytest.approx(joint, abs=1e-8)
            assert float(batch.meta[f"{key}_rmse"][k]) == pytest.approx(rmse, abs=1e-8)
    # The oracle objects, recomputing from the batch alone, agree with the stored scores.
    for key in ("oracle", "blind_oracle"):
        ll = batch.meta[key].loglik(batch.xc, batch.yc, batch.xt, batch.yt).marginal
        prefix = "gt" if key == "oracle" else "blind"
        torch.testing.assert_close(ll, batch.meta[f"{prefix}_loglik"], rtol=0, atol=1e-8)
    post = batch.meta["oracle"].posterior(batch.xc, batch.yc, batch.xt)
    nt = batch.xt.shape[1]
    assert post.mean.shape == batch.yt.shape and post.cov.shape == (3, nt, nt)
    rmse = (post.mean - batch.yt).square().mean((-2, -1)).sqrt()
    torch.testing.assert_close(rmse, batch.meta["gt_rmse"], rtol=0, atol=1e-8)


def test_region_boxes_and_normalisation_round_trip():
    norm = terrain_normaliser()
    assert norm.scale == 10.0 and norm.centre == (47.5, 10.0)
    assert REGIONS["europe"].normalised(norm) == [(-1.25, 1.25), (-2.0, 2.0)]
    for box in REGIONS.values():
        back = RegionBox.from_normalised(box.normalised(norm), norm)
        np.testing.assert_allclose(back.lat, box.lat, atol=1e-12)
        np.testing.assert_allclose(back.lon, box.lon, atol=1e-12)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(20, 70, 50), rng.uniform(-130, 40, 50)
    la, lo = norm.unnormalise_x(norm.normalise_x(lat, lon))
    np.testing.assert_allclose(la, lat, atol=1e-12)
    np.testing.assert_allclose(lo, lon, atol=1e-12)
    # A batch's inputs map back onto grid cells of its region, inside each task's patch.
    gen = TerrainTaskGenerator("conus", patch_degrees=4.0, max_targets=20, dtype=torch.float64)
    batch = gen.sample(4, torch.Generator().manual_seed(1))
    x = torch.cat([batch.xc, batch.xt], 1)
    lat, lon = gen.normaliser.unnormalise_x(x.reshape(-1, 2).numpy())
    topo = gen.topography
    i, j = gen.topography.index(lat, lon)
    np.testing.assert_allclose(topo.lat[i], lat, atol=1e-9)
    np.testing.assert_allclose(topo.lon[j], lon, atol=1e-9)
    corner = batch.meta["corner"].repeat_interleave(x.shape[1], 0).numpy()
    assert ((i >= corner[:, 0]) & (i < corner[:, 0] + 16)).all()
    assert ((j >= corner[:, 1]) & (j < corner[:, 1] + 16)).all()
    # The out-of-region test lies wholly outside the training region's box (a fixed input with
    # that domain is zero on all of it), and the two shipped regions share the normaliser.
    assert gen.normaliser == norm
    west_edge = REGIONS["europe"].normalised(norm)[1][0]
    assert (x[..., 1] < west_edge).all()
    # The generator's domain holds every cell of its region, edge cells strictly inside.
    (lat_lo, lat_hi), (lon_lo, lon_hi) = gen.domain
    centres = gen.normaliser.normalise_x(*np.meshgrid(topo.lat, topo.lon, indexing="ij"))
    assert (centres[:, 0] > lat_lo).all() and (centres[:, 0] < lat_hi).all()
    assert (centres[:, 1] > lon_lo).all() and (centres[:, 1] < lon_hi).all()
    assert lat_hi - lat_lo == pytest.approx((25.0 + 0.25) / norm.scale)


def test_deterministic_part_is_pinned_to_real_topography():
    field = TerrainField()
    europe = load_topography("europe")
    assert terrain_file("europe").stat().st_size + terrain_file("conus").stat().st_size < 2**20
    assert europe.lat.size == 101 and europe.lon.size == 161 and europe.resolution == 0.25
    # The highest 0.25° cell of Europe is in the western Alps, within about a degree of
    # Mont Blanc, and the cell of Mont Blanc itself (a 0.25° mean with its valleys) is high.
    i, j = np.unravel_index(europe.elevation.argmax(), europe.elevation.shape)
    assert math.hypot(europe.lat[i] - MONT_BLANC[0], europe.lon[j] - MONT_BLANC[1]) < 1.25
    assert europe.elevation[i, j] > 2000.0
    assert europe.elevation[_cell(europe, *MONT_BLANC)] > 1800.0
    part = deterministic_part(europe, field, (43.0, 48.0), (4.0, 12.0))
    a, b = np.unravel_index(part.lapse.argmin(), part.lapse.shape)
    assert (part.lat[a], part.lon[b]) == (europe.lat[i], europe.lon[j])
    assert part.lapse[a, b] == pytest.approx(field.lapse_rate * europe.elevation[i, j] / 1000)
    assert part.lapse[a, b] < -13.0  # K: more than 2 km at -6.5 K/km
    # Land and sea: Paris is land, the Bay of Biscay sea (no lapse term, no land offset).
    assert europe.land[_cell(europe, 48.85, 2.35)] and not europe.land[_cell(europe, 45.0, -5.0)]
    sea = deterministic_part(europe, field, (45.0, 45.0), (-5.0, -5.0))
    assert sea.total.shape == (1, 1) and sea.total[0, 0] == 0.0
    land = deterministic_part(europe, field, (48.75, 48.75), (2.25, 2.25))
    assert land.land[0, 0] == field.land_offset
    # The contiguous US: the highest terrain is the Colorado Rockies, above 3 km.
    conus = load_topography("conus")
    i, j = np.unravel_index(conus.elevation.argmax(), conus.elevation.shape)
    assert 37.0 <= conus.lat[i] <= 41.0 and -109.0 <= conus.lon[j] <= -102.0
    assert conus.elevation[i, j] > 3000.0
    assert conus.elevation[_cell(conus, *COLORADO)] > 2500.0
    assert not conus.land[_cell(conus, 35.0, -125.0)] and conus.land[_cell(conus, 38.5, -98.0)]


def test_same_seed_same_batches_different_seed_different():
    gen = TerrainTaskGenerator("europe", patch_degrees=4.0, max_targets=30,
                               aux_vars=("elevation", "land"))
    a, b = (gen.sample(4, torch.Generator().manual_seed(7)) for _ in range(2))
    c = gen.sample(4, torch.Generator().manual_seed(8))
    for name in ("xc", "yc", "xt", "yt", "aux_c", "aux_t"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    for key in ("gt_loglik", "blind_loglik", "corner"):
        assert torch.equal(a.meta[key], b.meta[key])
    assert not torch.equal(a.meta["corner"], c.meta["corner"])
    assert a.xc.shape != c.xc.shape or not torch.equal(a.yc, c.yc)
    shared = TerrainTaskGenerator("europe", patch_degrees=4.0, max_targets=30, same_patch=True)
    batch = shared.sample(3, torch.Generator().manual_seed(7))
    assert (batch.meta["corner"] == batch.meta["corner"][0]).all()
    assert not torch.equal(batch.yc[0], batch.yc[1])
    fixed = gen.fixed_set(6, 4, seed=2)
    again = gen.fixed_set(6, 4, seed=2)
    assert [f.xt.shape[0] for f in fixed] == [4, 2]
    assert all(torch.equal(f.yt, g.yt) for f, g in zip(fixed, again))


def test_batch_layout_and_auxiliary_inputs():
    gen = TerrainTaskGenerator("europe", patch_degrees=5.0, context_fraction=(0.05, 0.2),
                               max_targets=40, aux_vars=("land", "elevation"))
    topo = gen.topography
    for seed in range(3):
        batch = gen.sample(2, torch.Generator().manual_seed(seed))
        assert isinstance(batch, Batch) and batch.xc.dtype == torch.get_default_dtype()
        n_cells = gen.patch_cells**2
        assert gen.patch_cells == 20
        assert 0.05 * n_cells - 1 <= batch.xc.shape[1] <= 0.2 * n_cells + 1
        assert batch.xt.shape[1] == 40 and batch.yt.shape == (2, 40, 1)
        # Channels come in AUX_CHANNELS order whatever order they were asked in.
        assert gen.aux_vars == ("elevation", "land") and batch.aux_t.shape == (2, 40, 2)
        lat, lon = gen.normaliser.unnormalise_x(batch.xt.double().reshape(-1, 2).numpy())
        i, j = topo.index(lat, lon)
        aux = batch.aux_t.double().reshape(-1, 2).numpy()
        np.testing.assert_allclose(aux[:, 0], np.maximum(topo.elevation[i, j], 0) / 1000,
                                   atol=1e-6)
        np.testing.assert_array_equal(aux[:, 1], topo.land[i, j])
        # Context and target cells never coincide.
        xc, xt = batch.xc[0], batch.xt[0]
        assert torch.cdist(xc, xt).min() > 0
    plain = TerrainTaskGenerator("europe", patch_degrees=5.0).sample(
        1, torch.Generator().manual_seed(0))
    assert plain.aux_c is None and plain.aux_t is None
    patch = gen.patch(gen.patch_corner(*MONT_BLANC))
    assert patch.x.shape == (400, 2) and patch.aux.shape == (400, 2)
    assert patch.part.lapse.shape == (20, 20)
    np.testing.assert_allclose(patch.part.lapse.reshape(-1),
                               gen.field.lapse_rate * patch.aux[:, 0].double().numpy(),
                               atol=1e-5)


def test_oracle_beats_the_terrain_blind_reference_on_mountains():
    gen = TerrainTaskGenerator("europe", patch_degrees=6.0, context_fraction=(0.02, 0.1),
                               max_targets=100)
    alps = gen.patch_corner(*MONT_BLANC)
    batch = gen.sample(6, torch.Generator().manual_seed(0), corners=[alps] * 6)
    gain = batch.meta["gt_loglik"] - batch.meta["blind_loglik"]
    assert gain.mean() > 1.0, gain
    assert (batch.meta["gt_rmse"] < batch.meta["blind_rmse"]).float().mean() >= 0.8
    rockies = TerrainTaskGenerator("conus", patch_degrees=6.0, context_fraction=(0.02, 0.1),
                                   max_targets=100)
    batch = rockies.sample(6, torch.Generator().manual_seed(0),
                           corners=[rockies.patch_corner(*COLORADO)] * 6)
    assert (batch.meta["gt_loglik"] - batch.meta["blind_loglik"]).mean() > 1.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="lengthscale"):
        TerrainField(lengthscale=0.0)
    with pytest.raises(ValueError, match="noise_std"):
        TerrainField(noise_std=-1.0)
    with pytest.raises(ValueError, match="region"):
        terrain_file("mars")
    with pytest.raises(ValueError, match="context_fraction"):
        TerrainTaskGenerator("europe", context_fraction=(0.3, 0.1))
    with pytest.raises(ValueError, match="aux_vars"):
        TerrainTaskGenerator("europe", aux_vars=("temperature",))
    with pytest.raises(ValueError, match="patch_degrees"):
        TerrainTaskGenerator("europe", patch_degrees=100.0)
    with pytest.raises(ValueError, match="normaliser"):
        TerrainTaskGenerator("europe", TerrainField(y_scale=2.0), normaliser=terrain_normaliser())
    gen = TerrainTaskGenerator("europe", patch_degrees=4.0)
    with pytest.raises(ValueError, match="corners"):
        gen.sample(1, torch.Generator(), corners=[(-1, 0)])
    with pytest.raises(ValueError, match="x: point"):
        gen.exact_oracle.mean_at(torch.zeros(1, 1, 2) + 50.0)


def test_samples_have_the_field_s_mean_and_variance():
    field = TerrainField()
    gen = TerrainTaskGenerator("europe", field, patch_degrees=2.0, max_targets=1,
                               context_fraction=(0.02, 0.02), dtype=torch.float64)
    corner = gen.patch_corner(*MONT_BLANC)
    batch = gen.sample(400, torch.Generator().manual_seed(0), corners=[corner] * 400)
    mean_t = batch.meta["oracle"].mean_at(batch.xt)
    assert float(mean_t.min()) * field.y_scale < -8.0  # the Alps: a strong lapse term
    resid = (batch.yt - mean_t).reshape(-1) * field.y_scale  # g + noise at one cell, in K
    assert abs(float(resid.mean())) < 4 * field.amplitude / 20
    expected = field.amplitude**2 + field.noise_std**2
    assert float(resid.var()) == pytest.approx(expected, rel=0.25)
