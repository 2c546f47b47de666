"""The transformer neural process (TNP, Nguyen & Grover, 2022; encoder as in cambridge-mlg/tnp)."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from approxeq.nn.attention import CrossAttentionLayer, SelfAttentionLayer
from approxeq.nn.mlp import MLP
from approxeq.np.base import NeuralProcess
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.models.common import (
    LayerFactory,
    YRep,
    aux_embedding,
    check_heads,
    context_tokens_input,
    refuse_approximate,
    target_tokens_input,
    with_aux,
    with_output_rep,
)
from approxeq.np.registry import register_model


class AbsoluteTokens(nn.Module):
    """Tokens ``MLP(x, y, flag)`` (context ``[x, y, 0]``, targets ``[x, 0, 1]``), plus the
    embedded auxiliary values when ``dim_aux > 0``.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c, aux_t)``
    returns the context and target tokens ``[b, nc, width]``, ``[b, nt, width]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int, dim_aux: int = 0,
                 aux_dropout: float = 0.0) -> None:
        super().__init__()
        self.dim_y = dim_y
        self.token_embedding = MLP(dim_x + dim_y + 1, width, width, 2)
        self.aux_embedding = aux_embedding(dim_aux, width, aux_dropout)

    def embed(self, xc: Tensor, yc: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        """Context and target tokens without the auxiliary values."""
        zc = self.token_embedding(torch.cat([xc, context_tokens_input(yc)], dim=-1))
        zt = self.token_embedding(torch.cat([xt, target_tokens_input(xt, self.dim_y)], dim=-1))
        return zc, zt

    def tokens(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
               aux_t: Tensor | None = None) -> tuple[Tensor, Tensor]:
        zc, zt = self.embed(xc, yc, xt)
        return with_aux(zc, self.aux_embedding, aux_c), with_aux(zt, self.aux_embedding, aux_t)


class TNPEncoder(AbsoluteTokens):
    """:class:`AbsoluteTokens`, then ``num_layers`` layers of [self-attention over the context
    tokens, then cross-attention from the target tokens to the context tokens].

    Args:
        dim_x, dim_y, width: dimensions. num_layers: attention layers.
        self_attention: factory of a layer ``f(z) -> z``; cross_attention: factory of a layer
            ``f(zq, zk) -> zq``. dim_aux, aux_dropout: auxiliary inputs.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns the target tokens ``[b, nt, width]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int, num_layers: int, *,
                 self_attention: LayerFactory, cross_attention: LayerFactory, dim_aux: int = 0,
                 aux_dropout: float = 0.0) -> None:
        super().__init__(dim_x, dim_y, width, dim_aux, aux_dropout)
        self.context_layers = nn.ModuleList(self_attention() for _ in range(num_layers))
        self.target_layers = nn.ModuleList(cross_attention() for _ in range(num_layers))

    def attend(self, zc: Tensor, zt: Tensor) -> Tensor:
        """Target tokens ``[b, nt, width]`` after every layer."""
        for context_layer, target_layer in zip(self.context_layers, self.target_layers):
            zc = context_layer(zc)
            zt = target_layer(zt, zc)
        return zt

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Tensor:
        return self.attend(*self.tokens(xc, yc, xt, aux_c, aux_t))


class TNP(NeuralProcess):
    """Transformer NP: a :class:`TNPEncoder` and an MLP decoder to a heteroscedastic Gaussian.

    Sees absolute locations, so it is not translation equivariant (``symmetry = None``).

    With ``dim_aux > 0``, known auxiliary values at the context and target locations
    (``aux_c [b, nc, dim_aux]``, ``aux_t [b, nt, dim_aux]``) are embedded
    (:class:`~approxeq.approximate.AuxiliaryEmbedding`) and added to the tokens.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns a distribution with batch shape ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, min_std: float = 1e-3, dim_aux: int = 0,
                 aux_dropout: float = 0.0) -> None:
        encoder = TNPEncoder(dim_x, dim_y, width, num_layers,
                             self_attention=partial(SelfAttentionLayer, width, num_heads),
                             cross_attention=partial(CrossAttentionLayer, width, num_heads),
                             dim_aux=dim_aux, aux_dropout=aux_dropout)
        super().__init__(encoder, MLP(width, 2 * dim_y, width, 2),
                         HeteroscedasticGaussian(min_std), dim_x=dim_x, dim_y=dim_y,
                         dim_aux=dim_aux)


@register_model("tnp", "Transformer NP (not equivariant)")
def build_tnp(dim_x: int, dim_y: int, *, width: int = 128, num_layers: int = 5,
              num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
              approximate: bool = False, dim_aux: int = 0, aux_dropout: float = 0.0,
              y_rep: YRep = "scalar") -> TNP:
    """TNP. Options: ``width`` (128), ``num_layers`` (5), ``num_heads`` (8), ``min_std``
    (1e-3), ``dim_aux`` (0: no auxiliary fields), ``aux_dropout`` (0.0);
    ``num_pseudo_tokens`` is accepted and unused; ``approximate`` must be false; ``y_rep``
    (``"scalar"``) is recorded (the model is equivariant to nothing)."""
    refuse_approximate("tnp", approximate)
    check_heads(width, num_heads)
    model = TNP(dim_x, dim_y, width=width, num_layers=num_layers, num_heads=num_heads,
                min_std=min_std, dim_aux=dim_aux, aux_dropout=aux_dropout)
    # the model is the same for every y_rep (recorded for the experiments and checks)
    return with_output_rep(model, y_rep, dim_x, dim_y)
