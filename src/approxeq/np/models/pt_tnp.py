"""Pseudo-token TNPs: the context is summarised by ``M`` learned pseudo-tokens (Perceiver / LBANP
or induced-set-transformer style), so the cost is linear in the context size.

* ``pt-tnp``: plain attention; not equivariant.
* ``te-pt-tnp``: TE attention; the pseudo-tokens sit at learned offsets from the mean context
  input, so they move with the data and the model is translation equivariant. With
  ``approximate=True`` a fixed input at the pseudo-token locations is added to their embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from approxeq.groups.translation import Translation
from approxeq.nn.attention import CrossAttentionLayer, SelfAttentionLayer
from approxeq.nn.mlp import MLP
from approxeq.nn.te_attention import TECrossAttentionLayer, TESelfAttentionLayer
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.approximate.auxiliary import check_aux
from approxeq.np.models.cnp import (AUX_OPTIONS, aux_embedding, check_model_inputs,
                                    resolve_options, with_aux)
from approxeq.np.models.te_tnp import TE_OPTIONS, FixedInputEmbedding, fixed_input_embedding
from approxeq.np.models.tnp import TNP, context_tokens_input, target_tokens_input
from approxeq.np.registry import register_model

#: ``perceiver``: per layer context → pseudo, pseudo self-attention, targets → pseudo;
#: ``ist``: per layer context → pseudo, pseudo → context (updates the context), targets → pseudo.
VARIANTS = ("perceiver", "ist")
PT_OPTIONS: dict[str, Any] = {"variant": "perceiver"}


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    return variant


class PseudoTokenEncoder(nn.Module):
    """Pseudo-token transformer encoder (see :data:`VARIANTS`). In the ``ist`` variant the last
    layer does not update the context, since nothing would read it.

    Shapes: ``forward(u [b, M, width], zc [b, nc, width], zt [b, nt, width])`` returns the
    target tokens ``[b, nt, width]``.
    """

    def __init__(self, width: int, num_layers: int, num_heads: int,
                 variant: str = "perceiver") -> None:
        super().__init__()
        self.variant = _check_variant(variant)
        self.pseudo_layers = nn.ModuleList(
            CrossAttentionLayer(width, num_heads) for _ in range(num_layers))
        if variant == "perceiver":
            self.mixing_layers = nn.ModuleList(
                SelfAttentionLayer(width, num_heads) for _ in range(num_layers))
        else:
            self.mixing_layers = nn.ModuleList(
                CrossAttentionLayer(width, num_heads) for _ in range(num_layers - 1))
        self.target_layers = nn.ModuleList(
            CrossAttentionLayer(width, num_heads) for _ in range(num_layers))

    def forward(self, u: Tensor, zc: Tensor, zt: Tensor) -> Tensor:
        for i, (pseudo_layer, target_layer) in enumerate(zip(self.pseudo_layers,
                                                             self.target_layers)):
            u = pseudo_layer(u, zc)
            if self.variant == "perceiver":
                u = self.mixing_layers[i](u)
            elif i < len(self.mixing_layers):
                zc = self.mixing_layers[i](zc, u)
            zt = target_layer(zt, u)
        return zt


class PTTNP(TNP):
    """Pseudo-token TNP: tokens ``MLP(x, y, flag)`` as in the TNP, ``num_pseudo_tokens`` learned
    pseudo-tokens, a :class:`PseudoTokenEncoder`, MLP decoder. ``symmetry = None``.
    With ``dim_aux > 0`` embedded auxiliary values are added to the context and target tokens.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None
    [b, nc, dim_aux], aux_t=None [b, nt, dim_aux])`` returns a distribution with batch shape
    ``[b, nt, dim_y]``.
    """

    symmetry = None

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                 variant: str = "perceiver", dim_aux: int = 0, aux_dropout: float = 0.0) -> None:
        super().__init__(dim_x, dim_y, width, num_layers, num_heads, min_std, dim_aux,
                         aux_dropout)
        self.pseudo_tokens = nn.Parameter(torch.randn(num_pseudo_tokens, width))
        self.encoder = PseudoTokenEncoder(width, num_layers, num_heads, variant)

    def encode(self, zc: Tensor, zt: Tensor) -> Tensor:
        u = self.pseudo_tokens.expand(zc.shape[0], -1, -1)
        return self.encoder(u, zc, zt)


class TEPseudoTokenEncoder(nn.Module):
    """:class:`PseudoTokenEncoder` with TE attention; every token carries a location.

    Shapes: ``forward(u [b, M, width], zc [b, nc, width], zt [b, nt, width], xu [b, M, dim_x],
    xc [b, nc, dim_x], xt [b, nt, dim_x])`` returns the target tokens ``[b, nt, width]``.
    """

    def __init__(self, width: int, num_layers: int, num_heads: int, dim_x: int,
                 variant: str = "perceiver", **attention_options: Any) -> None:
        super().__init__()
        self.variant = _check_variant(variant)

        def cross() -> TECrossAttentionLayer:
            return TECrossAttentionLayer(width, num_heads, dim_x, **attention_options)

        self.pseudo_layers = nn.ModuleList(cross() for _ in range(num_layers))
        if variant == "perceiver":
            self.mixing_layers = nn.ModuleList(
                TESelfAttentionLayer(width, num_heads, dim_x, **attention_options)
                for _ in range(num_layers))
        else:
            self.mixing_layers = nn.ModuleList(cross() for _ in range(num_layers - 1))
        self.target_layers = nn.ModuleList(cross() for _ in range(num_layers))

    def forward(self, u: Tensor, zc: Tensor, zt: Tensor, xu: Tensor, xc: Tensor,
                xt: Tensor) -> Tensor:
        for i, (pseudo_layer, target_layer) in enumerate(zip(self.pseudo_layers,
                                                             self.target_layers)):
            u = pseudo_layer(u, zc, xu, xc)
            if self.variant == "perceiver":
                u = self.mixing_layers[i](u, xu)
            elif i < len(self.mixing_layers):
                zc = self.mixing_layers[i](zc, u, xc, xu)
            zt = target_layer(zt, u, xt, xu)
        return zt


class TEPTTNP(nn.Module):
    """Translation-equivariant pseudo-token TNP. Tokens ``MLP(y, flag)`` carry no position; the
    pseudo-tokens sit at ``learned offsets + mean(xc)`` (``mean(xt)`` for an empty context), so
    shifting all inputs shifts them too; TE attention everywhere (:class:`TEPseudoTokenEncoder`).

    With ``fixed_input`` (approximate version), ``t(x_u)`` is added to the pseudo-token
    embeddings at their locations before the first layer; zero inside
    :func:`~approxeq.approximate.equivariant_component` (``symmetry = Translation(dim_x)``).
    With ``dim_aux > 0`` embedded auxiliary values are added to the context and target tokens
    (also zero inside the equivariant component).

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None
    [b, nc, dim_aux], aux_t=None [b, nt, dim_aux])`` returns a distribution with batch shape
    ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                 variant: str = "perceiver", fixed_input: FixedInputEmbedding | None = None,
                 dim_aux: int = 0, aux_dropout: float = 0.0, **attention_options: Any) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.dim_aux = dim_x, dim_y, dim_aux
        self.symmetry = Translation(dim_x)
        self.token_embedding = MLP(dim_y + 1, width, width, 2)
        self.aux_embedding = aux_embedding(dim_aux, width, aux_dropout)
        self.pseudo_tokens = nn.Parameter(torch.randn(num_pseudo_tokens, width))
        self.pseudo_offsets = nn.Parameter(torch.randn(num_pseudo_tokens, dim_x))
        self.fixed_input = fixed_input
        self.encoder = TEPseudoTokenEncoder(width, num_layers, num_heads, dim_x, variant,
                                            **attention_options)
        self.decoder = MLP(width, 2 * dim_y, width, 2)
        self.likelihood = HeteroscedasticGaussian(min_std)

    @property
    def approximate(self) -> bool:
        return self.fixed_input is not None

    def pseudo_token_locations(self, xc: Tensor, xt: Tensor) -> Tensor:
        """``[b, M, dim_x]``: learned offsets around the mean context input (target input if
        the context is empty; the origin if both are)."""
        anchor_set = xc if xc.shape[1] > 0 else xt
        if anchor_set.shape[1] > 0:
            anchor = anchor_set.mean(dim=1, keepdim=True)
        else:
            anchor = xc.new_zeros(xc.shape[0], 1, self.dim_x)
        return self.pseudo_offsets + anchor

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Distribution:
        check_model_inputs(self, xc, yc, xt)
        check_aux(self.dim_aux, aux_c, aux_t, xc, xt)
        zc = self.token_embedding(context_tokens_input(yc))
        zt = self.token_embedding(target_tokens_input(xt, self.dim_y))
        zc = with_aux(zc, self.aux_embedding, aux_c)
        zt = with_aux(zt, self.aux_embedding, aux_t)
        xu = self.pseudo_token_locations(xc, xt)
        u = self.pseudo_tokens.expand(xc.shape[0], -1, -1)
        if self.fixed_input is not None:
            u = u + self.fixed_input(xu)
        return self.likelihood(self.decoder(self.encoder(u, zc, zt, xu, xc, xt)))


