"""GP vector fields in the plane with exact oracles: rotation-equivariant matrix kernels, a
task generator, and an approximately equivariant variant with a fixed flow.

**Matrix kernels** (``K(x, x') [2, 2]``, stationary in ``r = x − x'``, with ``c(r) = σ²
exp(−‖r‖²/2ℓ²)``, so that ``K(x, x) = σ² I``: each component has variance ``σ²``):

* :class:`RBFIdentityKernel` ``σ² exp(−‖r‖²/2ℓ²) I``: two independent components;
* :class:`CurlFreeKernel` ``c(r) (I − r rᵀ/ℓ²)``: the gradient ``∇ψ`` of a GP potential with the
  RBF kernel ``σ² ℓ² exp(−‖r‖²/2ℓ²)`` (no curl);
* :class:`DivergenceFreeKernel` ``c(r) ((1 − ‖r‖²/ℓ²) I + r rᵀ/ℓ²)``: the rotated gradient
  ``J∇ψ`` of the same potential (no divergence).

Each satisfies ``K(Rx, Rx') = R K(x, x') Rᵀ`` for every rotation and reflection ``R`` (and is
unchanged by translations), so the GP, and its posterior given noisy observations
``y = f(x) + ε``, ``ε ~ N(0, s² I)``, are E(2)-equivariant with vectors turning with the scene.

**Approximate variant**: a fixed mean flow ``m(x)`` pinned to absolute locations, e.g.
:class:`Vortex` (a swirl around a centre that decays over a radius), is added to every draw:
``y = m(x) + f(x) + ε``. Inside the flow's region the symmetry is broken; far from it the
tasks are those of the equivariant GP. The oracle is exact in both cases: the GP posterior with
the matrix kernel, with the known mean flow added (:class:`VectorGPOracle`).

Shapes: inputs ``x [batch, n, 2]``, outputs ``y [batch, n, 2]``; a Gram matrix of ``n`` and
``m`` points is ``[batch, 2n, 2m]`` with index ``2 i + a`` for component ``a`` of point ``i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from approxeq.data.gp import Count, Range, SyntheticGenerator
from approxeq.data.oracle import OracleLoglik

_LOG_2PI = math.log(2 * math.pi)


class MatrixKernel:
    """A stationary matrix-valued kernel on the plane: ``K(x, x') [2, 2]`` from ``r = x − x'``.

    Args:
        lengthscale: ``ℓ > 0``. variance: ``σ² > 0``.

    ``kernel(x [b, n, 2], x2 [b, m, 2])`` returns ``[b, n, m, 2, 2]``;
    :meth:`gram` the ``[b, 2n, 2m]`` matrix.
    """

    name = "matrix"

    def __init__(self, lengthscale: float = 0.5, variance: float = 1.0) -> None:
        for arg, value in (("lengthscale", lengthscale), ("variance", variance)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{arg}: expected a positive number, got {value!r}")
        self.lengthscale, self.variance = float(lengthscale), float(variance)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lengthscale={self.lengthscale:g}, " \
               f"variance={self.variance:g})"

    def matrix(self, r: Tensor) -> Tensor:
        """``K`` at differences ``r [..., 2]``: ``[..., 2, 2]``."""
        raise NotImplementedError

    def __call__(self, x: Tensor, x2: Tensor) -> Tensor:
        for arg, t in (("x", x), ("x2", x2)):
            if t.dim() != 3 or t.shape[-1] != 2:
                raise ValueError(f"{arg}: expected [batch, n, 2], got {tuple(t.shape)}")
        return self.matrix(x[:, :, None, :] - x2[:, None, :, :])

    def gram(self, x: Tensor, x2: Tensor) -> Tensor:
        k = self(x, x2)  # [b, n, m, 2, 2]
        b, n, m = k.shape[:3]
        return k.permute(0, 1, 3, 2, 4).reshape(b, 2 * n, 2 * m)

    def _rbf(self, r: Tensor) -> Tensor:
        return torch.exp(-0.5 * (r ** 2).sum(-1) / self.lengthscale ** 2)[..., None, None]

    def _outer(self, r: Tensor) -> Tensor:
        return r[..., :, None] * r[..., None, :] / self.lengthscale ** 2


class RBFIdentityKernel(MatrixKernel):
    """``σ² exp(−‖r‖²/2ℓ²) I``: two independent RBF components."""

    name = "rbf"

    def matrix(self, r: Tensor) -> Tensor:
        return self.variance * self._rbf(r) * torch.eye(2, dtype=r.dtype, device=r.device)


class CurlFreeKernel(MatrixKernel):
    """``σ² exp(−‖r‖²/2ℓ²) (I − r rᵀ/ℓ²)``: gradients of an RBF potential (curl-free)."""

    name = "curl-free"

    def matrix(self, r: Tensor) -> Tensor:
        eye = torch.eye(2, dtype=r.dtype, device=r.device)
        return self.variance * self._rbf(r) * (eye - self._outer(r))


class DivergenceFreeKernel(MatrixKernel):
    """``σ² exp(−‖r‖²/2ℓ²) ((1 − ‖r‖²/ℓ²) I + r rᵀ/ℓ²)``: rotated gradients of an RBF
    potential (divergence-free)."""

    name = "divergence-free"

    def matrix(self, r: Tensor) -> Tensor:
        eye = torch.eye(2, dtype=r.dtype, device=r.device)
        outer = self._outer(r)
        sq = outer.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
        return self.variance * self._rbf(r) * ((1 - sq) * eye + outer)


#: the matrix kernels by name
MATRIX_KERNELS = {k.name: k for k in (RBFIdentityKernel, CurlFreeKernel, DivergenceFreeKernel)}


def matrix_kernel(name: str, lengthscale: float = 0.5, variance: float = 1.0) -> MatrixKernel:
    """A matrix kernel by name: ``"rbf"``, ``"curl-free"`` or ``"divergence-free"``."""
    if name not in MATRIX_KERNELS:
        raise ValueError(f"kernel: expected one of {', '.join(map(repr, MATRIX_KERNELS))}, "
                         f"got {name!r}")
    return MATRIX_KERNELS[name](lengthscale, variance)


class Vortex:
    """A fixed swirl pinned to absolute locations: ``m(x) = strength · J(x − c) / radius ·
    exp(−‖x − c‖²/2 radius²)``, ``J`` the rotation by +90° (anticlockwise for positive
    ``strength``). Its magnitude peaks at ``strength · e^{−1/2}`` a radius from the centre and
    falls below ``1e-6 · strength`` beyond about 5.5 radii.

    ``vortex(x [b, n, 2])`` returns ``[b, n, 2]``.
    """

    def __init__(self, centre: tuple[float, float] = (0.0, 0.0), radius: float = 1.0,
                 strength: float = 1.0) -> None:
        if not radius > 0:
            raise ValueError(f"radius: expected a positive number, got {radius!r}")
        self.centre, self.radius, self.strength = tuple(centre), float(radius), float(strength)

    def __repr__(self) -> str:
        return f"Vortex(centre={self.centre}, radius={self.radius:g}, " \
               f"strength={self.strength:g})"

    def __call__(self, x: Tensor) -> Tensor:
        d = (x - torch.tensor(self.centre, dtype=x.dtype, device=x.device)) / self.radius
        swirl = torch.stack([-d[..., 1], d[..., 0]], -1)
        return self.strength * swirl * torch.exp(-0.5 * (d ** 2).sum(-1, keepdim=True))


@dataclass
class VectorGPPredictive:
    """The oracle's predictive of noisy vector outputs at the targets.

    Attributes:
        mean: ``[batch, n_target, 2]`` (the mean flow included).
        cov: ``[batch, 2 n_target, 2 n_target]`` joint covariance, noise included.
    """

    mean: Tensor
    cov: Tensor

    @property
    def point_cov(self) -> Tensor:
        """The ``[batch, n_target, 2, 2]`` covariance of each target's vector."""
        b, n = self.mean.shape[:2]
        blocks = self.cov.reshape(b, n, 2, n, 2).diagonal(dim1=1, dim2=3)  # [b, 2, 2, n]
        return blocks.permute(0, 3, 1, 2)

    @property
    def var(self) -> Tensor:
        """Marginal variances ``[batch, n_target, 2]``."""
        return self.point_cov.diagonal(dim1=-2, dim2=-1)


class VectorGPOracle:
    """The exact predictive of :class:`VectorGPGenerator`'s tasks: the GP posterior with the
    matrix kernel (noise variance ``noise_std²`` and ``jitter`` on the diagonal, as sampled),
    plus the known mean ``flow`` (``None``: none)."""

    def __init__(self, kernel: MatrixKernel, noise_std: float, flow: Vortex | None = None,
                 jitter: float = 1e-6) -> None:
        self.kernel, self.noise_std, self.flow, self.jitter = kernel, noise_std, flow, jitter

    def _mean(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x) if self.flow is None else self.flow(x)

    def _noisy_gram(self, x: Tensor) -> Tensor:
        k = self.kernel.gram(x, x)
        eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
        return k + (self.noise_std ** 2 + self.jitter) * eye

    def posterior(self, xc: Tensor, yc: Tensor, xt: Tensor) -> VectorGPPredictive:
        """The predictive at ``xt [b, nt, 2]`` given ``xc [b, nc, 2]``, ``yc [b, nc, 2]``
        (``nc = 0``: the prior), in float64."""
        xc, yc, xt = (t.to(torch.float64) for t in (xc, yc, xt))
        b, nt = xt.shape[:2]
        prior = self._noisy_gram(xt)
        if xc.shape[1] == 0:
            return VectorGPPredictive(self._mean(xt), prior)
        chol = torch.linalg.cholesky(self._noisy_gram(xc))
        k_ct = self.kernel.gram(xc, xt)
        resid = (yc - self._mean(xc)).reshape(b, -1, 1)
        alpha = torch.cholesky_solve(resid, chol)
        mean = self._mean(xt) + (k_ct.transpose(-1, -2) @ alpha).reshape(b, nt, 2)
        v = torch.linalg.solve_triangular(chol, k_ct, upper=False)
        return VectorGPPredictive(mean, prior - v.transpose(-1, -2) @ v)

    def loglik(self, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor) -> OracleLoglik:
        """Oracle log-likelihoods of ``yt [b, nt, 2]``, float64 ``[batch]``: ``marginal`` the
        mean over targets and components of the one-dimensional marginal log-densities (the
        figure a factorised Gaussian prediction is scored by), ``joint`` the joint
        log-density divided by ``2 nt``."""
        pred = self.posterior(xc, yc, xt)
        yt = yt.to(torch.float64)
        resid = yt - pred.mean
        var = pred.var
        marginal = (-0.5 * (resid ** 2 / var + var.log() + _LOG_2PI)).mean((-2, -1))
        chol = torch.linalg.cholesky(pred.cov)
        z = torch.linalg.solve_triangular(chol, resid.reshape(yt.shape[0], -1, 1), upper=False)
        n = resid[0].numel()
        joint = (-0.5 * z.pow(2).sum((-2, -1))
                 - torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1) - 0.5 * n * _LOG_2PI)
        return OracleLoglik(marginal=marginal, joint=joint / n)


