"""The LPS-TNP for vector fields (``y_rep`` with vectors): the sampled frame turns the context
vectors in and the predicted vectors back out.

With ``g = (Q, c)`` drawn from the learned equivariant distribution, the base TNP sees the
canonicalised task ``(Qᵀ(x_c − c), ρ(g)⁻¹ y_c, Qᵀ(x_t − c))``: each context vector is turned by
``Qᵀ`` (the symmetriser's ``"vectors"`` inputs), scalars are left as they are. Its predicted
mean vectors are turned back by ``Q`` (``"vectors"`` outputs); every raw spread is read as
invariant, and a vector's two raw values share one std (isotropic, as in
:class:`~approxeq.np.likelihood.RepresentationGaussian`). The frame network reads the context
vectors as extra vector channels and their invariants (lengths, scalars) as its gates, so the
frame distribution stays equivariant. Draws combine as a moment-matched Gaussian whose spread of
the means is averaged over each vector's components (isotropic too).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal

from approxeq.groups.orthogonal import Euclidean
from approxeq.groups.representation import OutputRep
from approxeq.nn.vector_neurons import VNNetwork
from approxeq.np.base import NeuralProcess
from approxeq.np.likelihood import RepresentationGaussian
from approxeq.np.models.common import FixedInputEmbedding
from approxeq.np.models.lps_tnp import (
    LPSTNP,
    CanonicalTNP,
    DrawAggregate,
    LPSEncoder,
)
from approxeq.np.models.tnp import TNP
from approxeq.symmetrize import ProbabilisticSymmetrization, Symmetrized
from approxeq.symmetrize.base import SymmetrizedOutput


def vector_kinds(rep: OutputRep) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The symmetriser's input kinds ``(anchor, xc, vectors..., scalars, xt)`` and output
    kinds ``(mean vectors..., rest)``."""
    k = rep.num_vectors
    return (("points", "points") + ("vectors",) * k + ("invariant", "points"),
            ("vectors",) * k + ("invariant",))


class VectorCanonicalTNP(nn.Module):
    """:class:`~approxeq.np.models.lps_tnp.CanonicalTNP` on inputs split by representation
    (not a subclass: its inputs differ).

    Shapes: ``forward(anchor, xc, v_1 [b, nc, 2], ..., v_K, scalars [b, nc, S], xt, ...)``
    returns ``(mean v_1 [b, nt, 2], ..., mean v_K, rest [b, nt, S + dim_y])`` (``rest``: the
    scalar means, then the raw spreads).
    """

    def __init__(self, tnp: TNP, rep: OutputRep) -> None:
        super().__init__()
        self.tnp, self.rep = tnp, rep

    def forward(self, anchor: Tensor, xc: Tensor, *values_and_xt: Tensor,
                context_extra: Tensor | None = None,
                target_extra: Tensor | None = None) -> tuple[Tensor, ...]:
        *values, xt = values_and_xt
        yc = self.rep.merge(values[:-1], values[-1])
        out = CanonicalTNP.forward(self, anchor, xc, yc, xt, context_extra, target_extra)
        d = self.rep.dim
        vectors, scalars = self.rep.split(out[..., :d])
        return (*vectors, torch.cat([scalars, out[..., d:]], -1))


class VectorFrameNetwork(nn.Module):
    """The frame network for vector values: the centred anchor points, the vector noise and
    (when the anchor is the context) the context vectors as vector channels, gated by the
    values' invariants ``[lengths and scalars, 1]``; returns ``[b, 2, 2]`` (rows: vectors).
    Arguments as :class:`~approxeq.np.models.lps_tnp.ContextFrameNetwork`."""

    def __init__(self, rep: OutputRep, *, noise_dim: int = 1, hidden: int = 16,
                 num_layers: int = 2) -> None:
        super().__init__()
        self.rep = rep
        self.vn = VNNetwork(1 + noise_dim + rep.num_vectors, rep.num_invariants + 1, hidden,
                            num_layers, out_scalars=1, out_vectors=2, dim=2)
        for unused in (self.vn.scalar_head, self.vn.invariant, self.vn.pool.direction):
            unused.requires_grad_(False)

    def forward(self, anchor: Tensor, xc: Tensor, *values_and_xt: Tensor,
                noise: Tensor) -> Tensor:
        *values, _ = values_and_xt
        b, n = anchor.shape[:2]
        if xc.shape[1] > 0:  # the anchor is the context
            yc = self.rep.merge(values[:-1], values[-1]).to(noise.dtype)
            vectors = torch.stack(values[:-1], -2).to(noise.dtype)
            scalars = torch.cat([self.rep.invariants(yc), torch.ones_like(yc[..., :1])], -1)
        else:
            vectors = noise.new_zeros(b, n, self.rep.num_vectors, 2)
            scalars = noise.new_zeros(b, n, self.rep.num_invariants + 1)
        inputs = torch.cat([anchor.unsqueeze(-2).to(noise.dtype), noise, vectors], -2)
        return self.vn(inputs, scalars)[1]