@register_model("pt-tnp", "Pseudo-token TNP (Perceiver or IST encoder; not equivariant)")
def build_pt_tnp(dim_x: int, dim_y: int, **options: Any) -> PTTNP:
    """Options: ``width`` (128), ``num_layers`` (5), ``num_heads`` (8), ``num_pseudo_tokens``
    (32), ``min_std`` (1e-3), ``variant`` (``"perceiver"`` or ``"ist"``), ``dim_aux`` (0: no
    auxiliary fields), ``aux_dropout`` (0.0)."""
    o = resolve_options("pt-tnp", options, {**PT_OPTIONS, **AUX_OPTIONS})
    return PTTNP(dim_x, dim_y, width=o["width"], num_layers=o["num_layers"],
                 num_heads=o["num_heads"], num_pseudo_tokens=o["num_pseudo_tokens"],
                 min_std=o["min_std"], variant=_check_variant(o["variant"]),
                 dim_aux=o["dim_aux"], aux_dropout=o["aux_dropout"])


@register_model("te-pt-tnp",
                "Translation-equivariant pseudo-token TNP "
                "(approximate=True: approximately equivariant)")
def build_te_pt_tnp(dim_x: int, dim_y: int, **options: Any) -> TEPTTNP:
    """Options: those of ``pt-tnp``, ``chunk_size`` and ``memory_budget_mb`` (TE attention), and
    with ``approximate=True``: ``num_fixed_inputs`` (width), ``fixed_input_domain``
    ([(-2, 2)] * dim_x), ``fixed_input_dropout`` (0.5), ``fourier_features`` (0)."""
    o = resolve_options("te-pt-tnp", options, {**PT_OPTIONS, **TE_OPTIONS, **AUX_OPTIONS},
                        approximable=True)
    return TEPTTNP(dim_x, dim_y, width=o["width"], num_layers=o["num_layers"],
                   num_heads=o["num_heads"], num_pseudo_tokens=o["num_pseudo_tokens"],
                   min_std=o["min_std"], variant=_check_variant(o["variant"]),
                   fixed_input=fixed_input_embedding(dim_x, o), dim_aux=o["dim_aux"],
                   aux_dropout=o["aux_dropout"], chunk_size=o["chunk_size"],
                   memory_budget_mb=o["memory_budget_mb"])
