"""Pseudo-token TNPs: the context is summarised by ``M`` learned pseudo-tokens (Perceiver / LBANP
or induced-set-transformer style), so the cost is linear in the context size.

* ``pt-tnp``: plain attention; not equivariant.
* ``te-pt-tnp``: TE attention; the pseudo-tokens sit at learned offsets from the mean context
  input, so they move with the data and the model is translation equivariant. With
  ``approximate=True`` a fixed input at the pseudo-token locations is added to their embeddings
  (Ashman et al., 2024), evaluated within ``fixed_input_reach`` of the nearest context point
  (see :class:`TEPseudoTokenEncoder`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from approxeq.groups.translation import Translation
from approxeq.nn.attention import CrossAttentionLayer, SelfAttentionLayer
from approxeq.nn.mlp import MLP
from approxeq.nn.te_attention import DEFAULT_MEMORY_BUDGET_MB
from approxeq.np.base import NeuralProcess
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.models.common import (
    FixedInputEmbedding,
    FixedInputKind,
    LayerFactory,
    YRep,
    check_heads,
    fixed_input_embedding,
    fixed_input_options,
    refuse_approximate,
    with_output_rep,
)
from approxeq.np.models.te_tnp import RelativeTokens, te_layer_factories
from approxeq.np.models.tnp import AbsoluteTokens
from approxeq.np.registry import register_model

#: ``perceiver``: per layer context → pseudo, pseudo self-attention, targets → pseudo;
#: ``ist``: per layer context → pseudo, pseudo → context (updates the context), targets → pseudo.
VARIANTS = ("perceiver", "ist")
Variant = Literal["perceiver", "ist"]
#: the default ``fixed_input_reach`` of ``te-pt-tnp``, as a fraction of the domain's shortest side
DEFAULT_REACH_FRACTION = 0.25


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    return variant


def _pseudo_token_layers(module: nn.Module, num_layers: int, variant: str,
                         self_attention: LayerFactory, cross_attention: LayerFactory) -> None:
    """The layers of a pseudo-token encoder (see :data:`VARIANTS`). In the ``ist`` variant the
    last layer does not update the context, since nothing would read it."""
    module.variant = _check_variant(variant)
    module.pseudo_layers = nn.ModuleList(cross_attention() for _ in range(num_layers))
    if variant == "perceiver":
        module.mixing_layers = nn.ModuleList(self_attention() for _ in range(num_layers))
    else:
        module.mixing_layers = nn.ModuleList(cross_attention() for _ in range(num_layers - 1))
    module.target_layers = nn.ModuleList(cross_attention() for _ in range(num_layers))


class PseudoTokenEncoder(AbsoluteTokens):
    """Tokens ``MLP(x, y, flag)`` as in the TNP (:class:`~approxeq.np.models.tnp.AbsoluteTokens`),
    ``num_pseudo_tokens`` learned pseudo-tokens and a pseudo-token transformer (see
    :data:`VARIANTS`).

    Args:
        dim_x, dim_y, width: dimensions. num_layers: layers. num_pseudo_tokens: ``M``.
        variant: ``"perceiver"`` or ``"ist"``. self_attention, cross_attention: layer
            factories (``f(z) -> z``, ``f(zq, zk) -> zq``). dim_aux, aux_dropout: auxiliary
            inputs.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns the target tokens ``[b, nt, width]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int, num_layers: int,
                 num_pseudo_tokens: int, *, self_attention: LayerFactory,
                 cross_attention: LayerFactory, variant: str = "perceiver", dim_aux: int = 0,
                 aux_dropout: float = 0.0) -> None:
        super().__init__(dim_x, dim_y, width, dim_aux, aux_dropout)
        self.pseudo_tokens = nn.Parameter(torch.randn(num_pseudo_tokens, width))
        _pseudo_token_layers(self, num_layers, variant, self_attention, cross_attention)

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Tensor:
        zc, zt = self.tokens(xc, yc, xt, aux_c, aux_t)
        u = self.pseudo_tokens.expand(zc.shape[0], -1, -1)
        for i, (pseudo_layer, target_layer) in enumerate(zip(self.pseudo_layers,
                                                             self.target_layers)):
            u = pseudo_layer(u, zc)
            if self.variant == "perceiver":
                u = self.mixing_layers[i](u)
            elif i < len(self.mixing_layers):
                zc = self.mixing_layers[i](zc, u)
            zt = target_layer(zt, u)
        return zt


