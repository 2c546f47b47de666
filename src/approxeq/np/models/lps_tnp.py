"""The TNP made E(d)-equivariant by learned probabilistic symmetrisation (LPS-TNP).

The non-equivariant TNP (``build_model("tnp", ...)``) sees a *canonicalised* task: every
location ``x`` is replaced by ``g⁻¹·x = Qᵀ(x − c)``, where

* ``c`` is the centroid of the context locations (of the targets when the context is empty),
  which makes the model exactly translation equivariant;
* ``Q ∈ O(d)`` is drawn from a learned distribution ``p(Q | task)`` that is equivariant,
  ``p(RQ | R·task) = p(Q | task)``: a vector-neuron network (:class:`ContextFrameNetwork`)
  reads the centred context locations with their outputs and i.i.d. Gaussian vector noise and
  returns ``d`` equivariant vectors, orthonormalised by Gram–Schmidt (Kim et al., 2023).

The outputs are scalar fields, so predictions at the canonicalised targets are used as they
are. ``k`` draws of ``Q`` give ``k`` Gaussian predictions per target, combined by
``aggregate``:

* ``"gaussian"`` (default): the moment-matched Gaussian of their equal-weight mixture (mean
  of the means; variance = mean variance + variance of the means). It keeps the predictive a
  factorised Gaussian, the form every metric of this project assumes.
* ``"mixture"``: the equal-weight mixture itself (``MixtureSameFamily``), the exact Monte-Carlo
  average of the predictive densities.

With a fixed noise draw transformed with the task (:meth:`LPSTNP.transform_noise`) the model
is exactly E(d)-equivariant; with fresh noise it is equivariant in distribution
(``symmetry = Euclidean(dim_x)``). The wrapper is :class:`~approxeq.symmetrize.Symmetrized`
with the :class:`~approxeq.symmetrize.ProbabilisticSymmetrization` strategy; its first input is
an *anchor* point set (the context locations, or the targets when the context is empty) so
that the centring and the noise live on it.

With ``approximate=True`` a learned fixed input ``t`` is evaluated at the *original*
(uncanonicalised) context locations and added to the base TNP's context token embeddings;
with ``dim_aux = K`` embedded auxiliary values are added to the context and target tokens. Both
are zero inside :func:`~approxeq.approximate.equivariant_component`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily, Normal

from approxeq.groups.orthogonal import Euclidean
from approxeq.nn.vector_neurons import VNNetwork
from approxeq.np.base import NeuralProcess
from approxeq.np.models.common import (
    FixedInputEmbedding,
)
from approxeq.np.models.tnp import TNP
from approxeq.symmetrize import ProbabilisticSymmetrization, Symmetrized
from approxeq.symmetrize.base import SymmetrizedOutput

#: the kinds of the base model's inputs ``(anchor, xc, yc, xt)``
IN_KINDS = ("points", "points", "invariant", "points")
AGGREGATES = ("gaussian", "mixture")


class CanonicalTNP(nn.Module):
    """A :class:`~approxeq.np.models.tnp.TNP` called on (canonicalised) ``xc, yc, xt``, with
    optional additive token terms (fixed inputs and auxiliary embeddings computed outside, once
    per task, at the original locations).

    Shapes: ``forward(anchor [b, n, d], xc [b, nc, d], yc [b, nc, dy], xt [b, nt, d],
    context_extra [b, nc, width] | None, target_extra [b, nt, width] | None)`` returns the
    decoder output ``[b, nt, 2 dy]`` (``anchor`` is used by the symmetriser only).
    """

    def __init__(self, tnp: TNP) -> None:
        super().__init__()
        self.tnp = tnp

    def forward(self, anchor: Tensor, xc: Tensor, yc: Tensor, xt: Tensor,
                context_extra: Tensor | None = None,
                target_extra: Tensor | None = None) -> Tensor:
        encoder = self.tnp.encoder
        zc, zt = encoder.embed(xc, yc, xt)
        if context_extra is not None:
            zc = zc + context_extra
        if target_extra is not None:
            zt = zt + target_extra
        return self.tnp.decoder(encoder.attend(zc, zt))


class ContextFrameNetwork(nn.Module):
    """The equivariant network ``q`` of the symmetriser: ``d`` O(d)-equivariant vectors from
    the centred anchor points (as vector channels, together with ``noise_dim`` channels of
    vector noise), gated by invariant scalars ``[y, 1]`` when the anchor is the context
    (zeros when it is the target set), through a :class:`~approxeq.nn.VNNetwork`.

    Shapes: ``forward(anchor [b, n, d], xc, yc [b, nc, dy], xt, noise [b, n, noise_dim, d])``
    returns ``[b, d, d]`` (rows: vectors).
    """

    def __init__(self, dim_x: int, dim_y: int, *, noise_dim: int = 1, hidden: int = 16,
                 num_layers: int = 2) -> None:
        super().__init__()
        self.dim_x, self.dim_y = dim_x, dim_y
        self.vn = VNNetwork(1 + noise_dim, dim_y + 1, hidden, num_layers, out_scalars=1,
                            out_vectors=dim_x, dim=dim_x)
        # Only the vectors are used, and the max-pool's direction is read through an argmax:
        # these parameters never get a gradient, which DDP (without find_unused_parameters)
        # would reject, so they are frozen.
        for unused in (self.vn.scalar_head, self.vn.invariant, self.vn.pool.direction):
            unused.requires_grad_(False)

    def forward(self, anchor: Tensor, xc: Tensor, yc: Tensor, xt: Tensor, *,
                noise: Tensor) -> Tensor:
        vectors = torch.cat([anchor.unsqueeze(-2).to(noise.dtype), noise], dim=-2)
        if xc.shape[1] > 0:  # the anchor is the context
            scalars = torch.cat([yc, torch.ones_like(yc[..., :1])], -1).to(noise.dtype)
        else:
            scalars = noise.new_zeros(*anchor.shape[:2], self.dim_y + 1)
        return self.vn(vectors, scalars)[1]


@dataclass
class LPSOutput:
    """What :meth:`LPSTNP.forward_with_samples` returns.

    Attributes:
        distribution: the aggregated predictive, batch shape ``[b, nt, dy]``.
        means, stds: the per-draw predictive means and standard deviations ``[k, b, nt, dy]``.
        elements: the sampled ``E(d)`` elements ``[k, b, d + 1, d + 1]`` (``Q`` and ``c``).
        noise: the noise draws, reusable through ``forward_with_samples(..., noise=...)``.
        regularizers: regulariser terms of the symmetriser (none for O(d)).
    """

    distribution: Distribution
    means: Tensor
    stds: Tensor
    elements: Tensor
    noise: dict[str, Tensor] | None
    regularizers: dict[str, Tensor] = field(default_factory=dict)


class LPSEncoder(nn.Module):
    """The symmetrised TNP as an encoder: ``k`` draws of the canonicalised TNP's decoder output.

    Args:
        symmetrized: the :class:`~approxeq.symmetrize.Symmetrized` :class:`CanonicalTNP`.
        fixed_input: optional fixed-input embedding, evaluated at the original context
            locations. The auxiliary embedding is the base TNP's.

    Shapes: ``forward(xc [b, nc, d], yc [b, nc, dy], xt [b, nt, d], aux_c=None, aux_t=None)``
    returns ``[k, b, nt, 2 dy]``.
    """

    def __init__(self, symmetrized: Symmetrized,
                 fixed_input: FixedInputEmbedding | None = None) -> None:
        super().__init__()
        self.symmetrized = symmetrized
        self.fixed_input = fixed_input

    @property
    def aux_embedding(self) -> nn.Module | None:
        return self.symmetrized.base.tnp.encoder.aux_embedding

    def sample(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
               aux_t: Tensor | None = None, *, generator: torch.Generator | None = None,
               noise: dict[str, Tensor] | None = None,
               n_samples: int | None = None) -> SymmetrizedOutput:
        """The symmetriser's output: the draws with the group elements and noise behind them."""
        anchor, extras, n_samples = self.inputs(xc, xt, aux_c, aux_t, noise, n_samples)
        return self.symmetrized(anchor, xc, yc, xt, generator=generator, noise=noise,
                                n_samples=n_samples, **extras)

    def inputs(self, xc: Tensor, xt: Tensor, aux_c: Tensor | None, aux_t: Tensor | None,
               noise: dict[str, Tensor] | None, n_samples: int | None
               ) -> tuple[Tensor, dict[str, Tensor], int | None]:
        """What the symmetriser reads besides the task: the anchor (the context locations,
        else the targets, else one origin), the fixed input and auxiliary embeddings
        (``context_extra``, ``target_extra``) and the number of draws (that of ``noise``)."""
        anchor = xc if xc.shape[1] > 0 else xt
        if anchor.shape[1] == 0:  # nothing to centre on, nothing to predict
            anchor = xc.new_zeros(xc.shape[0], 1, xc.shape[-1])
        extras: dict[str, Tensor] = {}
        context_extra = None if self.fixed_input is None else self.fixed_input(xc)
        if self.aux_embedding is not None:
            a_c = self.aux_embedding(aux_c)
            context_extra = a_c if context_extra is None else context_extra + a_c
            extras["target_extra"] = self.aux_embedding(aux_t)
        if context_extra is not None:
            extras["context_extra"] = context_extra
        if noise is not None:
            n_samples = noise["input"].shape[0] // xc.shape[0]
        return anchor, extras, n_samples

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Tensor:
        return self.sample(xc, yc, xt, aux_c, aux_t).samples


