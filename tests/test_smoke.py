"""The smoke simulator, its on-disk cache and its task generator, on tiny grids."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

from approxeq.data import smoke as smoke_module
from approxeq.data.smoke import (
    SmokeNormalisation,
    SmokeSettings,
    SmokeTaskGenerator,
    cache_path,
    default_cache_dir,
    generate_smoke,
    load_smoke,
    split_indices,
)
from approxeq.data.smoke_sim import Scene, simulate, turn_grid, turn_point, turn_vectors

TINY = SmokeSettings(grid=16, n_simulations=6, steps=24, first_snapshot=4, snapshot_every=4,
                     obstacle_radius=0.15, seed=3)


@pytest.fixture(scope="module")
def fields():
    return simulate(TINY)


@pytest.fixture(scope="module")
def data():
    return generate_smoke(TINY, progress=False)


def test_simulator_is_deterministic_and_independent_of_the_batch(fields):
    again = simulate(TINY)
    np.testing.assert_array_equal(again.density, fields.density)
    np.testing.assert_array_equal(again.velocity, fields.velocity)
    # a simulation alone gives what it gave among the others (own random stream, own sub-steps)
    alone = simulate(TINY, np.array([4]))
    np.testing.assert_allclose(alone.density[0], fields.density[4], rtol=0, atol=1e-12)
    other_seed = simulate(replace(TINY, seed=4), np.array([4]))
    assert not np.allclose(other_seed.density[0], fields.density[4])


def test_plumes_rise_and_reach_the_obstacle(fields):
    scene = Scene.build(TINY)
    last = fields.density[:, -1]
    n = TINY.grid
    # the smoke's centre of mass ends above the inflows
    height = (last * scene.cy).sum((1, 2)) / last.sum((1, 2))
    assert (height > fields.inflows.centre[:, 1] * n + 1.0).all()
    # the obstacle's neighbours see smoke: the flow has to go round it
    ring = np.zeros_like(scene.solid)
    ring[1:] |= scene.solid[:-1]
    ring[:-1] |= scene.solid[1:]
    ring[:, 1:] |= scene.solid[:, :-1]
    ring[:, :-1] |= scene.solid[:, 1:]
    ring &= ~scene.solid
    assert last[:, ring].max() > 1e-2


def test_no_smoke_enters_the_obstacle_and_density_stays_non_negative(fields):
    solid = Scene.build(TINY).solid
    assert solid.sum() >= 4
    assert (fields.density[..., solid] == 0).all()
    assert fields.density.min() >= -1e-12
    # no flow through the obstacle either: the velocity there is zero
    assert (fields.velocity[..., solid, :] == 0).all()


def test_total_smoke_is_what_the_inflow_added(fields):
    # closed walls, no decay: total density at each snapshot = inflow per step x steps so far
    total = fields.density.sum((2, 3))
    np.testing.assert_allclose(total, fields.added, rtol=1e-10)
    inflow = fields.inflows
    disks = Scene.build(TINY).inflow_masks(inflow.centre * TINY.grid, inflow.radius * TINY.grid)
    per_step = inflow.rate * TINY.dt * disks.sum((1, 2))
    assert (per_step > 0).all()
    np.testing.assert_allclose(total, per_step[:, None] * np.array(TINY.snapshot_steps),
                               rtol=1e-10)


def test_velocity_is_divergence_free_in_the_fluid():
    # the projection is a direct solve: the divergence of the face velocities is at rounding
    scene = Scene.build(TINY)
    rng = np.random.default_rng(0)
    n = TINY.grid
    u = rng.normal(size=(3, n + 1, n)) * scene.open_u
    v = rng.normal(size=(3, n, n + 1)) * scene.open_v
    scene.project(u, v)
    div = (u[:, 1:] - u[:, :-1]) + (v[:, :, 1:] - v[:, :, :-1])
    assert np.abs(div).max() < 1e-10
    assert (u[:, ~scene.open_u] == 0).all() and (v[:, ~scene.open_v] == 0).all()


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_the_turned_scene_is_the_turn_of_the_scene(fields, turns):
    turned = replace(TINY, quarter_turns=turns)
    a, b = Scene.build(TINY), Scene.build(turned)
    np.testing.assert_array_equal(b.solid, turn_grid(a.solid, turns))
    out = simulate(turned)
    np.testing.assert_allclose(out.inflows.centre, turn_point(fields.inflows.centre, turns),
                               atol=1e-12)
    np.testing.assert_allclose(out.density, turn_grid(fields.density, turns), atol=1e-8)
    vel = turn_vectors(turn_grid(fields.velocity, turns, axes=(-3, -2)), turns)
    np.testing.assert_allclose(out.velocity, vel, atol=1e-8)


def test_moved_obstacle_changes_the_mask_and_keeps_the_inflows():
    moved = TINY.transfer("moved", obstacle_centre=(0.3, 0.6))
    assert moved.obstacle_centre == (0.3, 0.6) and moved.seed == TINY.seed
    assert not np.array_equal(Scene.build(moved).solid, Scene.build(TINY).solid)
    assert TINY.transfer("rotated").quarter_turns == 1
    with pytest.raises(ValueError, match="kind"):
        TINY.transfer("mirrored")


def test_cache_is_reused_when_settings_match_and_invalidated_when_they_change(tmp_path,
                                                                              monkeypatch):
    calls = []
    real = smoke_module.generate_smoke

    def counting(settings, **kw):
        calls.append(settings)
        return real(settings, **kw)

    monkeypatch.setattr(smoke_module, "generate_smoke", counting)
    first = load_smoke(TINY, cache_dir=tmp_path, progress=False)
    assert first.path == cache_path(TINY, tmp_path) and first.path.is_file()
    second = load_smoke(TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1
    np.testing.assert_array_equal(second.density, first.density)
    np.testing.assert_array_equal(second.solid, first.solid)
    np.testing.assert_array_equal(second.inflow, first.inflow)
    changed = replace(TINY, buoyancy=0.07)
    third = load_smoke(changed, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2 and third.path != first.path
    assert not np.allclose(third.density, first.density)
    # a file at the right name whose recorded settings differ is made again, not trusted
    os.replace(third.path, first.path)
    fourth = load_smoke(TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3
    np.testing.assert_array_equal(fourth.density, first.density)
    assert not [p.name for p in first.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_damaged_cache_is_detected_and_simulated_again(tmp_path, monkeypatch):
    xr = pytest.importorskip("xarray")
    calls = []
    real = smoke_module.generate_smoke
    monkeypatch.setattr(smoke_module, "generate_smoke",
                        lambda settings, **kw: calls.append(1) or real(settings, **kw))
    first = load_smoke(TINY, cache_dir=tmp_path, progress=False)
    good = first.path.read_bytes()
    # bytes zeroed inside the compressed arrays: netCDF4's "NetCDF: HDF error" on reading
    middle = len(good) // 2
    first.path.write_bytes(good[:middle] + bytes(64) + good[middle + 64:])
    again = load_smoke(TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2
    np.testing.assert_array_equal(again.density, first.density)
    # a change that still decodes (one inflow value) no longer matches the recorded checksum
    with xr.open_dataset(again.path) as ds:
        changed = ds.load()
    changed["inflow_rate"][0] += 1.0
    changed.to_netcdf(again.path)
    third = load_smoke(TINY, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3
    np.testing.assert_array_equal(third.inflow, first.inflow)
    assert load_smoke(TINY, cache_dir=tmp_path, progress=False).path == first.path
    assert len(calls) == 3  # an intact cache is read, not simulated


def test_cache_file_is_netcdf_with_settings_and_version(tmp_path):
    xr = pytest.importorskip("xarray")
    data = load_smoke(TINY, cache_dir=tmp_path, progress=False)
    with xr.open_dataset(data.path) as ds:
        assert ds["density"].dims == ("sim", "time", "x", "y")
        assert ds["density"].shape == (6, len(TINY.snapshot_steps), 16, 16)
        assert list(ds["time"].values) == list(TINY.snapshot_steps)
        assert ds.attrs["approxeq_version"]
        assert SmokeSettings.from_dict(__import__("json").loads(ds.attrs["settings"])) == TINY


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXEQ_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert cache_path(TINY).parent == tmp_path / "mine" / "smoke"
    monkeypatch.delenv("APPROXEQ_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "approxeq"


def test_same_seed_gives_identical_batches(data):
    gen = SmokeTaskGenerator(data, "train", outputs="both")
    a = gen.sample(4, torch.Generator().manual_seed(7))
    b = gen.sample(4, torch.Generator().manual_seed(7))
    c = gen.sample(4, torch.Generator().manual_seed(8))
    for name in ("xc", "yc", "xt", "yt"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert torch.equal(a.meta["sim"], b.meta["sim"])
    assert not (a.xc.shape == c.xc.shape and torch.equal(a.yc, c.yc))
    fixed = gen.fixed_set(5, 2, seed=1)
    again = gen.fixed_set(5, 2, seed=1)
    assert all(torch.equal(p.yt, q.yt) for p, q in zip(fixed, again))


def test_tasks_hold_the_snapshot_values_at_the_right_cells(data):
    gen = SmokeTaskGenerator(data, "train", outputs="both", max_targets=50)
    batch = gen.sample(3, torch.Generator().manual_seed(0))
    n, m = 16, int((~data.solid).sum())
    nc, nt = batch.xc.shape[1], batch.xt.shape[1]
    assert 0.05 * m - 1 <= nc <= 0.5 * m + 1 and nt == min(50, m - nc)
    assert batch.yc.shape[-1] == 3 and gen.dim_y == 3
    x = torch.cat([batch.xc, batch.xt], 1)
    assert x.abs().max() < 1 and gen.domain == [(-1.0, 1.0), (-1.0, 1.0)]
    ij = ((x + 1) * n / 2 - 0.5).round().long()
    assert not torch.from_numpy(data.solid)[ij[..., 0], ij[..., 1]].any()
    norm = gen.normalisation
    y = torch.cat([batch.yc, batch.yt], 1).double()
    for k in range(3):
        sim, t = int(batch.meta["sim"][k]), int(batch.meta["snapshot"][k])
        assert sim in set(data.split("train").tolist())
        raw = torch.from_numpy(data.density[sim, t]).double()[ij[k, :, 0], ij[k, :, 1]]
        torch.testing.assert_close(y[k, :, 0] * norm.density_std + norm.density_mean, raw,
                                   rtol=1e-5, atol=1e-6)
        vel = torch.from_numpy(data.velocity[sim, t]).double()[ij[k, :, 0], ij[k, :, 1]]
        torch.testing.assert_close(y[k, :, 1:] * norm.velocity_scale, vel, rtol=1e-5, atol=1e-6)
        assert int(batch.meta["step"][k]) == TINY.snapshot_steps[t]
    xf, yf, solid = gen.field(0, 2)
    assert xf.shape == (16, 16, 2) and yf.shape == (16, 16, 3) and solid.dtype == torch.bool


def test_splits_are_disjoint_and_cover_every_simulation(data):
    parts = split_indices(10, (0.6, 0.2, 0.2))
    assert [p.tolist() for p in parts.values()] == [list(range(6)), [6, 7], [8, 9]]
    split = {name: set(data.split(name).tolist()) for name in ("train", "val", "test")}
    assert set().union(*split.values()) == set(range(6))
    assert sum(map(len, split.values())) == 6
    test = SmokeTaskGenerator(data, "test", outputs="density")
    assert set(test.sample(8, torch.Generator().manual_seed(0)).meta["sim"].tolist()) <= \
        split["test"]


def test_bad_arguments_are_named(data):
    with pytest.raises(ValueError, match="grid"):
        SmokeSettings(grid=4)
    with pytest.raises(ValueError, match="inflow_x"):
        SmokeSettings(inflow_x=(0.8, 0.2))
    with pytest.raises(ValueError, match="quarter_turns"):
        SmokeSettings(quarter_turns=4)
    with pytest.raises(ValueError, match="outputs"):
        SmokeTaskGenerator(data, outputs="pressure")
    with pytest.raises(ValueError, match="context_fraction"):
        SmokeTaskGenerator(data, context_fraction=(0.5, 0.1))
    with pytest.raises(ValueError, match="split"):
        SmokeTaskGenerator(data, split="holdout")
    with pytest.raises(TypeError, match="settings"):
        load_smoke({"grid": 16})


def _hand_made(seed: int = 0):
    """A hand-made 8 x 8 velocity field (no simulation) with an obstacle of no symmetry."""
    s = replace(TINY, grid=8, n_simulations=3)
    g = np.random.default_rng(seed)
    n_t, n = len(s.snapshot_steps), s.grid
    solid = np.zeros((n, n), bool)
    solid[1, 2] = solid[1, 3] = solid[2, 2] = True
    density = g.random((3, n_t, n, n)).astype(np.float32) * ~solid
    velocity = g.normal(size=(3, n_t, n, n, 2)).astype(np.float32) * ~solid[..., None]
    inflow = np.column_stack([g.random((3, 2)), np.full(3, 0.1), np.ones(3)])
    return smoke_module.SmokeData(s, density, velocity, solid, inflow)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_the_turned_scene_serves_the_turned_vectors_at_the_turned_inputs(turns):
    # a turn R of the scene: velocity v at x becomes R v at R x, exactly, in the served tasks
    data = _hand_made()
    turned = data.turned(turns)
    assert turned.settings.quarter_turns == turns
    np.testing.assert_array_equal(turned.solid, turn_grid(data.solid, turns))
    gen = SmokeTaskGenerator(data, "all", outputs="velocity")
    norm = gen.normalisation  # a turn keeps the rms of the velocity: the same scale
    refit = SmokeNormalisation.fit(turned, turned.split("train"))
    assert refit.velocity_scale == pytest.approx(norm.velocity_scale, rel=1e-12)
    v = turn_grid(data.velocity, turns, axes=(-3, -2))  # and R v exactly, in float32
    assert turned.velocity.dtype == np.float32
    for _ in range(turns):
        v = np.stack([-v[..., 1], v[..., 0]], -1)
    np.testing.assert_array_equal(turned.velocity, v)
    tgen = SmokeTaskGenerator(turned, "all", outputs="velocity", normalisation=norm)
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64).matrix_power(turns)
    batch = tgen.sample(4, torch.Generator().manual_seed(1))
    n = data.settings.grid
    for x, y in ((batch.xc, batch.yc), (batch.xt, batch.yt)):
        back = x.double() @ rot  # R^-1 x (R is orthogonal: x R = (R^T x^T)^T)
        ij = ((back + 1) * n / 2 - 0.5).round().long()
        torch.testing.assert_close(back, gen.grid_inputs().double()[ij[..., 0], ij[..., 1]],
                                   rtol=0, atol=1e-6)
        for k in range(4):
            sim, t = int(batch.meta["sim"][k]), int(batch.meta["snapshot"][k])
            v = gen.field(sim, t)[1].double()[ij[k, :, 0], ij[k, :, 1]]
            torch.testing.assert_close(y[k].double(), v @ rot.T, rtol=0, atol=1e-6)


def test_simulating_the_turned_scene_gives_the_turned_data(data):
    # the rotated transfer set simulates the turned scene: the same as turning the data
    sim = generate_smoke(replace(TINY, quarter_turns=1), progress=False)
    turned = data.turned(1)
    assert sim.settings == turned.settings
    np.testing.assert_array_equal(sim.solid, turned.solid)
    np.testing.assert_allclose(sim.inflow, turned.inflow, atol=1e-12)
    np.testing.assert_allclose(sim.density, turned.density, atol=1e-6)
    np.testing.assert_allclose(sim.velocity, turned.velocity, atol=1e-6)