class PTTNP(NeuralProcess):
    """Pseudo-token TNP: a :class:`PseudoTokenEncoder` with plain attention and an MLP decoder.
    ``symmetry = None``. With ``dim_aux > 0`` embedded auxiliary values are added to the
    context and target tokens.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None
    [b, nc, dim_aux], aux_t=None [b, nt, dim_aux])`` returns a distribution with batch shape
    ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                 variant: str = "perceiver", dim_aux: int = 0, aux_dropout: float = 0.0) -> None:
        encoder = PseudoTokenEncoder(
            dim_x, dim_y, width, num_layers, num_pseudo_tokens,
            self_attention=partial(SelfAttentionLayer, width, num_heads),
            cross_attention=partial(CrossAttentionLayer, width, num_heads), variant=variant,
            dim_aux=dim_aux, aux_dropout=aux_dropout)
        super().__init__(encoder, MLP(width, 2 * dim_y, width, 2),
                         HeteroscedasticGaussian(min_std), dim_x=dim_x, dim_y=dim_y,
                         dim_aux=dim_aux)


class TEPseudoTokenEncoder(RelativeTokens):
    """Tokens ``MLP(y, flag)`` (:class:`~approxeq.np.models.te_tnp.RelativeTokens`) and
    pseudo-tokens at ``learned offsets + mean(xc)`` (``mean(xt)`` for an empty context), so
    shifting all inputs shifts them too; TE attention everywhere, every token carrying a
    location. The fixed input (approximate version) is added to the pseudo-token embeddings at
    their locations before the first layer.

    **The fixed input's reach.** Pseudo-token locations are not data locations: the mean of a
    context that lies on both sides of the fixed input's domain can fall inside it, and the
    offsets are learned and unbounded, so a fixed input evaluated at ``x_u`` would act on tasks
    at any distance from its domain. So it is evaluated at ``x_u`` moved to within
    ``fixed_input_reach`` ``ρ`` (∞-norm, per axis) of its nearest context point ``x_n``:
    ``t(x_n + clamp(x_u − x_n, −ρ, ρ))`` (nearest target point when the context is empty, as
    for the anchor; no fixed input when both are). A task whose locations all lie farther than
    ``ρ`` from the domain then has every such location outside it, where ``t = 0``, and is
    predicted exactly as by the equivariant component. This keeps the paper's design, and its
    quality where the model is used: a pseudo-token within ``ρ`` of the context reads ``t`` at
    its own location as before, and one farther away still carries a fixed input, read at the
    edge of the data in its direction, instead of losing it (with a sparse context many
    pseudo-tokens lie that far from every context point). Bounded offsets would not do: the
    anchor itself can lie inside the domain. The projection reads the context only, so a
    target's prediction does not depend on the other targets.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns the target tokens ``[b, nt, width]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int, num_layers: int,
                 num_pseudo_tokens: int, *, self_attention: LayerFactory,
                 cross_attention: LayerFactory, variant: str = "perceiver",
                 fixed_input: FixedInputEmbedding | None = None, dim_aux: int = 0,
                 aux_dropout: float = 0.0, fixed_input_reach: float = 0.0) -> None:
        # Parameters are created in the order of the earlier layout, so that a seed gives the
        # same initial model.
        super().__init__(dim_y, width, None, dim_aux, aux_dropout)
        self.dim_x = dim_x
        if not (fixed_input_reach >= 0 and math.isfinite(fixed_input_reach)):
            raise ValueError(f"fixed_input_reach: expected a finite number >= 0, got "
                             f"{fixed_input_reach!r}")
        #: how far (∞-norm) from its nearest context point a pseudo-token's t is read
        self.fixed_input_reach = float(fixed_input_reach)
        self.pseudo_tokens = nn.Parameter(torch.randn(num_pseudo_tokens, width))
        self.pseudo_offsets = nn.Parameter(torch.randn(num_pseudo_tokens, dim_x))
        self.pseudo_fixed_input = fixed_input
        _pseudo_token_layers(self, num_layers, variant, self_attention, cross_attention)

    def pseudo_token_locations(self, xc: Tensor, xt: Tensor) -> Tensor:
        """``[b, M, dim_x]``: learned offsets around the mean context input (target input if
        the context is empty; the origin if both are)."""
        anchor_set = xc if xc.shape[1] > 0 else xt
        if anchor_set.shape[1] > 0:
            anchor = anchor_set.mean(dim=1, keepdim=True)
        else:
            anchor = xc.new_zeros(xc.shape[0], 1, self.dim_x)
        return self.pseudo_offsets + anchor

    def fixed_input_locations(self, xu: Tensor, xc: Tensor, xt: Tensor) -> Tensor | None:
        """Where the fixed input of each pseudo-token ``xu [b, M, dim_x]`` is read: ``xu``
        moved to within :attr:`fixed_input_reach` (∞-norm) of its nearest context point (of
        its nearest target point when the context is empty), ``[b, M, dim_x]``; ``None``
        without any data."""
        data = xc if xc.shape[1] > 0 else xt
        if data.shape[1] == 0:
            return None
        with torch.no_grad():  # which point is nearest: no gradient
            nearest = torch.cdist(xu, data, p=math.inf).argmin(-1)  # [b, M]
        xn = data.gather(1, nearest.unsqueeze(-1).expand(-1, -1, data.shape[-1]))
        rho = self.fixed_input_reach
        return xn + (xu - xn).clamp(-rho, rho)

    def pseudo_fixed_input_values(self, xu: Tensor, xc: Tensor, xt: Tensor) -> Tensor | None:
        """The fixed input of the pseudo-tokens ``xu [b, M, dim_x]``, read at
        :meth:`fixed_input_locations`: ``[b, M, width]`` (``None`` without any data)."""
        where = self.fixed_input_locations(xu, xc, xt)
        return None if where is None else self.pseudo_fixed_input(where)

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Tensor:
        zc, zt = self.tokens(xc, yc, xt, aux_c, aux_t)
        xu = self.pseudo_token_locations(xc, xt)
        u = self.pseudo_tokens.expand(xc.shape[0], -1, -1)
        if self.pseudo_fixed_input is not None:
            t = self.pseudo_fixed_input_values(xu, xc, xt)
            u = u if t is None else u + t
        for i, (pseudo_layer, target_layer) in enumerate(zip(self.pseudo_layers,
                                                             self.target_layers)):
            u = pseudo_layer(u, zc, xu, xc)
            if self.variant == "perceiver":
                u = self.mixing_layers[i](u, xu)
            elif i < len(self.mixing_layers):
                zc = self.mixing_layers[i](zc, u, xc, xu)
            zt = target_layer(zt, u, xt, xu)
        return zt


