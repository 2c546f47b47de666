"""The charged n-body simulator: reproducibility, energy, and its own E(3) and S_n equivariance."""

from __future__ import annotations

import pytest
import torch

from approxeq.data.nbody import (
    NBodyConfig,
    make_nbody,
    sample_initial_conditions,
    simulate,
    total_energy,
)


def _state(gen, n_sims=6):
    loc, vel, charges = sample_initial_conditions(n_sims, generator=gen)
    return loc, vel, charges


def _random_rotation(gen):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def test_reproducible_and_nested():
    config = NBodyConfig(save_every=10, target_frame=4, input_frame=2, n_frames=5)
    a, b, c = make_nbody(5, 3, config), make_nbody(5, 3, config), make_nbody(3, 3, config)
    assert torch.equal(a.target, b.target) and torch.equal(a.loc, b.loc)
    assert torch.equal(a.loc[:3], c.loc) and torch.equal(a.target[:3], c.target)
    assert not torch.equal(make_nbody(5, 4, config).loc, a.loc)
    assert a.loc.shape == a.target.shape == (5, 5, 3) and a.charges.abs().eq(1).all()


def test_energy_conserved_short_horizon(gen):
    loc, vel, charges = _state(gen, 8)
    locs, vels = simulate(loc, vel, charges, 201, dt=1e-4, save_every=200)
    e0 = total_energy(locs[:, 0], vels[:, 0], charges)
    e1 = total_energy(locs[:, 1], vels[:, 1], charges)
    assert (e1 - e0).abs().max() < 1e-3 * e0.abs().clamp_min(1).max()


@pytest.mark.parametrize("reflect", [False, True])
def test_simulator_e3_equivariant(gen, reflect):
    loc, vel, charges = _state(gen)
    rot = _random_rotation(gen)
    if reflect != bool(torch.det(rot) < 0):
        rot = rot * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    shift = torch.randn(3, generator=gen, dtype=torch.float64)
    locs, vels = simulate(loc, vel, charges, 301, save_every=100, max_force=100.0)
    locs_g, vels_g = simulate(loc @ rot.T + shift, vel @ rot.T, charges, 301, save_every=100,
                              max_force=100.0)
    assert torch.allclose(locs_g, locs @ rot.T + shift, atol=1e-8)
    assert torch.allclose(vels_g, vels @ rot.T, atol=1e-8)


def test_simulator_permutation_equivariant(gen):
    loc, vel, charges = _state(gen)
    perm = torch.randperm(5, generator=gen)
    locs, vels = simulate(loc, vel, charges, 301, save_every=100, max_force=100.0)
    locs_p, vels_p = simulate(loc[:, perm], vel[:, perm], charges[:, perm], 301, save_every=100,
                              max_force=100.0)
    assert torch.allclose(locs_p, locs[:, :, perm], atol=1e-8)
    assert torch.allclose(vels_p, vels[:, :, perm], atol=1e-8)


def test_charges_matter(gen):
    loc, vel, charges = _state(gen)
    locs, _ = simulate(loc, vel, charges, 301, save_every=300)
    locs_flip, _ = simulate(loc, vel, -charges * torch.tensor([1.0, -1, 1, 1, 1],
                                                               dtype=torch.float64).view(1, 5, 1),
                            301, save_every=300)
    assert not torch.allclose(locs[:, -1], locs_flip[:, -1], atol=1e-4)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match="charges"):
        simulate(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), torch.zeros(2, 5), 10)
