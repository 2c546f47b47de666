"""The E(d)-invariant transformer NP (E-TNP) for scalar fields, exact and approximate.

The TE-TNP's attention logits are an MLP of the dot products and of the location difference
``x_n − x_m``, which makes them invariant to translations only. Here the MLP sees the difference
only through its length ``‖x_n − x_m‖`` (:class:`DistanceMultiHeadAttention`), which every
rotation, reflection and translation preserves. Tokens carry no location at all (context
``MLP([y, 0])``, targets ``MLP([0, 1])``), so the predictive distribution of a scalar field is
exactly invariant to E(d) acting on all locations at once: ``symmetry = Euclidean(dim_x)``.

With ``approximate=True`` a learned fixed input ``t(x_c)`` is added to the context tokens
before the first layer (as in the approximate TE-TNP); with ``dim_aux = K`` the embedded
auxiliary values are added to the context and target tokens. Both are zero inside
:func:`~approxeq.approximate.equivariant_component`, where the model is exactly E(d)-invariant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from approxeq.groups.orthogonal import Euclidean
from approxeq.groups.representation import OutputRep
from approxeq.nn.te_attention import DEFAULT_MEMORY_BUDGET_MB, TEMultiHeadAttention
from approxeq.np.base import NeuralProcess
from approxeq.np.likelihood import output_likelihood
from approxeq.np.models.common import (
    FixedInputEmbedding,
    FixedInputKind,
    VectorCovariance,
    YRep,
    check_heads,
    fixed_input_embedding,
    fixed_input_options,
    with_output_rep,
)
from approxeq.np.models.te_tnp import TETNP, TETNPEncoder, te_layer_factories
from approxeq.np.models.vector_readout import DisplacementReadout, VectorTokens
from approxeq.np.registry import register_model


def pairwise_distance(xq: Tensor, xk: Tensor) -> Tensor:
    """``‖xq_n − xk_m‖`` as ``[b, nq, nk, 1]``, with a zero (not NaN) gradient at distance 0
    (the diagonal of self-attention)."""
    sq = ((xq[:, :, None, :] - xk[:, None, :, :]) ** 2).sum(-1, keepdim=True)
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(),
                       torch.zeros_like(sq))


class DistanceMultiHeadAttention(TEMultiHeadAttention):
    """:class:`~approxeq.nn.te_attention.TEMultiHeadAttention` whose logit MLP reads the
    distance ``‖x_n − x_m‖`` instead of the difference ``x_n − x_m``:

        logit[h, n, m] = MLP([q_n·k_m / √d_h for every head, ‖x_n − x_m‖])[h],

    invariant to any isometry of the locations (rotations, reflections, translations).
    Arguments, chunking and shapes as the parent.
    """

    @staticmethod
    def location_features(dim_x: int) -> int:
        """The distance is one number, whatever ``dim_x``."""
        return 1

    def _chunk_logits(self, dots: Tensor, xq: Tensor, xk: Tensor) -> Tensor:
        return self.logit_mlp(torch.cat([dots, pairwise_distance(xq, xk)], dim=-1))


class ETNP(TETNP):
    """E(d)-invariant TNP for scalar fields (see the module docstring): a
    :class:`~approxeq.np.models.te_tnp.TETNP` whose every attention is a
    :class:`DistanceMultiHeadAttention`, with ``symmetry = Euclidean(dim_x)``.

    Args:
        dim_x, dim_y: dimensions. width, num_layers, num_heads, min_std: as the TE-TNP.
        fixed_input: optional :class:`~approxeq.np.models.common.FixedInputEmbedding`
            (approximate version). dim_aux: auxiliary channels ``K`` (0 = none).
        aux_dropout: per-task dropout probability of the auxiliary embedding in training.
        **attention_options: ``chunk_size``, ``memory_budget_mb``.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x],
    aux_c [b, nc, K] | None, aux_t [b, nt, K] | None)`` returns a distribution with batch
    shape ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, **kwargs: Any) -> None:
        super().__init__(dim_x, dim_y, attention=DistanceMultiHeadAttention,
                         symmetry=Euclidean(dim_x), **kwargs)


class VectorETNPEncoder(TETNPEncoder):
    """The E-TNP's encoder for outputs with vectors: tokens of the context values' invariants
    (:meth:`~approxeq.groups.OutputRep.invariants`: each scalar, each vector's length), the
    same distance attention, and the final tokens handed on with the locations and values
    (:class:`~approxeq.np.models.vector_readout.VectorTokens`).

    Shapes: ``forward(xc [b, nc, 2], yc [b, nc, dim_y], xt [b, nt, 2], aux_c=None,
    aux_t=None)`` returns :class:`~approxeq.np.models.vector_readout.VectorTokens`.
    """

    def __init__(self, rep: OutputRep, width: int, num_layers: int, **kwargs: Any) -> None:
        super().__init__(rep.num_invariants, width, num_layers, **kwargs)
        self.rep = rep

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> VectorTokens:
        zc, zt = self.tokens(xc, self.rep.invariants(yc), xt, aux_c, aux_t)
        for context_layer, target_layer in zip(self.context_layers, self.target_layers):
            zc = context_layer(zc, xc)
            zt = target_layer(zt, zc, xt, xc)
        return VectorTokens(zc, zt, xc, xt, yc)