class VectorGPGenerator(SyntheticGenerator):
    """Tasks of a GP vector field in the plane, ``y = m(x) + f(x) + ε`` with ``f ~ GP(0, K)``
    for a matrix kernel ``K``, ``ε ~ N(0, noise_std² I)`` and an optional fixed ``flow``
    ``m`` (the approximately equivariant variant), drawn jointly in float64.

    Args:
        kernel: a :class:`MatrixKernel` or its name (``"rbf"``, ``"curl-free"``,
            ``"divergence-free"``, lengthscale 0.5). noise_std: ``>= 0``.
        flow: a fixed mean flow such as :class:`Vortex` (``None``: the equivariant GP).
        oracle: put the oracle log-likelihoods in ``Batch.meta`` (``"gt_loglik"``,
            ``"gt_loglik_joint"``); ``"oracle"`` (a :class:`VectorGPOracle`) is always there.
        num_context, num_target, context_range, target_range, dtype, name: as
            :class:`~approxeq.data.gp.SyntheticGenerator` (``dim_x = dim_y = 2``).
    """

    has_oracle = True

    def __init__(self, kernel: MatrixKernel | str = "divergence-free", noise_std: float = 0.05,
                 *, flow: Vortex | None = None, num_context: Count = (1, 64),
                 num_target: Count = 64, context_range: Range = (-2.0, 2.0),
                 target_range: Range = (-2.0, 2.0), oracle: bool = True,
                 jitter: float = 1e-6, dtype: torch.dtype = torch.float32,
                 name: str = "vector-gp") -> None:
        super().__init__(2, 2, num_context, num_target, context_range, target_range, dtype, name)
        if not (isinstance(noise_std, (int, float)) and noise_std >= 0):
            raise ValueError(f"noise_std: expected a number >= 0, got {noise_std!r}")
        self.kernel = matrix_kernel(kernel) if isinstance(kernel, str) else kernel
        self.noise_std, self.flow, self.oracle, self.jitter = float(noise_std), flow, oracle, jitter

    def _outputs(self, x: Tensor, n_context: int,
                 generator: torch.Generator) -> tuple[Tensor, dict]:
        gp = VectorGPOracle(self.kernel, self.noise_std, self.flow, self.jitter)
        b, n = x.shape[:2]
        chol = torch.linalg.cholesky(gp._noisy_gram(x))
        eps = torch.randn(b, 2 * n, 1, generator=generator, dtype=torch.float64)
        y = self._round(gp._mean(x) + (chol @ eps).reshape(b, n, 2))
        meta: dict = {"oracle": gp, "kernel": self.kernel}
        if self.oracle:
            nc = n_context
            ll = gp.loglik(x[:, :nc], y[:, :nc], x[:, nc:], y[:, nc:])
            meta["gt_loglik"], meta["gt_loglik_joint"] = ll.marginal, ll.joint
        return y, meta
