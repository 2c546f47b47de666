"""Smoke plumes around an obstacle: generated once, cached on disk, served as 2-D tasks.

* :func:`load_smoke` returns the :class:`SmokeData` of a :class:`SmokeSettings`, from the cache
  when a file made with equal settings (and the same simulator scheme) is there, else simulated
  (:mod:`approxeq.data.smoke_sim`) with a progress display and written atomically.
* The cache is netCDF (``xarray.open_dataset`` reads it): variables ``density (sim, time, x,
  y)``, ``velocity (sim, time, x, y, component)``, ``solid (x, y)``, the per-simulation inflow
  ``inflow_x``, ``inflow_y``, ``inflow_radius``, ``inflow_rate (sim)``, and the attributes
  ``settings`` (JSON), ``scheme_version`` and ``approxeq_version``. Its folder is
  ``cache_dir``, else ``$APPROXEQ_CACHE``, else ``$XDG_CACHE_HOME/approxeq``, else
  ``~/.cache/approxeq`` (files go in its ``smoke/`` subfolder).
* :class:`SmokeTaskGenerator` turns snapshots into tasks.

**Units the models see.** Inputs are cell centres mapped to the box ``[-1, 1]²`` (``x`` to the
right, ``y`` up; the ``n × n`` cells have centres ``-1 + (2k + 1) / n``). The density is
z-scored, ``(density - mean) / std`` over the fluid cells of every snapshot of the training
simulations; the velocity (cells per step, at cell centres) is divided by one number, the root
mean square of its components over the same cells, so it stays a vector that turns with the
inputs. :class:`SmokeNormalisation` holds the three numbers; a transfer test must reuse the
training set's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxeq.data.base import TaskGenerator
from approxeq.data.smoke_sim import (
    SCHEME_VERSION,
    Scene,
    SmokeSettings,
    simulate,
    turn_grid,
    turn_point,
    turn_vectors,
)
from approxeq.files import atomic_path
from approxeq.np.batch import Batch
from approxeq.np.prediction import require_xarray

#: the outputs a :class:`SmokeTaskGenerator` can serve, and their channels
OUTPUTS = {"density": ("density",), "velocity": ("vx", "vy"), "both": ("density", "vx", "vy")}


def default_cache_dir() -> Path:
    """``$APPROXEQ_CACHE``, else ``$XDG_CACHE_HOME/approxeq``, else ``~/.cache/approxeq``."""
    if os.environ.get("APPROXEQ_CACHE"):
        return Path(os.environ["APPROXEQ_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "approxeq"


def cache_key(settings: SmokeSettings) -> str:
    """A short hash of the settings and the simulator scheme: the cache file's name."""
    text = json.dumps({"settings": settings.to_dict(), "scheme": SCHEME_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(settings: SmokeSettings, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`load_smoke` keeps the data of ``settings``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "smoke" / f"smoke-{settings.grid}x{settings.grid}-{cache_key(settings)}.nc"


class _Progress:
    """A tqdm bar on a terminal when tqdm is installed, else a plain line every tenth."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled, self.done = total, desc, enabled, 0
        self._start, self._next, self._bar = time.monotonic(), max(total // 10, 1), None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=True)

    def update(self, k: int = 1) -> None:
        if not self.enabled:
            return
        self.done += k
        if self._bar is not None:
            self._bar.update(k)
        elif self.done >= self._next or self.done == self.total:
            self._next = self.done + max(self.total // 10, 1)
            print(f"{self.desc}: {self.done}/{self.total} "
                  f"({time.monotonic() - self._start:.0f}s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass
class SmokeData:
    """Simulated snapshots of one :class:`SmokeSettings`.

    Attributes:
        settings: what made them.
        density: ``[sim, time, n, n]`` float32, indexed ``[.., x, y]`` with ``y`` up.
        velocity: ``[sim, time, n, n, 2]`` float32, cells per step, at cell centres.
        solid: ``[n, n]`` bool, the obstacle's cells.
        inflow: ``[sim, 4]`` float64: each simulation's inflow centre ``(x, y)``, radius and
            rate (box fractions, turned with the scene).
        path: the cache file, if any.
    """

    settings: SmokeSettings
    density: np.ndarray
    velocity: np.ndarray
    solid: np.ndarray
    inflow: np.ndarray
    path: Path | None = None

    @property
    def snapshot_steps(self) -> tuple[int, ...]:
        return self.settings.snapshot_steps

    def split(self, name: str, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> np.ndarray:
        """The simulation indices of split ``name`` (see :func:`split_indices`)."""
        return split_indices(self.settings.n_simulations, fractions)[name]

    def turned(self, quarter_turns: int = 1) -> SmokeData:
        """The data of the scene turned ``quarter_turns`` times anticlockwise about the box
        centre, exactly: the value at cell ``c`` moves to the turned cell, a velocity ``v`` at
        ``x`` becomes ``R v`` at ``R x`` (:func:`turn_grid`, :func:`turn_vectors`), and the
        obstacle and inflow centres turn with them. Simulating the turned scene gives the same
        fields up to rounding (:mod:`approxeq.data.smoke_sim`)."""
        k = int(quarter_turns) % 4
        s = replace(self.settings, quarter_turns=(self.settings.quarter_turns + k) % 4)
        velocity = turn_vectors(turn_grid(self.velocity, k, axes=(-3, -2)), k)
        inflow = self.inflow.copy()
        inflow[:, :2] = turn_point(self.inflow[:, :2], k)
        return SmokeData(s, np.ascontiguousarray(turn_grid(self.density, k)),
                         np.ascontiguousarray(velocity),
                         np.ascontiguousarray(turn_grid(self.solid, k)), inflow)

    def to_dataset(self) -> Any:
        """The data as an ``xarray.Dataset`` (what the cache file holds)."""
        xr = require_xarray()
        n, s = self.settings.grid, self.settings
        centres = (np.arange(n) + 0.5) / n
        attrs = {"settings": json.dumps(s.to_dict(), sort_keys=True),
                 "scheme_version": SCHEME_VERSION, "approxeq_version": _version(),
                 "checksum": self.checksum(),
                 "description": "buoyant smoke in a closed box around a round obstacle"}
        coords = {"sim": np.arange(s.n_simulations), "time": np.array(s.snapshot_steps),
                  "x": centres, "y": centres, "component": ["x", "y"]}
        dims = ("sim", "time", "x", "y")
        data = {"density": (dims, self.density, {"units": "smoke per cell"}),
                "velocity": (dims + ("component",), self.velocity, {"units": "cells per step"}),
                "solid": (("x", "y"), self.solid.astype(np.int8)),
                **{f"inflow_{k}": (("sim",), self.inflow[:, i])
                   for i, k in enumerate(("x", "y", "radius", "rate"))}}
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def checksum(self) -> str:
        """SHA-256 of the arrays, as the cache stores them: a damaged cache file whose bytes
        still decode is told apart from the data it was written from."""
        digest = hashlib.sha256()
        for a, dtype in ((self.density, np.float32), (self.velocity, np.float32),
                         (self.solid, np.uint8), (self.inflow, np.float64)):
            digest.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
        return digest.hexdigest()

    @classmethod
    def from_dataset(cls, ds: Any, path: Path | None = None) -> SmokeData:
        """Read back :meth:`to_dataset`."""
        settings = SmokeSettings.from_dict(json.loads(ds.attrs["settings"]))
        inflow = np.stack([ds[f"inflow_{k}"].values for k in ("x", "y", "radius", "rate")], -1)
        return cls(settings, ds["density"].values.astype(np.float32),
                   ds["velocity"].values.astype(np.float32), ds["solid"].values.astype(bool),
                   inflow.astype(np.float64), path)


def _version() -> str:
    from approxeq import __version__

    return __version__


def split_indices(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Simulations ``0 .. n - 1`` cut in order into ``train``, ``val`` and ``test`` with the
    given ``fractions`` (each split gets at least one when ``n >= 3``)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"fractions: expected three non-negative numbers (train, val, test), "
                         f"got {tuple(fractions)}")
    if n < 3:
        raise ValueError(f"n: expected at least 3 simulations to split, got {n}")
    cut = np.round(np.cumsum(f / f.sum()) * n).astype(int)
    a = min(max(cut[0], 1), n - 2)
    b = min(max(cut[1], a + 1), n - 1)
    return {"train": np.arange(0, a), "val": np.arange(a, b), "test": np.arange(b, n)}


def generate_smoke(settings: SmokeSettings, *, chunk: int = 64,
                   progress: bool = True) -> SmokeData:
    """Simulate every simulation of ``settings`` (``chunk`` at a time) without the cache."""
    if chunk < 1:
        raise ValueError(f"chunk: expected >= 1, got {chunk}")
    scene = Scene.build(settings)
    n_sim = settings.n_simulations
    bar = _Progress(n_sim * settings.steps, "smoke simulation steps", progress)
    dens, vels, inflows = [], [], []
    try:
        for lo in range(0, n_sim, chunk):
            idx = np.arange(lo, min(lo + chunk, n_sim))
            f = simulate(settings, idx, scene=scene,
                         on_step=lambda _, k=idx.size: bar.update(k))
            dens.append(f.density.astype(np.float32))
            vels.append(f.velocity.astype(np.float32))
            inflows.append(np.column_stack([f.inflows.centre, f.inflows.radius, f.inflows.rate]))
    finally:
        bar.close()
    return SmokeData(settings, np.concatenate(dens), np.concatenate(vels), scene.solid.copy(),
                     np.concatenate(inflows))


def _write_atomic(ds: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding={v: {"zlib": True, "complevel": 4}
                                    for v in ("density", "velocity")})


def _read_cache(path: Path, settings: SmokeSettings) -> SmokeData | None:
    """The cached data at ``path`` if it holds ``settings`` intact, else ``None``: a file
    that is unreadable, truncated, damaged (its arrays no longer match the checksum written
    with them) or foreign is simulated again."""
    if not path.is_file():
        return None
    xr = require_xarray()
    try:
        with xr.open_dataset(path) as ds:
            if int(ds.attrs.get("scheme_version", -1)) != SCHEME_VERSION:
                return None
            if SmokeSettings.from_dict(json.loads(ds.attrs["settings"])) != settings:
                return None
            data = SmokeData.from_dataset(ds.load(), path)
            return data if ds.attrs.get("checksum") == data.checksum() else None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError):
        return None  # netCDF4 raises RuntimeError ("NetCDF: HDF error") for damaged data


def load_smoke(settings: SmokeSettings | None = None, *,
               cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
               progress: bool = True, chunk: int = 64) -> SmokeData:
    """The data of ``settings`` (default :class:`SmokeSettings`): read from the cache when a
    file with equal settings is there, else simulated and cached (see the module docstring).
    ``use_cache=False`` neither reads nor writes the cache."""
    settings = settings or SmokeSettings()
    if not isinstance(settings, SmokeSettings):
        raise TypeError(f"settings: expected SmokeSettings, got {type(settings).__name__}")
    if not use_cache:
        return generate_smoke(settings, chunk=chunk, progress=progress)
    path = cache_path(settings, cache_dir)
    data = _read_cache(path, settings)
    if data is not None:
        return data
    data = generate_smoke(settings, chunk=chunk, progress=progress)
    _write_atomic(data.to_dataset(), path)
    data.path = path
    return data


@dataclass(frozen=True)
class SmokeNormalisation:
    """Output normalisation (see the module docstring): ``density_mean``, ``density_std`` and
    ``velocity_scale``, fitted on the training simulations."""

    density_mean: float
    density_std: float
    velocity_scale: float

    @classmethod
    def fit(cls, data: SmokeData, indices: np.ndarray) -> SmokeNormalisation:
        fluid = ~data.solid
        d = data.density[indices][..., fluid].astype(np.float64)
        v = data.velocity[indices][..., fluid, :].astype(np.float64)
        std, vs = float(d.std()), float(np.sqrt(np.mean(v ** 2)))
        if not (std > 0 and vs > 0):
            raise ValueError(f"data: the training simulations {list(indices[:5])}... have a "
                             f"constant density or no motion (std {std}, velocity rms {vs})")
        return cls(float(d.mean()), std, vs)


class SmokeTaskGenerator(TaskGenerator):
    """Tasks from smoke snapshots: each task is one snapshot of one simulation of the split.

    One context fraction, uniform on ``context_fraction``, is drawn per batch; that share of
    the cells (at least one) is the context and up to ``max_targets`` of the others (default
    all) the targets. Obstacle cells are left out unless ``include_obstacle``.

    Args:
        data: a :class:`SmokeData`. split: ``"train"``, ``"val"``, ``"test"`` (cut by
            ``fractions``, see :func:`split_indices`) or ``"all"``.
        indices: simulation indices to use instead of ``split``.
        outputs: ``"density"`` (``dim_y = 1``), ``"velocity"`` (2) or ``"both"`` (3: density,
            then velocity).
        normalisation: default fitted on the ``train`` split of ``data``; pass the training
            data's for a transfer test.
        dtype: of the batch's tensors (default: torch's default dtype).
    """

    dim_x = 2

    def __init__(self, data: SmokeData, split: str = "train", *,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 indices: Sequence[int] | None = None, outputs: str = "density",
                 context_fraction: Sequence[float] = (0.05, 0.5), max_targets: int | None = None,
                 include_obstacle: bool = False,
                 normalisation: SmokeNormalisation | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if outputs not in OUTPUTS:
            raise ValueError(f"outputs: expected one of {sorted(OUTPUTS)}, got {outputs!r}")
        self.data, self.outputs = data, outputs
        self.dim_y = len(OUTPUTS[outputs])
        n_sim = data.settings.n_simulations
        if indices is not None:
            idx = np.asarray(indices, dtype=np.int64)
            if idx.ndim != 1 or idx.size == 0 or (idx < 0).any() or (idx >= n_sim).any():
                raise ValueError(f"indices: expected a non-empty list of simulation indices in "
                                 f"[0, {n_sim}), got {list(np.atleast_1d(idx))[:8]}")
        elif split == "all":
            idx = np.arange(n_sim)
        elif split in ("train", "val", "test"):
            idx = data.split(split, fractions)
        else:
            raise ValueError(f"split: expected 'train', 'val', 'test' or 'all', got {split!r}")
        self.indices = idx
        lo, hi = (float(v) for v in context_fraction)
        if not 0 < lo <= hi < 1:
            raise ValueError(f"context_fraction: expected 0 < low <= high < 1, got "
                             f"{tuple(context_fraction)}")
        self.context_fraction = (lo, hi)
        if max_targets is not None and max_targets < 1:
            raise ValueError(f"max_targets: expected >= 1 or None, got {max_targets}")
        self.max_targets = max_targets
        self.include_obstacle = bool(include_obstacle)
        self.normalisation = normalisation or SmokeNormalisation.fit(data, data.split("train",
                                                                                      fractions))
        self.dtype = dtype or torch.get_default_dtype()
        n = data.settings.grid
        self.cells = np.flatnonzero(np.ones((n, n), bool) if self.include_obstacle
                                    else ~data.solid)
        self._x = self.grid_inputs().reshape(n * n, 2)[self.cells]
        # Only this split's normalised outputs at the served cells: [sim, time, cell, dim_y].
        self._y = self._normalised(idx).reshape(idx.size, len(data.snapshot_steps), n * n,
                                                self.dim_y)[:, :, self.cells]

    @property
    def grid(self) -> int:
        return self.data.settings.grid

    @property
    def domain(self) -> list[tuple[float, float]]:
        """The box in normalised inputs, ``[(-1, 1), (-1, 1)]``: every cell lies inside it
        (e.g. a fixed input's ``domain``)."""
        return [(-1.0, 1.0), (-1.0, 1.0)]

    def grid_inputs(self) -> Tensor:
        """Normalised cell centres ``[n, n, 2]`` (indexed ``[x, y]``)."""
        n = self.grid
        c = torch.arange(n, dtype=torch.float64).add(0.5).mul(2.0 / n).sub(1.0)
        return torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).to(self.dtype)

    def _normalised(self, sims: np.ndarray) -> Tensor:
        norm = self.normalisation
        parts = []
        if self.outputs in ("density", "both"):
            d = (self.data.density[sims].astype(np.float64) - norm.density_mean)
            parts.append(d[..., None] / norm.density_std)
        if self.outputs in ("velocity", "both"):
            parts.append(self.data.velocity[sims].astype(np.float64) / norm.velocity_scale)
        return torch.from_numpy(np.concatenate(parts, -1)).to(self.dtype)

    def field(self, sim: int, snapshot: int) -> tuple[Tensor, Tensor, Tensor]:
        """Every cell of one snapshot (for maps): inputs ``[n, n, 2]``, normalised outputs
        ``[n, n, dim_y]`` and the obstacle mask ``[n, n]`` (bool), indexed ``[x, y]``."""
        n_sim, n_t = self.data.settings.n_simulations, len(self.data.snapshot_steps)
        if not (0 <= sim < n_sim and 0 <= snapshot < n_t):
            raise ValueError(f"sim, snapshot: expected 0 <= sim < {n_sim} and 0 <= snapshot < "
                             f"{n_t}, got {sim}, {snapshot}")
        y = self._normalised(np.array([sim]))[0, snapshot]
        return self.grid_inputs(), y, torch.from_numpy(self.data.solid.copy())

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` tasks.

        Returns:
            A :class:`~approxeq.np.Batch` with ``xc [b, nc, 2]``, ``yc [b, nc, dim_y]``,
            ``xt [b, nt, 2]``, ``yt [b, nt, dim_y]`` (normalised) and ``aux`` holding, per task,
            ``sim`` (the simulation's index in the data), ``snapshot`` (index into
            ``data.snapshot_steps``) and ``step`` (the time step), long ``[b]`` each.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        g = generator
        k = torch.randint(self.indices.size, (batch_size,), generator=g)
        t = torch.randint(len(self.data.snapshot_steps), (batch_size,), generator=g)
        lo, hi = self.context_fraction
        frac = lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))
        m = self.cells.size
        nc = min(m - 1, max(1, round(frac * m)))
        nt = m - nc if self.max_targets is None else min(self.max_targets, m - nc)
        order = torch.rand(batch_size, m, generator=g, dtype=torch.float64).argsort(-1)
        order = order[:, :nc + nt]
        x = self._x[order]
        y = self._y[k[:, None], t[:, None], order]
        steps = torch.tensor(self.data.snapshot_steps)[t]
        aux = {"sim": torch.from_numpy(self.indices)[k], "snapshot": t, "step": steps}
        return Batch(xc=x[:, :nc], yc=y[:, :nc], xt=x[:, nc:], yt=y[:, nc:], meta=aux)


__all__ = ["OUTPUTS", "SmokeData", "SmokeNormalisation", "SmokeSettings", "SmokeTaskGenerator",
           "cache_key", "cache_path", "default_cache_dir", "generate_smoke", "load_smoke",
           "split_indices", "turn_grid", "turn_point", "turn_vectors"]