class TEPTTNP(NeuralProcess):
    """Translation-equivariant pseudo-token TNP: a :class:`TEPseudoTokenEncoder` and an MLP
    decoder. With ``fixed_input`` (approximate version) ``t(x_u)`` is added to the pseudo-token
    embeddings; zero inside :func:`~approxeq.approximate.equivariant_component`
    (``symmetry = Translation(dim_x)``). With ``dim_aux > 0`` embedded auxiliary values are
    added to the context and target tokens (also zero inside the equivariant component).

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None
    [b, nc, dim_aux], aux_t=None [b, nt, dim_aux])`` returns a distribution with batch shape
    ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                 variant: str = "perceiver", fixed_input: FixedInputEmbedding | None = None,
                 dim_aux: int = 0, aux_dropout: float = 0.0, *, chunk_size: int | None = None,
                 memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                 fixed_input_reach: float = 0.0, split_first_layer: bool = True) -> None:
        self_attention, cross_attention = te_layer_factories(
            width, num_heads, dim_x, chunk_size=chunk_size, memory_budget_mb=memory_budget_mb,
            split_first_layer=split_first_layer)
        encoder = TEPseudoTokenEncoder(
            dim_x, dim_y, width, num_layers, num_pseudo_tokens, self_attention=self_attention,
            cross_attention=cross_attention, variant=variant, fixed_input=fixed_input,
            dim_aux=dim_aux, aux_dropout=aux_dropout, fixed_input_reach=fixed_input_reach)
        super().__init__(encoder, MLP(width, 2 * dim_y, width, 2),
                         HeteroscedasticGaussian(min_std), dim_x=dim_x, dim_y=dim_y,
                         symmetry=Translation(dim_x), dim_aux=dim_aux,
                         approximate=fixed_input is not None)

    @property
    def fixed_input(self) -> FixedInputEmbedding | None:
        return self.encoder.pseudo_fixed_input

    def fixed_input_reach(self, dtype: torch.dtype | None = None) -> float:
        """The encoder's ``fixed_input_reach``: the fixed input is read no farther than that
        from a context point (see :class:`TEPseudoTokenEncoder`). 0 without fixed inputs."""
        return self.encoder.fixed_input_reach if self.fixed_input is not None else 0.0

    def pseudo_token_locations(self, xc: Tensor, xt: Tensor) -> Tensor:
        """See :meth:`TEPseudoTokenEncoder.pseudo_token_locations`."""
        return self.encoder.pseudo_token_locations(xc, xt)


@register_model("pt-tnp", "Pseudo-token TNP (Perceiver or IST encoder; not equivariant)")
def build_pt_tnp(dim_x: int, dim_y: int, *, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                 approximate: bool = False, variant: Variant = "perceiver", dim_aux: int = 0,
                 aux_dropout: float = 0.0, y_rep: YRep = "scalar") -> PTTNP:
    """PT-TNP. Options: ``width`` (128), ``num_layers`` (5), ``num_heads`` (8),
    ``num_pseudo_tokens`` (32), ``min_std`` (1e-3), ``variant`` (``"perceiver"`` or
    ``"ist"``), ``dim_aux`` (0: no auxiliary fields), ``aux_dropout`` (0.0); ``approximate``
    must be false; ``y_rep`` (``"scalar"``) is recorded (the model is equivariant to
    nothing)."""
    refuse_approximate("pt-tnp", approximate)
    check_heads(width, num_heads)
    model = PTTNP(dim_x, dim_y, width=width, num_layers=num_layers, num_heads=num_heads,
                  num_pseudo_tokens=num_pseudo_tokens, min_std=min_std,
                  variant=_check_variant(variant), dim_aux=dim_aux, aux_dropout=aux_dropout)
    # the model is the same for every y_rep (recorded for the experiments and checks)
    return with_output_rep(model, y_rep, dim_x, dim_y)


@register_model("te-pt-tnp",
                "Translation-equivariant pseudo-token TNP "
                "(approximate=True: approximately equivariant)")
def build_te_pt_tnp(dim_x: int, dim_y: int, *, width: int = 128, num_layers: int = 5,
                    num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                    approximate: bool = False, variant: Variant = "perceiver",
                    num_fixed_inputs: int | None = None,
                    fixed_input_domain: Sequence[Sequence[float]] | None = None,
                    fixed_input_dropout: float = 0.5, fourier_features: int = 0,
                    fixed_input_kind: FixedInputKind = "mlp", grid_levels: int = 6,
                    grid_coarsest: int = 4, grid_finest: int = 128, grid_features: int = 4,
                    grid_smoothness: float = 0.0, fixed_input_lr: float = 1.0,
                    chunk_size: int | None = None,
                    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, dim_aux: int = 0,
                    aux_dropout: float = 0.0, fixed_input_reach: float | None = None,
                    y_rep: YRep = "scalar", split_first_layer: bool = True) -> TEPTTNP:
    """TE-PT-TNP. Options: those of ``pt-tnp``, ``chunk_size``, ``memory_budget_mb`` and
    ``split_first_layer`` (TE attention), and with ``approximate=True``: ``num_fixed_inputs``
    (width), ``fixed_input_domain`` ([(-2, 2)] * dim_x), ``fixed_input_dropout`` (0.5),
    ``fourier_features`` (0), ``fixed_input_reach`` (how far, in the ∞-norm, from its nearest
    context point a pseudo-token's fixed input is read, and so the model's reach; default a
    quarter of the domain's shortest side).

    The fixed input's parameterisation (``approximate=True``): ``fixed_input_kind``
    (``"mlp"``, ``"grid"`` or ``"grid-linear"``), ``grid_levels`` (6), ``grid_coarsest`` (4),
    ``grid_finest`` (128), ``grid_features`` (4), ``grid_smoothness`` (0),
    ``fixed_input_lr`` (1); see :class:`~approxeq.approximate.FixedInput`."""
    check_heads(width, num_heads)
    parameterisation = fixed_input_options(fixed_input_kind, grid_levels, grid_coarsest,
                                           grid_finest, grid_features, grid_smoothness,
                                           fixed_input_lr)
    fixed_input = fixed_input_embedding(dim_x, width, approximate=approximate,
                                        num_fixed_inputs=num_fixed_inputs,
                                        domain=fixed_input_domain, p=fixed_input_dropout,
                                        fourier_features=fourier_features,
                                        **parameterisation)
    if fixed_input is None:
        fixed_input_reach = 0.0
    elif fixed_input_reach is None:
        box = fixed_input.fixed_input.domain
        fixed_input_reach = DEFAULT_REACH_FRACTION * float((box[:, 1] - box[:, 0]).min())
    model = TEPTTNP(dim_x, dim_y, width=width, num_layers=num_layers, num_heads=num_heads,
                    num_pseudo_tokens=num_pseudo_tokens, min_std=min_std,
                    variant=_check_variant(variant), fixed_input=fixed_input, dim_aux=dim_aux,
                    aux_dropout=aux_dropout, chunk_size=chunk_size,
                    memory_budget_mb=memory_budget_mb,
                    fixed_input_reach=fixed_input_reach, split_first_layer=split_first_layer)
    # translations leave vectors unchanged: the model is the same for every y_rep
    return with_output_rep(model, y_rep, dim_x, dim_y)
