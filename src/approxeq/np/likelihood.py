"""Likelihoods: maps from decoder outputs to predictive distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal


class HeteroscedasticGaussian(nn.Module):
    """Factorised Gaussian whose mean and standard deviation are read from the decoder.

    The decoder outputs ``[batch, n, 2 * dim_y]``: the first half is the mean, the second a raw
    value mapped to a standard deviation by ``std = sqrt(softplus(raw)) + min_std``
    (``min_std`` is the variance floor, keeping the log-likelihood bounded when a model becomes
    over-confident).
    """

    def __init__(self, min_std: float = 1e-3) -> None:
        super().__init__()
        if min_std < 0:
            raise ValueError(f"min_std must be >= 0, got {min_std}")
        self.min_std = min_std

    def forward(self, out: Tensor) -> Normal:
        if out.shape[-1] % 2:
            raise ValueError("out: expected an even last dimension [.., 2 * dim_y], "
                             f"got {tuple(out.shape)}")
        mean, raw = out.chunk(2, dim=-1)
        std = torch.sqrt(F.softplus(raw)) + self.min_std
        return Normal(mean, std)


class RepresentationGaussian(HeteroscedasticGaussian):
    """A Gaussian for outputs with a representation (:class:`~approxeq.groups.OutputRep`) whose
    covariance turns with the scene, ``Σ(g·D) = ρ(g) Σ(D) ρ(g)ᵀ``, when the decoder's means are
    equivariant and its raw spreads invariant.

    Decoder output ``[batch, n, 2 dim_y (+ 2 num_vectors)]``: the means (in the order of
    ``rep.kinds``), one raw value per component, and with ``full`` one vector ``u`` per vector
    output.

    * ``full=False`` (isotropic): a factorised Gaussian, batch shape ``[batch, n, dim_y]``, in
      which both components of a vector share the std ``sqrt(softplus(r̄)) + min_std`` (``r̄`` the
      mean of its two raw values): ``s² I`` is unchanged by every rotation and reflection.
    * ``full=True``: a :class:`~torch.distributions.MultivariateNormal`, batch shape
      ``[batch, n]``, event shape ``[dim_y]``, with covariance ``s² I + u uᵀ`` in each vector's
      block (and ``σ²`` for each scalar): ``ρ(g)(s² I + u uᵀ)ρ(g)ᵀ = s² I + (ρ(g)u)(ρ(g)u)ᵀ``,
      so the covariance is equivariant when ``u`` is.
    """

    def __init__(self, rep, min_std: float = 1e-3, full: bool = False) -> None:
        super().__init__(min_std)
        self.rep, self.full = rep, full

    @property
    def out_features(self) -> int:
        """Width of the decoder output this likelihood reads."""
        return 2 * self.rep.dim + (2 * self.rep.num_vectors if self.full else 0)

    def forward(self, out: Tensor):
        from torch.distributions import MultivariateNormal

        if out.shape[-1] != self.out_features:
            raise ValueError(f"out: expected a last dimension of {self.out_features} for y_rep "
                             f"{self.rep.name}, got {tuple(out.shape)}")
        d = self.rep.dim
        mean, raw = out[..., :d], out[..., d:2 * d]
        for s in self.rep.vector_slices():
            raw = torch.cat([raw[..., :s.start], raw[..., s].mean(-1, keepdim=True).expand(
                *raw.shape[:-1], 2), raw[..., s.stop:]], -1)
        std = torch.sqrt(F.softplus(raw)) + self.min_std
        if not self.full:
            return Normal(mean, std)
        cov = torch.diag_embed(std ** 2)
        us = out[..., 2 * d:].unflatten(-1, (-1, 2))
        for j, s in enumerate(self.rep.vector_slices()):
            u = us[..., j, :]
            block = torch.zeros_like(cov)
            block[..., s, s] = u[..., :, None] * u[..., None, :]
            cov = cov + block
        return MultivariateNormal(mean, covariance_matrix=cov)


def output_likelihood(rep, min_std: float = 1e-3,
                      covariance: str = "isotropic") -> HeteroscedasticGaussian:
    """The likelihood of a model with outputs ``rep``: the factorised
    :class:`HeteroscedasticGaussian` for scalar outputs, else a :class:`RepresentationGaussian`
    (``covariance`` ``"isotropic"`` or ``"full"``)."""
    if rep.is_scalar:
        if covariance != "isotropic":
            raise ValueError(f"vector_covariance: {covariance!r} needs vector outputs "
                             f"(y_rep 'vector' or a list with 'vector'), got y_rep {rep.name}")
        return HeteroscedasticGaussian(min_std)
    if covariance not in ("isotropic", "full"):
        raise ValueError(f"vector_covariance: expected 'isotropic' or 'full', got "
                         f"{covariance!r}")
    return RepresentationGaussian(rep, min_std, full=covariance == "full")