class DrawAggregate(nn.Module):
    """The predictive of ``k`` draws: each draw through ``likelihood``, then combined by
    ``aggregate`` (see the module docstring).

    Shapes: ``forward(out [k, b, nt, 2 dy])`` returns a distribution with batch shape
    ``[b, nt, dy]``.
    """

    def __init__(self, likelihood: nn.Module, aggregate: str = "gaussian") -> None:
        super().__init__()
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate: expected one of {AGGREGATES}, got {aggregate!r}")
        self.likelihood, self.aggregate = likelihood, aggregate

    def combine(self, means: Tensor, stds: Tensor) -> Distribution:
        """The aggregate of per-draw Gaussians ``means, stds [k, b, nt, dy]``."""
        if self.aggregate == "mixture":
            logits = means.new_zeros(*means.shape[1:], means.shape[0])
            return MixtureSameFamily(Categorical(logits=logits),
                                     Normal(means.movedim(0, -1), stds.movedim(0, -1)))
        mean = means.mean(0)
        var = (stds ** 2).mean(0) + ((means - mean) ** 2).mean(0)
        return Normal(mean, var.sqrt())

    def forward(self, out: Tensor) -> Distribution:
        draws = self.likelihood(out)
        return self.combine(draws.mean, draws.stddev)


