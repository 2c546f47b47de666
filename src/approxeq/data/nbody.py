"""The charged n-body system of Satorras et al. (EGNN, 2021; "charged" set), simulated on the fly.

``n`` particles with charges ±1 and unit mass move under Coulomb-like pairwise forces

    F_i = c · Σ_{j≠i} q_i q_j (x_i − x_j) / |x_i − x_j|³

(like charges repel), integrated by a leapfrog (kick–drift) scheme with step ``dt``. No walls.
Like the EGNN generator we cap forces at ``0.1 / dt`` (close encounters would otherwise fling
particles far away and dominate the MSE), but we cap the force *norm* rather than each coordinate,
so that the simulator stays exactly E(3)- and S_n-equivariant, which the tests check.
The task (as in EGNN and LPS): from positions and velocities at frame 30, predict positions at
frame 40, i.e. 1,000 integrator steps later when frames are saved every 100 steps of
``dt = 0.001``.

Everything is vectorised in torch over simulations and generated from a seed, so no data file
is ever stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "NBodyConfig",
    "NBodyData",
    "sample_initial_conditions",
    "coulomb_forces",
    "simulate",
    "total_energy",
    "make_nbody",
    "make_nbody_splits",
]


@dataclass(frozen=True)
class NBodyConfig:
    """Parameters of the charged system and of the prediction task (defaults: the EGNN set)."""

    n_particles: int = 5
    dim: int = 3
    dt: float = 0.001
    save_every: int = 100
    n_frames: int = 49
    loc_std: float = 1.0
    speed: float = 0.5
    strength: float = 1.0
    max_force: float | None = 100.0
    input_frame: int = 30
    target_frame: int = 40


def sample_initial_conditions(n_sims: int, config: NBodyConfig = NBodyConfig(), *,
                              generator: torch.Generator | None = None,
                              dtype: torch.dtype = torch.float64
                              ) -> tuple[Tensor, Tensor, Tensor]:
    """Random initial states: positions ``N(0, loc_std²)``, velocities of norm ``speed`` in
    uniformly random directions, charges ±1 with equal probability.

    Returns ``(loc [n_sims, n, dim], vel [n_sims, n, dim], charges [n_sims, n, 1])``.
    """
    n, d = config.n_particles, config.dim
    loc = torch.randn(n_sims, n, d, generator=generator, dtype=dtype) * config.loc_std
    vel = torch.randn(n_sims, n, d, generator=generator, dtype=dtype)
    vel = vel / vel.norm(dim=-1, keepdim=True) * config.speed
    charges = torch.randint(0, 2, (n_sims, n, 1), generator=generator).to(dtype) * 2 - 1
    return loc, vel, charges


def coulomb_forces(loc: Tensor, charges: Tensor, strength: float = 1.0) -> Tensor:
    """Pairwise Coulomb forces ``[b, n, d]`` on particles at ``loc`` ``[b, n, d]`` with
    ``charges`` ``[b, n, 1]``."""
    diff = loc.unsqueeze(2) - loc.unsqueeze(1)                      # x_i - x_j, [b, n, n, d]
    dist2 = (diff * diff).sum(-1)
    n = loc.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=loc.device)
    # the diagonal gets distance 1 so that 0/0 never appears; its charge product is zeroed below
    inv_r3 = torch.where(eye, torch.ones_like(dist2), dist2).pow(-1.5)
    qq = (charges * charges.transpose(1, 2)).masked_fill(eye, 0.0)
    return strength * ((qq * inv_r3).unsqueeze(-1) * diff).sum(2)


def total_energy(loc: Tensor, vel: Tensor, charges: Tensor, strength: float = 1.0) -> Tensor:
    """Kinetic plus Coulomb potential energy, ``[b]`` (unit masses)."""
    kinetic = 0.5 * (vel * vel).sum((-1, -2))
    diff = loc.unsqueeze(2) - loc.unsqueeze(1)
    n = loc.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=loc.device)
    dist = torch.where(eye, torch.ones_like(diff[..., 0]), diff.norm(dim=-1))
    qq = (charges * charges.transpose(1, 2)).masked_fill(eye, 0.0)
    return kinetic + 0.5 * strength * (qq / dist).sum((-1, -2))


def _capped(force: Tensor, max_force: float | None) -> Tensor:
    if max_force is None:
        return force
    norm = force.norm(dim=-1, keepdim=True)
    return force * (max_force / norm.clamp_min(max_force))


def simulate(loc: Tensor, vel: Tensor, charges: Tensor, n_steps: int, *, dt: float = 0.001,
             save_every: int = 100, strength: float = 1.0, max_force: float | None = None
             ) -> tuple[Tensor, Tensor]:
    """Integrate from the initial state and return the saved frames.

    The scheme (as in the EGNN generator): an initial kick ``v += dt F``, then ``n_steps − 1``
    times a drift ``x += dt v`` followed by a kick; the state after step ``s`` is saved when
    ``s`` is a multiple of ``save_every`` (frame 0 is the initial state).

    Args:
        loc, vel: ``[b, n, d]``. charges: ``[b, n, 1]``.
        max_force: if given, each particle's force is scaled down to at most this norm.
    Returns:
        ``(locs, vels)``, each ``[b, n_saved, n, d]``, where
        ``n_saved = 1 + (n_steps − 1) // save_every``.
    """
    if loc.dim() != 3 or vel.shape != loc.shape:
        raise ValueError(f"loc, vel: expected equal shapes [b, n, d], got {tuple(loc.shape)} "
                         f"and {tuple(vel.shape)}")
    if charges.shape != loc.shape[:2] + (1,):
        raise ValueError(f"charges: expected {tuple(loc.shape[:2]) + (1,)}, "
                         f"got {tuple(charges.shape)}")
    if n_steps < 1 or save_every < 1:
        raise ValueError(f"n_steps and save_every must be >= 1, got {n_steps}, {save_every}")
    loc, vel = loc.clone(), vel.clone()
    locs, vels = [loc.clone()], [vel.clone()]
    vel = vel + dt * _capped(coulomb_forces(loc, charges, strength), max_force)
    for step in range(1, n_steps):
        loc = loc + dt * vel
        if step % save_every == 0:
            locs.append(loc.clone())
            vels.append(vel.clone())
        vel = vel + dt * _capped(coulomb_forces(loc, charges, strength), max_force)
    return torch.stack(locs, 1), torch.stack(vels, 1)


@dataclass(frozen=True)
class NBodyData:
    """One split of the prediction task.

    Attributes:
        loc, vel: input positions and velocities at ``input_frame``, ``[N, n, d]``.
        charges: ``[N, n, 1]``.
        target: positions at ``target_frame``, ``[N, n, d]``.
    """

    loc: Tensor
    vel: Tensor
    charges: Tensor
    target: Tensor

    def __len__(self) -> int:
        return self.loc.shape[0]

    def subset(self, index: Tensor | slice) -> NBodyData:
        return NBodyData(self.loc[index], self.vel[index], self.charges[index], self.target[index])

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
           ) -> NBodyData:
        return NBodyData(*(t.to(device=device, dtype=dtype)
                           for t in (self.loc, self.vel, self.charges, self.target)))


def make_nbody(n_sims: int, seed: int, config: NBodyConfig = NBodyConfig(), *,
               chunk: int = 4096, dtype: torch.dtype = torch.float64) -> NBodyData:
    """``n_sims`` simulations from ``seed`` (the same on every machine), reduced to the task:
    input state at ``config.input_frame``, target positions at ``config.target_frame``.

    Only the first ``target_frame · save_every + 1`` steps are integrated. Sets are nested:
    the first ``m`` simulations of ``make_nbody(n, seed)`` are ``make_nbody(m, seed)``.
    """
    if n_sims < 1:
        raise ValueError(f"n_sims: expected >= 1, got {n_sims}")
    if not 0 <= config.input_frame < config.target_frame < config.n_frames:
        raise ValueError(f"config: need 0 <= input_frame < target_frame < n_frames, got "
                         f"{config.input_frame}, {config.target_frame}, {config.n_frames}")
    gen = torch.Generator().manual_seed(seed)
    # one draw per simulation, so that the first m of n simulations equal the m of a smaller set
    draws = [sample_initial_conditions(1, config, generator=gen, dtype=dtype)
             for _ in range(n_sims)]
    loc0, vel0, charges = (torch.cat(t) for t in zip(*draws))
    n_steps = config.target_frame * config.save_every + 1
    out = []
    for start in range(0, n_sims, chunk):
        part = slice(start, start + chunk)
        locs, vels = simulate(loc0[part], vel0[part], charges[part], n_steps, dt=config.dt,
                              save_every=config.save_every, strength=config.strength,
                              max_force=config.max_force)
        out.append((locs[:, config.input_frame], vels[:, config.input_frame],
                    locs[:, config.target_frame]))
    loc, vel, target = (torch.cat(t) for t in zip(*out))
    return NBodyData(loc, vel, charges, target)


def make_nbody_splits(n_train: int, n_val: int, n_test: int, seed: int = 0,
                      config: NBodyConfig = NBodyConfig()) -> dict[str, NBodyData]:
    """Train/val/test splits from independent seeds derived from ``seed``
    (``3 seed``, ``3 seed + 1``, ``3 seed + 2``); growing one split leaves the others unchanged."""
    return {"train": make_nbody(n_train, 3 * seed, config),
            "val": make_nbody(n_val, 3 * seed + 1, config),
            "test": make_nbody(n_test, 3 * seed + 2, config)}