class VectorLPSEncoder(LPSEncoder):
    """:class:`~approxeq.np.models.lps_tnp.LPSEncoder` that splits the context values by
    representation for the symmetriser and joins the turned-back draws again: ``samples``
    ``[k, b, nt, 2 dim_y]`` in the layout of a
    :class:`~approxeq.np.likelihood.RepresentationGaussian`."""

    def sample(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
               aux_t: Tensor | None = None, *, generator: torch.Generator | None = None,
               noise: dict[str, Tensor] | None = None,
               n_samples: int | None = None) -> SymmetrizedOutput:
        rep: OutputRep = self.symmetrized.base.rep
        anchor, extras, n_samples = self.inputs(xc, xt, aux_c, aux_t, noise, n_samples)
        vectors, scalars = rep.split(yc)
        out = self.symmetrized(anchor, xc, *vectors, scalars, xt, generator=generator,
                               noise=noise, n_samples=n_samples, **extras)
        *means, rest = out.samples
        s = rep.num_scalars
        samples = torch.cat([rep.merge(means, rest[..., :s]), rest[..., s:]], -1)
        return dataclasses.replace(out, output=samples.mean(0), samples=samples)


class VectorDrawAggregate(DrawAggregate):
    """The moment-matched Gaussian of the draws with each vector's spread of the means
    averaged over its two components, so that it is unchanged by rotations."""

    def __init__(self, likelihood: RepresentationGaussian) -> None:
        super().__init__(likelihood, "gaussian")

    def combine(self, means: Tensor, stds: Tensor) -> Distribution:
        mean = means.mean(0)
        spread = ((means - mean) ** 2).mean(0)
        for s in self.likelihood.rep.vector_slices():
            spread[..., s] = spread[..., s].mean(-1, keepdim=True).expand_as(spread[..., s])
        return Normal(mean, ((stds ** 2).mean(0) + spread).sqrt())


class VectorLPSTNP(LPSTNP):
    """The LPS-TNP for vector fields (see the module docstring); ``symmetry = Euclidean(2)``,
    ``y_rep`` the representation. Arguments as :class:`~approxeq.np.models.lps_tnp.LPSTNP`
    with ``rep``; the aggregate is ``"gaussian"``.

    Shapes: ``forward(xc [b, nc, 2], yc [b, nc, dim_y], xt [b, nt, 2], aux_c=None,
    aux_t=None)`` returns a factorised Gaussian with batch shape ``[b, nt, dim_y]``.
    """

    def __init__(self, tnp: TNP, rep: OutputRep, *, noise_scale: float = 1.0,
                 noise_dim: int = 1, frame_hidden: int = 16, frame_layers: int = 2,
                 n_samples_train: int = 2, n_samples_eval: int = 8,
                 fixed_input: FixedInputEmbedding | None = None) -> None:
        symmetry = Euclidean(2)
        tnp.likelihood = RepresentationGaussian(rep, tnp.likelihood.min_std)
        network = VectorFrameNetwork(rep, noise_dim=noise_dim, hidden=frame_hidden,
                                     num_layers=frame_layers)
        strategy = ProbabilisticSymmetrization(network, noise_scale=noise_scale,
                                               noise_dim=noise_dim, noise_kind="vectors")
        in_kinds, out_kinds = vector_kinds(rep)
        symmetrized = Symmetrized(VectorCanonicalTNP(tnp, rep), symmetry, strategy,
                                  in_kinds=in_kinds, out_kinds=out_kinds,
                                  n_samples_train=n_samples_train,
                                  n_samples_eval=n_samples_eval)
        NeuralProcess.__init__(self, VectorLPSEncoder(symmetrized, fixed_input), nn.Identity(),
                               VectorDrawAggregate(tnp.likelihood), dim_x=2, dim_y=rep.dim,
                               symmetry=symmetry, dim_aux=tnp.dim_aux,
                               approximate=fixed_input is not None)
        self.y_rep = rep
