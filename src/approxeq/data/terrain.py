"""A temperature-like field on real topography, its tasks and its exact oracle.

The field lives on the 0.25° grid of a shipped region (Europe, the contiguous US; see
``datasets/weather/ATTRIBUTION.md``):

    y(x) = g(x) + β h⁺(x) + γ land(x) + ε,   x = (lat, lon)

* ``g`` is a stationary GP (Matérn-5/2 in the ``(lat, lon)`` plane, in degrees: planar, not
  great-circle, distances, so ``g`` is exactly translation invariant in the models' inputs);
* ``h⁺`` is the cell's elevation above sea level in km (sea cells have ``h⁺ = 0``), ``β`` a lapse
  rate in K/km, ``land`` the land mask and ``γ`` a land–sea offset in K;
* ``ε`` is Gaussian observation noise.

``β h⁺ + γ land`` is the *deterministic part*: a function of location only, which a fixed input
(or an elevation input) can learn; ``g`` is what each task's context has to reveal.

**Units the models see.** Inputs are ``(lat, lon)`` mapped by a
:class:`~approxeq.data.Normaliser` with **one** scale for both axes (by default centred on the
training region, Europe, at 10 degrees per unit, so Europe spans ``[-2, 2]`` in longitude and
the contiguous US lies far outside it). Outputs are ``y / y_scale`` (kelvin divided by a fixed
number, no shift), the same in every region, and every log-likelihood here is on that scale:
a log-likelihood in K is the reported one minus ``log(y_scale)``; an RMSE in K is the reported
one times ``y_scale``.

**The oracle** (:class:`TerrainOracle`) knows ``β``, ``γ`` and ``h``: its predictive is the GP
posterior of ``g`` given the context residuals ``y - β h⁺ - γ land``, plus the deterministic part
at the targets. The **terrain-blind reference** is the same GP posterior given the raw context
values (zero prior mean): what the context alone can tell. Both are exact, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from approxeq.data.base import TaskGenerator
from approxeq.data.kernels import Matern52
from approxeq.data.normalise import Normaliser
from approxeq.data.oracle import GPOracle, GPPredictive, OracleLoglik, noisy_cholesky
from approxeq.data.topography import REGIONS, RegionBox, Topography, load_topography, terrain_file
from approxeq.np.batch import Batch

_LOG_2PI = math.log(2.0 * math.pi)
#: the auxiliary channels a generator can return, in this order: elevation above sea level
#: (km) and the land mask (0/1)
AUX_CHANNELS = ("elevation", "land")


@dataclass(frozen=True)
class TerrainField:
    """Parameters of the field ``y = g + β h⁺ + γ land + ε`` (see the module docstring).

    Attributes:
        lengthscale: of the Matérn-5/2 GP ``g``, in degrees.
        amplitude: standard deviation of ``g``, in K.
        lapse_rate: ``β``, in K per km of elevation above sea level.
        land_offset: ``γ``, in K, added on land.
        noise_std: standard deviation of ``ε``, in K.
        y_scale: K per normalised output unit (outputs are ``y / y_scale``).
        jitter: added to the covariance diagonal, in normalised units squared.
    """

    lengthscale: float = 3.0
    amplitude: float = 3.0
    lapse_rate: float = -6.5
    land_offset: float = 2.0
    noise_std: float = 0.5
    y_scale: float = 4.0
    jitter: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("lengthscale", "amplitude", "y_scale"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive number, got {v!r}")
        for name in ("noise_std", "jitter"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: expected a number >= 0, got {v!r}")
        if self.noise_std == 0 and self.jitter == 0:
            raise ValueError("noise_std, jitter: at least one must be positive for the "
                             "covariance to be positive definite")
        for name in ("lapse_rate", "land_offset"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}: expected a finite number, got {getattr(self, name)!r}")

    def deterministic(self, height_km: Any, land: Any) -> Any:
        """``β h⁺ + γ land`` in K (arrays or tensors of any matching shape)."""
        return self.lapse_rate * height_km + self.land_offset * land

    def kernel(self, coordinate_scale: float) -> Matern52:
        """The GP of ``g`` on normalised inputs (``coordinate_scale`` degrees per unit) and
        normalised outputs."""
        return Matern52(lengthscale=self.lengthscale / coordinate_scale,
                        variance=(self.amplitude / self.y_scale) ** 2)

    @property
    def noise(self) -> float:
        """Observation-noise standard deviation in normalised units."""
        return self.noise_std / self.y_scale


def terrain_normaliser(field: TerrainField | None = None, region: str | RegionBox = "europe",
                       *, scale: float | None = None,
                       centre: Sequence[float] | None = None) -> Normaliser:
    """The map between degrees/kelvin and what the models see.

    Inputs: ``(lat, lon) -> ((lat, lon) - centre) / scale`` with one ``scale`` (degrees per
    unit) for both axes, by default the centre of ``region`` and a quarter of its wider side
    (10 for Europe). Outputs: ``y / field.y_scale``. Auxiliary channels (:data:`AUX_CHANNELS`):
    elevation above sea level, given in m and scaled to km, and the land mask as is.
    """
    field = field or TerrainField()
    if isinstance(region, str) and region not in REGIONS:
        raise ValueError(f"region: expected one of {sorted(REGIONS)} or a RegionBox, "
                         f"got {region!r}")
    box = REGIONS[region] if isinstance(region, str) else region
    if scale is None:
        scale = max(box.lat[1] - box.lat[0], box.lon[1] - box.lon[0]) / 4.0
    return Normaliser(var="temperature", y_mean=0.0, y_std=field.y_scale,
                      centre=tuple(box.centre if centre is None else centre), scale=float(scale),
                      units="K", aux_vars=list(AUX_CHANNELS), aux_mean=[0.0, 0.0],
                      aux_std=[1000.0, 1.0], aux_units=["m", "1"])


@dataclass(frozen=True)
class DeterministicPart:
    """The deterministic part on a block of the grid, in K, for maps.

    Attributes:
        lat: ``[n_lat]``, lon: ``[n_lon]`` cell centres (degrees).
        lapse: ``β h⁺ [n_lat, n_lon]``. land: ``γ land [n_lat, n_lon]``.
    """

    lat: np.ndarray
    lon: np.ndarray
    lapse: np.ndarray
    land: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """``β h⁺ + γ land [n_lat, n_lon]``."""
        return self.lapse + self.land


def deterministic_part(topography: Topography, field: TerrainField | None = None,
                       lat: tuple[float, float] | None = None,
                       lon: tuple[float, float] | None = None) -> DeterministicPart:
    """``β h⁺`` and ``γ land`` (K) on the cells of ``topography`` inside ``lat`` × ``lon``
    (degrees, inclusive; default: everywhere)."""
    field = field or TerrainField()
    lat = lat or (-math.inf, math.inf)
    lon = lon or (-math.inf, math.inf)
    rows = (topography.lat >= lat[0]) & (topography.lat <= lat[1])
    cols = (topography.lon >= lon[0]) & (topography.lon <= lon[1])
    if not rows.any() or not cols.any():
        raise ValueError(f"lat, lon: the box {lat} x {lon} holds no cell of the "
                         f"{topography.name} grid {topography.box}")
    h = topography.height_km[np.ix_(rows, cols)]
    land = topography.land[np.ix_(rows, cols)].astype(np.float64)
    return DeterministicPart(topography.lat[rows], topography.lon[cols],
                             field.lapse_rate * h, field.land_offset * land)



@dataclass
class TerrainScores:
    """Per-task scores of a predictive, float64 ``[batch]`` each, on normalised outputs.

    Attributes:
        loglik: mean over targets of the per-target marginal log-density.
        loglik_joint: joint log-density of the targets divided by their number.
        rmse: root mean squared error of the predictive mean.
    """

    loglik: Tensor
    loglik_joint: Tensor
    rmse: Tensor


class TerrainOracle:
    """Exact predictive of terrain tasks (see the module docstring), in float64.

    With ``blind=False`` the prior mean of ``y / y_scale`` at a location is the deterministic
    part there (looked up in ``topography`` from the un-normalised input); with ``blind=True`` it
    is zero: the terrain-blind reference. Either way the covariance is that of ``g`` plus noise.
    ``posterior`` has the signature of :meth:`approxeq.data.GPOracle.posterior`, so code that
    scores a batch's ``meta["oracle"]`` works unchanged.
    """

    def __init__(self, topography: Topography, field: TerrainField, normaliser: Normaliser, *,
                 blind: bool = False) -> None:
        self.topography, self.field, self.normaliser, self.blind = (topography, field,
                                                                     normaliser, blind)
        self.kernel = field.kernel(normaliser.scale)
        self._gp = GPOracle(self.kernel, field.noise, jitter=field.jitter)

    def __repr__(self) -> str:
        return (f"TerrainOracle({self.topography.name}, {self.field}, "
                f"blind={self.blind})")

    def mean_at(self, x: Tensor) -> Tensor:
        """Prior mean ``[batch, n, 1]`` (float64, normalised) at inputs ``x [batch, n, 2]``."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != 2:
            raise ValueError(f"x: expected shape [batch, n, 2], got "
                             f"{list(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        if self.blind:
            return torch.zeros(*x.shape[:2], 1, dtype=torch.float64, device=x.device)
        lat, lon = self.normaliser.unnormalise_x(x.detach().to("cpu", torch.float64).numpy())
        i, j = self.topography.index(lat, lon)
        topo = self.topography
        m = self.field.deterministic(topo.height_km[i, j], topo.land[i, j]) / self.field.y_scale
        return torch.from_numpy(m).reshape(*x.shape[:2], 1).to(x.device)

    def _predict(self, xc: Tensor, yc: Tensor, xt: Tensor, mean_c: Tensor | None,
                 mean_t: Tensor | None, chol: Tensor | None) -> tuple[Tensor, Tensor]:
        mean_c = self.mean_at(xc) if mean_c is None else mean_c.to(torch.float64)
        mean_t = self.mean_at(xt) if mean_t is None else mean_t.to(torch.float64)
        known = None if chol is None else (self.kernel, chol)
        _, mu, l_tt = self._gp.components(xc, yc.to(torch.float64) - mean_c, xt, known)
        return mu[0] + mean_t, l_tt[0]

    def posterior(self, xc: Tensor, yc: Tensor, xt: Tensor) -> GPPredictive:
        """Predictive of noisy targets: ``mean [batch, n_target, 1]``,
        ``cov [batch, n_target, n_target]``."""
        mean, l_tt = self._predict(xc, yc, xt, None, None, None)
        return GPPredictive(mean=mean, cov=l_tt @ l_tt.transpose(-1, -2))

    def scores(self, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor, *,
               mean_c: Tensor | None = None, mean_t: Tensor | None = None,
               chol: Tensor | None = None) -> TerrainScores:
        """Scores of ``yt [batch, n_target, 1]`` given the context.

        ``mean_c [batch, n_context, 1]``, ``mean_t [batch, n_target, 1]``: the prior means when
        the caller has them (else looked up); ``chol [batch, n, n]``: when the caller has it,
        :func:`~approxeq.data.oracle.noisy_cholesky` of ``self.kernel`` at ``[xc; xt]`` with
        the field's noise and jitter (reused instead of recomputed).
        """
        mean, l_tt = self._predict(xc, yc, xt, mean_c, mean_t, chol)
        resid = yt.to(torch.float64) - mean
        var = torch.linalg.vector_norm(l_tt, dim=-1).square()[..., None]
        point = -0.5 * (resid.square() / var + var.log() + _LOG_2PI)
        z = torch.linalg.solve_triangular(l_tt, resid, upper=False)
        nt = resid.shape[1]
        joint = (-0.5 * z.square().sum((-2, -1))
                 - torch.diagonal(l_tt, dim1=-2, dim2=-1).log().sum(-1)) / nt - 0.5 * _LOG_2PI
        return TerrainScores(loglik=point.mean((-2, -1)), loglik_joint=joint,
                             rmse=resid.square().mean((-2, -1)).sqrt())

    def loglik(self, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor) -> OracleLoglik:
        """Per-target and joint log-likelihoods (float64 ``[batch]``), as
        :meth:`approxeq.data.GPOracle.loglik`."""
        s = self.scores(xc, yc, xt, yt)
        return OracleLoglik(marginal=s.loglik, joint=s.loglik_joint)


def _with_aux(batch: Batch, aux_c: Tensor, aux_t: Tensor) -> Batch:
    """``batch`` carrying the auxiliary inputs ``aux_c [b, nc, k]``, ``aux_t [b, nt, k]``."""
    return replace(batch, aux_c=aux_c, aux_t=aux_t)


@dataclass
class TerrainPatch:
    """Every cell of one patch, for maps (row-major: latitude outer, longitude inner).

    Attributes:
        corner: ``(i, j)``, the grid index of the patch's south-west cell.
        x: ``[p * p, 2]`` normalised inputs. aux: ``[p * p, dim_aux]`` or ``None``.
        part: the deterministic part on the patch (``[p, p]`` arrays, K).
    """

    corner: tuple[int, int]
    x: Tensor
    aux: Tensor | None
    part: DeterministicPart


class TerrainTaskGenerator(TaskGenerator):
    """Tasks of the terrain field over one region, with its exact oracle.

    Each task is a random ``patch_degrees`` square patch of the region's grid. One fraction,
    uniform on ``context_fraction``, is drawn per batch; that share of the patch's cells
    (at least one) is the context and up to ``max_targets`` of the other cells are the targets.
    ``g`` and the noise are sampled jointly at those cells only, never on the whole patch.

    Args:
        region: ``"europe"``, ``"conus"`` or a :class:`Topography`.
        field: the field's parameters (default :class:`TerrainField`).
        normaliser: the input/output map; default :func:`terrain_normaliser` of the *training*
            region (Europe), which the test regions must share so that out-of-region inputs are
            where the models have never been.
        patch_degrees: side of a patch in degrees (rounded to whole cells).
        context_fraction: ``(low, high)`` share of a patch's cells in the context.
        max_targets: cap on the targets per task.
        aux_vars: auxiliary channels given to the models, a subset of :data:`AUX_CHANNELS` (e.g.
            ``("elevation", "land")`` for ``+elev`` models; default none).
        same_patch: put every task of a batch on one patch (independent draws of ``g``, noise and
            cells): a ConvCNP's grid spans the whole batch, so this keeps it one patch wide
            instead of the whole region.
        oracle: compute the oracle's and the blind reference's scores (cheap: the sampling
            factorisation is reused).
        dtype: of the batch's tensors (default: torch's default dtype).
    """

    dim_x = 2
    dim_y = 1
    has_oracle = True

    def __init__(self, region: str | Topography = "europe", field: TerrainField | None = None,
                 *, normaliser: Normaliser | None = None, patch_degrees: float = 8.0,
                 context_fraction: Sequence[float] = (0.01, 0.30), max_targets: int = 256,
                 aux_vars: Sequence[str] = (), same_patch: bool = False, oracle: bool = True,
                 dtype: torch.dtype | None = None) -> None:
        self.topography = region if isinstance(region, Topography) else load_topography(region)
        self.field = field or TerrainField()
        self.normaliser = normaliser or terrain_normaliser(self.field)
        norm = self.normaliser
        if (norm.y_mean, norm.y_std) != (0.0, self.field.y_scale) or \
                list(norm.aux_vars) != list(AUX_CHANNELS):
            raise ValueError(f"normaliser: expected one made by terrain_normaliser (y_mean 0, "
                             f"y_std = field.y_scale = {self.field.y_scale}, aux_vars "
                             f"{list(AUX_CHANNELS)}), got y_mean {norm.y_mean}, y_std "
                             f"{norm.y_std}, aux_vars {norm.aux_vars}")
        topo = self.topography
        self.patch_cells = round(patch_degrees / topo.resolution)
        if not 2 <= self.patch_cells <= min(topo.lat.size, topo.lon.size):
            raise ValueError(f"patch_degrees: expected a side of 2 to "
                             f"{min(topo.lat.size, topo.lon.size)} cells of "
                             f"{topo.resolution}°, got {patch_degrees}")
        lo, hi = (float(v) for v in context_fraction)
        if not 0 < lo <= hi < 1:
            raise ValueError(f"context_fraction: expected 0 < low <= high < 1, got "
                             f"{tuple(context_fraction)}")
        self.context_fraction = (lo, hi)
        if max_targets < 1:
            raise ValueError(f"max_targets: expected >= 1, got {max_targets}")
        self.max_targets = int(max_targets)
        bad = [a for a in aux_vars if a not in AUX_CHANNELS]
        if bad or len(set(aux_vars)) != len(tuple(aux_vars)):
            raise ValueError(f"aux_vars: expected distinct names from {AUX_CHANNELS}, got "
                             f"{tuple(aux_vars)}")
        self.aux_vars = tuple(a for a in AUX_CHANNELS if a in aux_vars)
        self.same_patch, self.oracle = bool(same_patch), oracle
        self.dtype = dtype or torch.get_default_dtype()
        self.exact_oracle = TerrainOracle(topo, self.field, self.normaliser)
        self.blind_oracle = TerrainOracle(topo, self.field, self.normaliser, blind=True)
        # Per-cell values the tasks read, computed once.
        self._mean = self.field.deterministic(topo.height_km, topo.land) / self.field.y_scale
        raw = np.stack([np.maximum(topo.elevation, 0.0), topo.land.astype(np.float64)], -1)
        self._aux = self.normaliser.normalise_aux(raw.reshape(-1, 2)).reshape(raw.shape)[
            ..., [AUX_CHANNELS.index(a) for a in self.aux_vars]]

    @property
    def dim_aux(self) -> int:
        return len(self.aux_vars)

    @property
    def domain(self) -> list[tuple[float, float]]:
        """The region's cells in normalised inputs, ``[(lat_lo, lat_hi), (lon_lo, lon_hi)]``:
        the box of the cell centres widened by half a cell, so that every cell, the edge cells
        included, lies inside it (e.g. a fixed input's ``domain``, zero outside the open box)."""
        half = 0.5 * self.topography.resolution
        box = self.topography.box
        return RegionBox((box.lat[0] - half, box.lat[1] + half),
                         (box.lon[0] - half, box.lon[1] + half)).normalised(self.normaliser)

    def patch_corner(self, lat: float, lon: float) -> tuple[int, int]:
        """The corner ``(i, j)`` of the patch centred nearest to ``(lat, lon)`` (degrees),
        moved inside the region if need be."""
        i, j = self.topography.index(lat, lon)
        p = self.patch_cells
        return (int(np.clip(i - p // 2, 0, self.topography.lat.size - p)),
                int(np.clip(j - p // 2, 0, self.topography.lon.size - p)))

    def _inputs(self, ii: np.ndarray, jj: np.ndarray) -> Tensor:
        lat, lon = self.topography.lat[ii], self.topography.lon[jj]
        x = self.normaliser.normalise_x(lat, lon).reshape(*ii.shape, 2)
        return torch.from_numpy(x).to(self.dtype)

    def patch(self, corner: tuple[int, int]) -> TerrainPatch:
        """Every cell of the patch at ``corner`` (see :class:`TerrainPatch`)."""
        i, j = self._check_corners([corner])[0]
        p = self.patch_cells
        ii, jj = np.meshgrid(np.arange(i, i + p), np.arange(j, j + p), indexing="ij")
        topo = self.topography
        part = deterministic_part(topo, self.field, (topo.lat[i], topo.lat[i + p - 1]),
                                  (topo.lon[j], topo.lon[j + p - 1]))
        aux = torch.from_numpy(self._aux[ii, jj].reshape(p * p, -1)).to(self.dtype) \
            if self.aux_vars else None
        return TerrainPatch((i, j), self._inputs(ii, jj).reshape(p * p, 2), aux, part)

    def _check_corners(self, corners: Sequence[Sequence[int]]) -> np.ndarray:
        c = np.asarray(corners, dtype=np.int64)
        p = self.patch_cells
        hi = np.array([self.topography.lat.size - p, self.topography.lon.size - p])
        if c.ndim != 2 or c.shape[1] != 2 or (c < 0).any() or (c > hi).any():
            raise ValueError(f"corners: expected (i, j) pairs with 0 <= i <= {hi[0]} and "
                             f"0 <= j <= {hi[1]}, got {np.asarray(corners).tolist()}")
        return c

    def sample(self, batch_size: int, generator: torch.Generator, *,
               corners: Sequence[Sequence[int]] | None = None) -> Batch:
        """``batch_size`` tasks (patches at random, or at ``corners``: ``batch_size`` pairs).

        Returns:
            A :class:`~approxeq.np.Batch` with ``xc [b, nc, 2]``, ``yc [b, nc, 1]``,
            ``xt [b, nt, 2]``, ``yt [b, nt, 1]`` (normalised) and ``aux`` holding ``corner
            [b, 2]`` (long: each patch's south-west cell), ``oracle`` and ``blind_oracle``
            (:class:`TerrainOracle`), and with ``oracle=True`` float64 ``[b]`` scores on
            normalised outputs: ``gt_loglik``, ``gt_loglik_joint``, ``gt_rmse`` (exact oracle),
            ``blind_loglik``, ``blind_loglik_joint``, ``blind_rmse`` (terrain-blind); with
            ``aux_vars``, ``aux_c [b, nc, dim_aux]`` and ``aux_t [b, nt, dim_aux]``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        g, p, topo = generator, self.patch_cells, self.topography
        if corners is None:
            n = 1 if self.same_patch else batch_size
            ci = torch.randint(topo.lat.size - p + 1, (n,), generator=g).numpy()
            cj = torch.randint(topo.lon.size - p + 1, (n,), generator=g).numpy()
            ci, cj = np.broadcast_to(ci, (batch_size,)), np.broadcast_to(cj, (batch_size,))
        else:
            c = self._check_corners(corners)
            if c.shape[0] != batch_size:
                raise ValueError(f"corners: expected {batch_size} pairs, got {c.shape[0]}")
            ci, cj = c[:, 0], c[:, 1]
        lo, hi = self.context_fraction
        frac = lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))
        n_cells = p * p
        nc = min(n_cells - 1, max(1, round(frac * n_cells)))
        nt = min(self.max_targets, n_cells - nc)
        cells = torch.rand(batch_size, n_cells, generator=g, dtype=torch.float64).argsort(-1)
        cells = cells[:, :nc + nt].numpy()
        ii, jj = ci[:, None] + cells // p, cj[:, None] + cells % p
        # The oracle scores exactly what the models see: inputs and outputs in the batch dtype.
        x = self._inputs(ii, jj).to(torch.float64)
        kernel = self.exact_oracle.kernel
        chol = noisy_cholesky(kernel, self.field.noise, x, self.field.jitter)
        eps = torch.randn(batch_size, nc + nt, 1, generator=g, dtype=torch.float64)
        mean = torch.from_numpy(self._mean[ii, jj])[..., None]
        y = (mean + chol @ eps).to(self.dtype)
        xd = x.to(self.dtype)
        aux: dict[str, Any] = {"corner": torch.from_numpy(np.stack([ci, cj], -1)),
                               "oracle": self.exact_oracle, "blind_oracle": self.blind_oracle}
        if self.oracle:
            y64 = y.to(torch.float64)
            args = (x[:, :nc], y64[:, :nc], x[:, nc:], y64[:, nc:])
            for key, orc in (("gt", self.exact_oracle), ("blind", self.blind_oracle)):
                s = orc.scores(*args, mean_c=None if orc.blind else mean[:, :nc],
                               mean_t=None if orc.blind else mean[:, nc:], chol=chol)
                aux.update({f"{key}_loglik": s.loglik, f"{key}_loglik_joint": s.loglik_joint,
                            f"{key}_rmse": s.rmse})
        batch = Batch(xc=xd[:, :nc], yc=y[:, :nc], xt=xd[:, nc:], yt=y[:, nc:], meta=aux)
        if self.aux_vars:
            a = torch.from_numpy(self._aux[ii, jj]).to(self.dtype)
            batch = _with_aux(batch, a[:, :nc], a[:, nc:])
        return batch


__all__ = ["AUX_CHANNELS", "REGIONS", "DeterministicPart", "RegionBox", "TerrainField",
           "TerrainOracle", "TerrainPatch", "TerrainScores", "TerrainTaskGenerator",
           "Topography", "deterministic_part", "load_topography", "terrain_file",
           "terrain_normaliser"]
