"""A batched 2-D smoke simulator: buoyant smoke in a closed square box around a round obstacle.

The scheme (all in float64 numpy, lengths in cells, time in steps of ``dt``):

* **Grid.** ``n × n`` cells on a staggered (MAC) grid: the smoke density lives at cell centres,
  the velocity's x-component on the vertical faces ``u [sim, n + 1, n]`` and its y-component on
  the horizontal faces ``v [sim, n, n + 1]``. Arrays are indexed ``[sim, x, y]`` with ``y`` up.
* **Solid cells.** A cell whose centre lies inside the obstacle disk is solid. A face is *open*
  when both its cells are fluid; the box's walls and every face of a solid cell are closed and
  carry no velocity, so nothing ever flows into the obstacle or out of the box.
* **One step.** (1) the inflow adds ``rate * dt`` times a soft disk (fluid cells only);
  (2) buoyancy accelerates each face by ``buoyancy * dt`` times the mean density of its two
  cells, along ``up`` (``(0, 1)``, turned with the scene); (3) the velocity is advected by
  itself, semi-Lagrangian with bilinear interpolation; (4) a pressure projection makes it
  exactly divergence-free on the fluid cells: the pressure solves a graph Laplacian over the
  open faces, factorised once by sparse LU (a direct solve, no tolerance); (5) the smoke moves
  in flux form (upwind MUSCL with the minmod limiter) over the open faces, in as many
  sub-steps as keep every face's Courant number at most 0.2, counted per simulation.
* **Invariants.** Flux form over closed walls conserves smoke exactly: the total smoke after a
  step is the total before plus ``dt * rate * sum(inflow disk)``; solid cells stay at zero;
  the sub-step limit keeps the density non-negative. Each simulation is computed independently
  of the others in its batch (per-simulation sub-steps, a per-simulation random stream), so a
  simulation's result depends on the settings and its index only.
* **Symmetry.** Every part of the scheme commutes with quarter turns of the box, so the scene
  turned by ``quarter_turns`` (obstacle, inflow and gravity alike) gives the turned fields, up
  to rounding.

This is a small solver of this library's own, not phiflow: phiflow installs cleanly but was
several times slower per batched step here and its iterative pressure solve failed to converge
for some simulations of a batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

#: bump when the scheme changes so that cached data made by an older scheme is regenerated
SCHEME_VERSION = 1
#: the largest Courant number of the smoke transport's sub-steps (keeps the density >= 0)
MAX_COURANT = 0.2


def _pair(name: str, v: Any, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float]:
    try:
        a, b = (float(t) for t in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (low, high), got {v!r}") from None
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name}: expected {lo} <= low <= high <= {hi}, got {v!r}")
    return a, b


@dataclass(frozen=True)
class SmokeSettings:
    """Everything that fixes a smoke dataset (two equal settings give the same data).

    Positions and radii are fractions of the box side (the box is ``[0, 1]²``, ``y`` up), so a
    scene looks the same at every ``grid``; the dynamics are in cells and steps, so a finer
    grid needs more ``steps`` for the plume to rise as far.

    Attributes:
        grid: cells per side (32 for the quick size).
        n_simulations: simulations in the dataset (split into train/val/test by index).
        steps: time steps simulated. dt: the time step.
        first_snapshot, snapshot_every: the steps stored: ``first_snapshot``,
            ``first_snapshot + snapshot_every``, ... up to ``steps`` (see
            :attr:`snapshot_steps`).
        buoyancy: upward acceleration per unit density (cells / step²).
        obstacle_centre, obstacle_radius: the fixed round obstacle.
        inflow_x, inflow_y, inflow_radius, inflow_rate: ``(low, high)`` ranges of the
            per-simulation inflow disk's centre, radius and rate (density per step at its
            centre), each drawn uniformly.
        quarter_turns: the whole scene (obstacle, inflow ranges and gravity) turned by this many
            quarter turns anticlockwise about the box centre: a transfer test.
        seed: of the inflow draws.
    """

    grid: int = 32
    n_simulations: int = 128
    steps: int = 100
    dt: float = 1.0
    first_snapshot: int = 30
    snapshot_every: int = 5
    buoyancy: float = 0.05
    obstacle_centre: tuple[float, float] = (0.5, 0.55)
    obstacle_radius: float = 0.12
    inflow_x: tuple[float, float] = (0.25, 0.75)
    inflow_y: tuple[float, float] = (0.08, 0.22)
    inflow_radius: tuple[float, float] = (0.05, 0.1)
    inflow_rate: tuple[float, float] = (0.1, 0.3)
    quarter_turns: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("grid", "n_simulations", "steps", "first_snapshot", "snapshot_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        if self.grid < 8:
            raise ValueError(f"grid: expected at least 8 cells per side, got {self.grid}")
        if self.first_snapshot > self.steps:
            raise ValueError(f"first_snapshot: expected <= steps = {self.steps}, got "
                             f"{self.first_snapshot}")
        for name in ("dt", "buoyancy", "obstacle_radius"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive number, got {v!r}")
        object.__setattr__(self, "obstacle_centre",
                           _pair("obstacle_centre", self.obstacle_centre, 0.0, 1.0))
        for name in ("inflow_x", "inflow_y"):
            object.__setattr__(self, name, _pair(name, getattr(self, name), 0.0, 1.0))
        for name in ("inflow_radius", "inflow_rate"):
            v = _pair(name, getattr(self, name), 0.0)
            if v[0] <= 0:
                raise ValueError(f"{name}: expected positive values, got {v}")
            object.__setattr__(self, name, v)
        if self.quarter_turns not in (0, 1, 2, 3):
            raise ValueError(f"quarter_turns: expected 0, 1, 2 or 3, got {self.quarter_turns!r}")
        for name in ("grid", "n_simulations", "steps", "first_snapshot", "snapshot_every",
                     "seed", "quarter_turns"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("dt", "buoyancy", "obstacle_radius"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def snapshot_steps(self) -> tuple[int, ...]:
        """The steps whose fields are stored."""
        return tuple(range(self.first_snapshot, self.steps + 1, self.snapshot_every))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SmokeSettings:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def transfer(self, kind: str, *, obstacle_centre: tuple[float, float] = (0.3, 0.62)
                 ) -> SmokeSettings:
        """The settings of a transfer test: ``"moved"`` (the obstacle at ``obstacle_centre``)
        or ``"rotated"`` (the whole scene a quarter turn further anticlockwise). The seed is
        kept, so simulation ``k`` has the same inflow draw as here."""
        if kind == "moved":
            return replace(self, obstacle_centre=tuple(obstacle_centre))
        if kind == "rotated":
            return replace(self, quarter_turns=(self.quarter_turns + 1) % 4)
        raise ValueError(f"kind: expected 'moved' or 'rotated', got {kind!r}")


def turn_point(p: np.ndarray, quarter_turns: int) -> np.ndarray:
    """Points ``[..., 2]`` in the unit box turned ``quarter_turns`` times anticlockwise about
    its centre."""
    q = np.asarray(p, dtype=np.float64) - 0.5
    for _ in range(quarter_turns % 4):
        q = np.stack([-q[..., 1], q[..., 0]], -1)
    return q + 0.5


def turn_grid(a: np.ndarray, quarter_turns: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """A cell field ``[..., x, y, ...]`` (``axes`` = the x and y axes) turned like
    :func:`turn_point`: the value at cell ``c`` moves to the turned cell."""
    return np.rot90(a, quarter_turns % 4, axes=axes)


def turn_vectors(v: np.ndarray, quarter_turns: int) -> np.ndarray:
    """Vector components ``[..., 2]`` turned like :func:`turn_point` (values only: combine
    with :func:`turn_grid` to turn a vector field). Exact, in the dtype of ``v``: a quarter turn
    only swaps and negates components."""
    w = np.asarray(v)
    for _ in range(quarter_turns % 4):
        w = np.stack([-w[..., 1], w[..., 0]], -1)
    return w


@dataclass
class Scene:
    """The geometry of one settings' box, in cells: ``solid [n, n]`` (bool), the open faces
    ``open_u [n + 1, n]`` and ``open_v [n, n + 1]`` (bool), ``up [2]`` (gravity's opposite) and
    the cell centres ``cx, cy [n, n]``."""

    n: int
    solid: np.ndarray
    open_u: np.ndarray
    open_v: np.ndarray
    up: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    _lu: Any = field(default=None, repr=False)
    _index: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: SmokeSettings) -> Scene:
        n = settings.grid
        c = (np.arange(n) + 0.5) / n
        cx, cy = np.meshgrid(c, c, indexing="ij")
        ox, oy = turn_point(np.array(settings.obstacle_centre), settings.quarter_turns)
        solid = np.hypot(cx - ox, cy - oy) < settings.obstacle_radius
        if solid.all() or not solid.any():
            raise ValueError(f"obstacle_radius: expected an obstacle covering some but not all "
                             f"cells of the {n} x {n} grid, got radius "
                             f"{settings.obstacle_radius} at {settings.obstacle_centre}")
        fluid = ~solid
        open_u = np.zeros((n + 1, n), bool)
        open_u[1:-1] = fluid[:-1] & fluid[1:]
        open_v = np.zeros((n, n + 1), bool)
        open_v[:, 1:-1] = fluid[:, :-1] & fluid[:, 1:]
        up = turn_vectors(np.array([0.0, 1.0]), settings.quarter_turns).round()
        return cls(n, solid, open_u, open_v, up, cx * n, cy * n)

    def inflow_masks(self, centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """Soft inflow disks ``[sim, n, n]`` (1 inside, a one-cell ramp, 0 outside and in solid
        cells) for ``centre [sim, 2]`` and ``radius [sim]`` in cells."""
        d = np.hypot(self.cx - centre[:, 0, None, None], self.cy - centre[:, 1, None, None])
        return np.clip(radius[:, None, None] + 0.5 - d, 0.0, 1.0) * ~self.solid

    def _factorise(self) -> None:
        try:
            from scipy.sparse import coo_matrix
            from scipy.sparse.linalg import splu
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the smoke simulator needs scipy: pip install 'approxeq[smoke]'"
                              ) from err

        n, fluid = self.n, ~self.solid
        index = -np.ones((n, n), np.int64)
        index[fluid] = np.arange(fluid.sum())
        rows, cols = [], []
        for open_f, shift in ((self.open_u[1:-1], (1, 0)), (self.open_v[:, 1:-1], (0, 1))):
            a, b = np.nonzero(open_f)
            i, j = index[a, b], index[a + shift[0], b + shift[1]]
            rows += [i, j]
            cols += [j, i]
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        m = int(fluid.sum())
        lap = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(m, m)).tocsr()
        lap = lap - coo_matrix((np.asarray(lap.sum(1)).ravel(), (np.arange(m), np.arange(m))),
                               shape=(m, m)).tocsr()
        # The Laplacian's null space is the constant: pinning one cell's pressure removes it,
        # and its equation holds anyway because the divergence sums to zero in a closed box.
        lap = lap.tolil()
        lap[0, :] = 0.0
        lap[0, 0] = 1.0
        self._lu, self._index = splu(lap.tocsc()), index

    def project(self, u: np.ndarray, v: np.ndarray) -> None:
        """Make ``u [sim, n + 1, n]``, ``v [sim, n, n + 1]`` divergence-free on the fluid cells,
        in place (closed faces must already be zero)."""
        if self._lu is None:
            self._factorise()
        div = (u[:, 1:] - u[:, :-1]) + (v[:, :, 1:] - v[:, :, :-1])
        fluid = ~self.solid
        rhs = div[:, fluid].T.copy()
        rhs[0] = 0.0
        p = np.zeros_like(div)
        p[:, fluid] = self._lu.solve(rhs).T
        u[:, 1:-1] -= (p[:, 1:] - p[:, :-1]) * self.open_u[1:-1]
        v[:, :, 1:-1] -= (p[:, :, 1:] - p[:, :, :-1]) * self.open_v[:, 1:-1]


def _bilinear(f: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """``f [sim, a, b]`` at fractional indices ``px, py [sim, ...]`` (clamped to the array)."""
    a, b = f.shape[1:]
    px, py = np.clip(px, 0, a - 1), np.clip(py, 0, b - 1)
    i0 = np.minimum(np.floor(px).astype(np.int64), a - 2)
    j0 = np.minimum(np.floor(py).astype(np.int64), b - 2)
    wx, wy = px - i0, py - j0
    s = np.arange(f.shape[0]).reshape(-1, *([1] * (px.ndim - 1)))
    return ((1 - wx) * (1 - wy) * f[s, i0, j0] + wx * (1 - wy) * f[s, i0 + 1, j0]
            + (1 - wx) * wy * f[s, i0, j0 + 1] + wx * wy * f[s, i0 + 1, j0 + 1])


def _advect_velocity(u: np.ndarray, v: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    n = u.shape[2]
    # u faces sit at (i, j + 1/2), v faces at (i + 1/2, j), in cells.
    iu, ju = np.meshgrid(np.arange(1, n), np.arange(n), indexing="ij")
    v_at_u = 0.25 * (v[:, :-1, :-1] + v[:, :-1, 1:] + v[:, 1:, :-1] + v[:, 1:, 1:])
    new_u = np.zeros_like(u)
    new_u[:, 1:-1] = _bilinear(u, iu - dt * u[:, 1:-1], ju - dt * v_at_u)
    iv, jv = np.meshgrid(np.arange(n), np.arange(1, n), indexing="ij")
    u_at_v = 0.25 * (u[:, :-1, :-1] + u[:, 1:, :-1] + u[:, :-1, 1:] + u[:, 1:, 1:])
    new_v = np.zeros_like(v)
    new_v[:, :, 1:-1] = _bilinear(v, iv - dt * u_at_v, jv - dt * v[:, :, 1:-1])
    return new_u, new_v


def _minmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a * b > 0, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)


def _face_values(s: np.ndarray, vel: np.ndarray, axis: int) -> np.ndarray:
    """Upwind MUSCL values of ``s [sim, n, n]`` on the interior faces along ``axis`` (1 or 2)."""
    d = np.diff(s, axis=axis)
    zero = np.zeros_like(np.take(d, [0], axis=axis))
    slope = _minmod(np.concatenate([zero, d], axis), np.concatenate([d, zero], axis))
    lo = np.take(s + 0.5 * slope, np.arange(s.shape[axis] - 1), axis=axis)
    hi = np.take(s - 0.5 * slope, np.arange(1, s.shape[axis]), axis=axis)
    return np.where(vel > 0, lo, hi)


def _transport(s: np.ndarray, u: np.ndarray, v: np.ndarray, dt: float) -> np.ndarray:
    """Move ``s`` by the face velocities for ``dt``, in flux form, in place of ``s``."""
    courant = np.maximum(np.abs(u).max((1, 2)), np.abs(v).max((1, 2))) * dt
    n_sub = np.maximum(np.ceil(courant / MAX_COURANT), 1).astype(np.int64)
    h = (dt / n_sub)[:, None, None]
    for k in range(int(n_sub.max())):
        # Simulations that have done their own sub-steps stand still, so none depends on the
        # fastest one in its batch.
        active = (k < n_sub)[:, None, None]
        fu = np.zeros_like(u)
        fv = np.zeros_like(v)
        fu[:, 1:-1] = u[:, 1:-1] * _face_values(s, u[:, 1:-1], 1)
        fv[:, :, 1:-1] = v[:, :, 1:-1] * _face_values(s, v[:, :, 1:-1], 2)
        s = s - active * h * ((fu[:, 1:] - fu[:, :-1]) + (fv[:, :, 1:] - fv[:, :, :-1]))
    return s


@dataclass
class Inflows:
    """Per-simulation inflow draws, in box fractions (turned with the scene): ``centre
    [sim, 2]``, ``radius [sim]``, ``rate [sim]``."""

    centre: np.ndarray
    radius: np.ndarray
    rate: np.ndarray


def draw_inflows(settings: SmokeSettings, indices: np.ndarray) -> Inflows:
    """The inflows of simulations ``indices``: each from its own random stream (seed, index),
    so a simulation's inflow does not depend on how many others there are."""
    rows = []
    for k in np.asarray(indices, dtype=np.int64):
        r = np.random.default_rng([settings.seed, int(k)])
        rows.append([r.uniform(*settings.inflow_x), r.uniform(*settings.inflow_y),
                     r.uniform(*settings.inflow_radius), r.uniform(*settings.inflow_rate)])
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return Inflows(turn_point(a[:, :2], settings.quarter_turns), a[:, 2], a[:, 3])


@dataclass
class SmokeFields:
    """Simulated snapshots: ``density [sim, time, n, n]``, ``velocity [sim, time, n, n, 2]`` (at
    cell centres, in cells per step), the ``inflows`` and the total smoke added by the inflow by
    each snapshot, ``added [sim, time]``."""

    density: np.ndarray
    velocity: np.ndarray
    inflows: Inflows
    added: np.ndarray


def simulate(settings: SmokeSettings, indices: np.ndarray | None = None, *,
             scene: Scene | None = None, on_step=None) -> SmokeFields:
    """Simulate ``indices`` (default all) as one batch and return their snapshots.

    ``on_step(k)`` is called after every step (progress displays).
    """
    if indices is None:
        indices = np.arange(settings.n_simulations)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"indices: expected a non-empty 1-D array, got shape "
                         f"{list(indices.shape)}")
    scene = scene or Scene.build(settings)
    n, b, dt = settings.grid, indices.size, settings.dt
    inflows = draw_inflows(settings, indices)
    source = scene.inflow_masks(inflows.centre * n, inflows.radius * n) * \
        (inflows.rate * dt)[:, None, None]
    s = np.zeros((b, n, n))
    u, v = np.zeros((b, n + 1, n)), np.zeros((b, n, n + 1))
    snaps = set(settings.snapshot_steps)
    dens, vels, added = [], [], []
    for step in range(1, settings.steps + 1):
        s = s + source
        su = 0.5 * (s[:, :-1] + s[:, 1:])
        sv = 0.5 * (s[:, :, :-1] + s[:, :, 1:])
        u[:, 1:-1] += (dt * settings.buoyancy * scene.up[0]) * su * scene.open_u[1:-1]
        v[:, :, 1:-1] += (dt * settings.buoyancy * scene.up[1]) * sv * scene.open_v[:, 1:-1]
        u, v = _advect_velocity(u, v, dt)
        u *= scene.open_u
        v *= scene.open_v
        scene.project(u, v)
        s = _transport(s, u, v, dt)
        if step in snaps:
            dens.append(s)
            vels.append(np.stack([0.5 * (u[:, 1:] + u[:, :-1]),
                                  0.5 * (v[:, :, 1:] + v[:, :, :-1])], -1))
            added.append(step * source.sum((1, 2)))
        if on_step is not None:
            on_step(step)
    return SmokeFields(np.stack(dens, 1), np.stack(vels, 1), inflows, np.stack(added, 1))


__all__ = ["MAX_COURANT", "SCHEME_VERSION", "Inflows", "Scene", "SmokeFields", "SmokeSettings",
           "draw_inflows", "simulate", "turn_grid", "turn_point", "turn_vectors"]
