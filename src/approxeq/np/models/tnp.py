"""The transformer neural process (TNP, Nguyen & Grover, 2022; encoder as in cambridge-mlg/tnp)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from approxeq.nn.attention import CrossAttentionLayer, SelfAttentionLayer
from approxeq.nn.mlp import MLP
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.approximate.auxiliary import check_aux
from approxeq.np.models.cnp import (AUX_OPTIONS, aux_embedding, check_model_inputs,
                                    resolve_options, with_aux)
from approxeq.np.registry import register_model


def context_tokens_input(yc: Tensor) -> Tensor:
    """Token-embedding input of context outputs: ``[yc, 0]`` (flag 0 = observed)."""
    return torch.cat([yc, yc.new_zeros(*yc.shape[:-1], 1)], dim=-1)


def target_tokens_input(xt: Tensor, dim_y: int) -> Tensor:
    """Token-embedding input of targets: ``[0 * dim_y, 1]`` (flag 1 = to predict)."""
    zeros = xt.new_zeros(*xt.shape[:-1], dim_y)
    return torch.cat([zeros, torch.ones_like(zeros[..., :1])], dim=-1)


class TNPEncoder(nn.Module):
    """``num_layers`` layers of [self-attention over the context tokens, then cross-attention from
    the target tokens to the context tokens], pre-LayerNorm.

    Shapes: ``forward(zc [b, nc, width], zt [b, nt, width])`` returns the target tokens
    ``[b, nt, width]``.
    """

    def __init__(self, width: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        self.context_layers = nn.ModuleList(
            SelfAttentionLayer(width, num_heads) for _ in range(num_layers))
        self.target_layers = nn.ModuleList(
            CrossAttentionLayer(width, num_heads) for _ in range(num_layers))

    def forward(self, zc: Tensor, zt: Tensor) -> Tensor:
        for context_layer, target_layer in zip(self.context_layers, self.target_layers):
            zc = context_layer(zc)
            zt = target_layer(zt, zc)
        return zt


class TNP(nn.Module):
    """Transformer NP: tokens ``MLP(x, y, flag)`` (context ``[x, y, 0]``, targets ``[x, 0, 1]``),
    a :class:`TNPEncoder`, and an MLP decoder to a heteroscedastic Gaussian.

    Sees absolute locations, so it is not translation equivariant (``symmetry = None``).

    With ``dim_aux > 0``, known auxiliary values at the context and target locations
    (``aux_c [b, nc, dim_aux]``, ``aux_t [b, nt, dim_aux]``) are embedded
    (:class:`~approxeq.approximate.AuxiliaryEmbedding`) and added to the tokens.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns a distribution with batch shape ``[b, nt, dim_y]``.
    """

    symmetry = None

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, min_std: float = 1e-3, dim_aux: int = 0,
                 aux_dropout: float = 0.0) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.dim_aux = dim_x, dim_y, dim_aux
        self.token_embedding = MLP(dim_x + dim_y + 1, width, width, 2)
        self.aux_embedding = aux_embedding(dim_aux, width, aux_dropout)
        self.encoder = TNPEncoder(width, num_layers, num_heads)
        self.decoder = MLP(width, 2 * dim_y, width, 2)
        self.likelihood = HeteroscedasticGaussian(min_std)

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Distribution:
        check_model_inputs(self, xc, yc, xt)
        check_aux(self.dim_aux, aux_c, aux_t, xc, xt)
        zc = self.token_embedding(torch.cat([xc, context_tokens_input(yc)], dim=-1))
        zt = self.token_embedding(torch.cat([xt, target_tokens_input(xt, self.dim_y)], dim=-1))
        zc = with_aux(zc, self.aux_embedding, aux_c)
        zt = with_aux(zt, self.aux_embedding, aux_t)
        return self.likelihood(self.decoder(self.encode(zc, zt)))

    def encode(self, zc: Tensor, zt: Tensor) -> Tensor:
        """Target representations ``[b, nt, width]`` from context and target tokens."""
        return self.encoder(zc, zt)


@register_model("tnp", "Transformer NP (not equivariant)")
def build_tnp(dim_x: int, dim_y: int, **options: Any) -> TNP:
    """Options: ``width`` (128), ``num_layers`` (5), ``num_heads`` (8), ``min_std`` (1e-3),
    ``dim_aux`` (0: no auxiliary fields), ``aux_dropout`` (0.0)."""
    o = resolve_options("tnp", options, AUX_OPTIONS)
    return TNP(dim_x, dim_y, width=o["width"], num_layers=o["num_layers"],
               num_heads=o["num_heads"], min_std=o["min_std"], dim_aux=o["dim_aux"],
               aux_dropout=o["aux_dropout"])