class LPSTNP(NeuralProcess):
    """A TNP made E(d)-equivariant by probabilistic symmetrisation (see the module docstring):
    an :class:`LPSEncoder`, no further decoder, and a :class:`DrawAggregate` likelihood.

    Args:
        tnp: the base :class:`~approxeq.np.models.tnp.TNP`. frame_network: ``q``.
        noise_scale: std of the vector noise (0: a deterministic canonicaliser).
        noise_dim: vector-noise channels per anchor point.
        n_samples_train, n_samples_eval: draws ``k`` in training / evaluation mode.
        aggregate: ``"gaussian"`` or ``"mixture"``.
        fixed_input: optional fixed-input embedding (approximate version).
        The auxiliary fields (``dim_aux``) are those of ``tnp`` (its ``aux_embedding``).

    Attributes: ``dim_x``, ``dim_y``, ``symmetry = Euclidean(dim_x)``, ``symmetrized`` (the
    :class:`~approxeq.symmetrize.Symmetrized` wrapper).

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x],
    aux_c [b, nc, K] | None, aux_t [b, nt, K] | None)`` returns a distribution with batch
    shape ``[b, nt, dim_y]``.
    """

    def __init__(self, tnp: TNP, frame_network: nn.Module, *, noise_scale: float = 1.0,
                 noise_dim: int = 1, n_samples_train: int = 2, n_samples_eval: int = 8,
                 aggregate: str = "gaussian",
                 fixed_input: FixedInputEmbedding | None = None) -> None:
        symmetry = Euclidean(tnp.dim_x)
        likelihood = DrawAggregate(tnp.likelihood, aggregate)
        strategy = ProbabilisticSymmetrization(frame_network, noise_scale=noise_scale,
                                               noise_dim=noise_dim, noise_kind="vectors")
        symmetrized = Symmetrized(CanonicalTNP(tnp), symmetry, strategy, in_kinds=IN_KINDS,
                                  out_kinds="invariant", n_samples_train=n_samples_train,
                                  n_samples_eval=n_samples_eval)
        super().__init__(LPSEncoder(symmetrized, fixed_input), nn.Identity(), likelihood,
                         dim_x=tnp.dim_x, dim_y=tnp.dim_y, symmetry=symmetry,
                         dim_aux=tnp.dim_aux, approximate=fixed_input is not None)

    @property
    def symmetrized(self) -> Symmetrized:
        return self.encoder.symmetrized

    @property
    def fixed_input(self) -> FixedInputEmbedding | None:
        return self.encoder.fixed_input

    @property
    def aux_embedding(self) -> nn.Module | None:
        return self.encoder.aux_embedding

    def fixed_input_reach(self, dtype: torch.dtype | None = None) -> float:
        """0: the fixed input is evaluated at the original context locations only."""
        return 0.0

    @property
    def aggregate(self) -> str:
        return self.likelihood.aggregate

    def forward_with_samples(self, xc: Tensor, yc: Tensor, xt: Tensor,
                             aux_c: Tensor | None = None, aux_t: Tensor | None = None, *,
                             generator: torch.Generator | None = None,
                             noise: dict[str, Tensor] | None = None,
                             n_samples: int | None = None) -> LPSOutput:
        """The predictive with what was sampled for it (:class:`LPSOutput`). ``noise`` reuses a
        previous draw (its ``k`` fixes ``n_samples``); ``generator`` seeds a fresh one."""
        self.check_inputs(xc, yc, xt, aux_c, aux_t)
        out = self.encoder.sample(xc, yc, xt, aux_c, aux_t, generator=generator, noise=noise,
                                  n_samples=n_samples)
        draws = self.likelihood.likelihood(out.samples)  # [k, b, nt, dy]
        means, stds = draws.mean, draws.stddev
        return LPSOutput(self.likelihood.combine(means, stds), means, stds, out.elements,
                         out.noise, out.regularizers)

    def transform_noise(self, g: Tensor, noise: dict[str, Tensor]) -> dict[str, Tensor]:
        """The noise draw ``noise`` (from an :class:`LPSOutput` of batch ``b``) moved by the
        E(d) elements ``g [b, d + 1, d + 1]``: with it, the prediction for the task moved by
        ``g`` equals the prediction for the original task exactly (outputs are invariant)."""
        return self.symmetrized.transform_noise(g, noise)