class VectorETNP(NeuralProcess):
    """The E-TNP for vector fields (``y_rep`` with vectors): a :class:`VectorETNPEncoder`, the
    :class:`~approxeq.np.models.vector_readout.DisplacementReadout` and a
    :class:`~approxeq.np.likelihood.RepresentationGaussian`. Exactly E(2)-equivariant with
    ``ρ(g)`` turning the vectors: ``symmetry = Euclidean(2)``, ``y_rep`` the representation.
    Arguments as :class:`ETNP`, plus ``rep`` and ``covariance`` (``"isotropic"`` or
    ``"full"``).

    Shapes: ``forward(xc [b, nc, 2], yc [b, nc, dim_y], xt [b, nt, 2], aux_c=None,
    aux_t=None)`` returns a distribution with batch shape ``[b, nt, dim_y]`` (``[b, nt]`` and
    event shape ``[dim_y]`` with ``covariance="full"``).
    """

    def __init__(self, rep: OutputRep, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, min_std: float = 1e-3,
                 fixed_input: FixedInputEmbedding | None = None, dim_aux: int = 0,
                 aux_dropout: float = 0.0, *, covariance: str = "isotropic",
                 chunk_size: int | None = None,
                 memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> None:
        self_attention, cross_attention = te_layer_factories(
            width, num_heads, 2, attention=DistanceMultiHeadAttention, chunk_size=chunk_size,
            memory_budget_mb=memory_budget_mb)
        encoder = VectorETNPEncoder(rep, width, num_layers, self_attention=self_attention,
                                    cross_attention=cross_attention, fixed_input=fixed_input,
                                    dim_aux=dim_aux, aux_dropout=aux_dropout)
        likelihood = output_likelihood(rep, min_std, covariance)
        super().__init__(encoder, DisplacementReadout(rep, width, likelihood.full), likelihood,
                         dim_x=2, dim_y=rep.dim, symmetry=Euclidean(2), dim_aux=dim_aux,
                         approximate=fixed_input is not None)
        self.y_rep = rep

    @property
    def fixed_input(self) -> FixedInputEmbedding | None:
        return self.encoder.fixed_input

    def fixed_input_reach(self, dtype: torch.dtype | None = None) -> float:
        """0: the fixed input is evaluated at the context locations only."""
        return 0.0


@register_model("e-tnp", "E(d)-invariant TNP: attention logits of distances "
                "(approximate=True: approximately invariant)")
def build_e_tnp(dim_x: int, dim_y: int, *, width: int = 128, num_layers: int = 5,
                num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                approximate: bool = False, num_fixed_inputs: int | None = None,
                fixed_input_domain: Sequence[Sequence[float]] | None = None,
                fixed_input_dropout: float = 0.5, fourier_features: int = 0,
                fixed_input_kind: FixedInputKind = "mlp", grid_levels: int = 6,
                grid_coarsest: int = 4, grid_finest: int = 128, grid_features: int = 4,
                grid_smoothness: float = 0.0, fixed_input_lr: float = 1.0,
                chunk_size: int | None = None,
                memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, dim_aux: int = 0,
                aux_dropout: float = 0.0, y_rep: YRep = "scalar",
                vector_covariance: VectorCovariance = "isotropic") -> ETNP | VectorETNP:
    """E-TNP. Options: ``width`` (128), ``num_layers`` (5), ``num_heads`` (8), ``min_std``
    (1e-3), ``chunk_size`` / ``memory_budget_mb`` (see the TE attention), ``dim_aux`` (0),
    ``aux_dropout`` (0.0), and with ``approximate=True``: ``num_fixed_inputs`` (width),
    ``fixed_input_domain`` ([(-2, 2)] * dim_x), ``fixed_input_dropout`` (0.5),
    ``fourier_features`` (0); ``num_pseudo_tokens`` is accepted and unused.

    The fixed input's parameterisation (``approximate=True``): ``fixed_input_kind``
    (``"mlp"``, ``"grid"`` or ``"grid-linear"``), ``grid_levels`` (6), ``grid_coarsest`` (4),
    ``grid_finest`` (128), ``grid_features`` (4), ``grid_smoothness`` (0),
    ``fixed_input_lr`` (1); see :class:`~approxeq.approximate.FixedInput`.

    ``y_rep`` (``"scalar"``): ``"vector"`` or a list with vectors (``dim_x = 2``) builds the
    :class:`VectorETNP`, whose vectors turn with the scene; ``vector_covariance``
    (``"isotropic"`` or ``"full"``) is then each vector's predictive covariance."""
    check_heads(width, num_heads)
    rep = OutputRep.parse(y_rep, dim_x, dim_y)
    parameterisation = fixed_input_options(fixed_input_kind, grid_levels, grid_coarsest,
                                           grid_finest, grid_features, grid_smoothness,
                                           fixed_input_lr)
    fixed_input = fixed_input_embedding(dim_x, width, approximate=approximate,
                                        num_fixed_inputs=num_fixed_inputs,
                                        domain=fixed_input_domain, p=fixed_input_dropout,
                                        fourier_features=fourier_features,
                                        **parameterisation)
    if not rep.is_scalar:
        return VectorETNP(rep, width=width, num_layers=num_layers, num_heads=num_heads,
                          min_std=min_std, fixed_input=fixed_input, dim_aux=dim_aux,
                          aux_dropout=aux_dropout, covariance=vector_covariance,
                          chunk_size=chunk_size, memory_budget_mb=memory_budget_mb)
    output_likelihood(rep, min_std, vector_covariance)  # refuses 'full' for scalars
    model = ETNP(dim_x, dim_y, width=width, num_layers=num_layers, num_heads=num_heads,
                 min_std=min_std, fixed_input=fixed_input, dim_aux=dim_aux,
                 aux_dropout=aux_dropout, chunk_size=chunk_size,
                 memory_budget_mb=memory_budget_mb)
    return with_output_rep(model, rep, dim_x, dim_y)
