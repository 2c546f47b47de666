"""The translation-equivariant TNP (TE-TNP, Ashman et al., ICML 2024) and its approximately
equivariant version (Ashman et al., NeurIPS 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from approxeq.groups.translation import Translation
from approxeq.nn.mlp import MLP
from approxeq.nn.te_attention import (
    DEFAULT_MEMORY_BUDGET_MB,
    AttentionFactory,
    TECrossAttentionLayer,
    TEMultiHeadAttention,
    TESelfAttentionLayer,
)
from approxeq.np.base import NeuralProcess
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.models.common import (
    FixedInputEmbedding,
    FixedInputKind,
    LayerFactory,
    YRep,
    aux_embedding,
    check_heads,
    context_tokens_input,
    fixed_input_embedding,
    fixed_input_options,
    target_tokens_input,
    with_aux,
    with_output_rep,
)
from approxeq.np.registry import register_model


class RelativeTokens(nn.Module):
    """Tokens ``MLP(y, flag)`` that carry no absolute position (context ``[y, 0]``, targets
    ``[0, 1]``), plus the fixed input ``t(xc)`` on the context tokens (approximate version)
    and the embedded auxiliary values (``dim_aux > 0``); both are zero inside
    :func:`~approxeq.approximate.equivariant_component`.

    Shapes: ``tokens(xc, yc, xt, aux_c, aux_t)`` returns ``[b, nc, width]``, ``[b, nt, width]``.
    """

    def __init__(self, dim_y: int, width: int, fixed_input: FixedInputEmbedding | None = None,
                 dim_aux: int = 0, aux_dropout: float = 0.0) -> None:
        super().__init__()
        self.dim_y = dim_y
        self.token_embedding = MLP(dim_y + 1, width, width, 2)
        self.fixed_input = fixed_input
        self.aux_embedding = aux_embedding(dim_aux, width, aux_dropout)

    def tokens(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
               aux_t: Tensor | None = None) -> tuple[Tensor, Tensor]:
        zc = self.token_embedding(context_tokens_input(yc))
        if self.fixed_input is not None:
            zc = zc + self.fixed_input(xc)
        zt = self.token_embedding(target_tokens_input(xt, self.dim_y))
        return with_aux(zc, self.aux_embedding, aux_c), with_aux(zt, self.aux_embedding, aux_t)


class TETNPEncoder(RelativeTokens):
    """:class:`RelativeTokens`, then ``num_layers`` layers of [TE self-attention among the
    context tokens, then TE cross-attention from the target tokens to the context tokens];
    locations stay fixed.

    Args:
        dim_y, width: dimensions. num_layers: attention layers.
        self_attention: factory of a layer ``f(z, x) -> z``; cross_attention: factory of a
            layer ``f(zq, zk, xq, xk) -> zq``. fixed_input, dim_aux, aux_dropout: see
            :class:`RelativeTokens`.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns the target tokens ``[b, nt, width]``.
    """

    def __init__(self, dim_y: int, width: int, num_layers: int, *, self_attention: LayerFactory,
                 cross_attention: LayerFactory, fixed_input: FixedInputEmbedding | None = None,
                 dim_aux: int = 0, aux_dropout: float = 0.0) -> None:
        super().__init__(dim_y, width, fixed_input, dim_aux, aux_dropout)
        self.context_layers = nn.ModuleList(self_attention() for _ in range(num_layers))
        self.target_layers = nn.ModuleList(cross_attention() for _ in range(num_layers))

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Tensor:
        zc, zt = self.tokens(xc, yc, xt, aux_c, aux_t)
        for context_layer, target_layer in zip(self.context_layers, self.target_layers):
            zc = context_layer(zc, xc)
            zt = target_layer(zt, zc, xt, xc)
        return zt


def te_layer_factories(width: int, num_heads: int, dim_x: int, *,
                       attention: AttentionFactory = TEMultiHeadAttention,
                       chunk_size: int | None = None,
                       memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                       **attention_options) -> tuple[LayerFactory, LayerFactory]:
    """Factories of TE self- and cross-attention layers whose attention ``attention`` builds
    (with ``attention_options``, such as ``split_first_layer``)."""
    options = {"attention": attention, "chunk_size": chunk_size,
               "memory_budget_mb": memory_budget_mb, **attention_options}
    return (partial(TESelfAttentionLayer, width, num_heads, dim_x, **options),
            partial(TECrossAttentionLayer, width, num_heads, dim_x, **options))


class TETNP(NeuralProcess):
    """Translation-equivariant TNP: a :class:`TETNPEncoder` (locations enter only through the
    differences inside TE attention) and an MLP decoder to a heteroscedastic Gaussian.

    With ``fixed_input`` (approximate version), ``t(xc)`` is added to the context tokens once,
    before the first layer; inside :func:`~approxeq.approximate.equivariant_component` it is zero
    and the model is exactly translation equivariant (``symmetry = Translation(dim_x)``).

    With ``dim_aux > 0``, embedded auxiliary values (``aux_c [b, nc, dim_aux]``,
    ``aux_t [b, nt, dim_aux]``) are added to the context and target tokens; they are zero inside
    the equivariant component too.

    ``attention`` builds every attention (default
    :class:`~approxeq.nn.te_attention.TEMultiHeadAttention`); ``symmetry`` overrides the group
    (for an attention with more invariance). Other keywords (``chunk_size``,
    ``memory_budget_mb``, ``split_first_layer``) go to the attention.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns a distribution with batch shape ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, min_std: float = 1e-3,
                 fixed_input: FixedInputEmbedding | None = None, dim_aux: int = 0,
                 aux_dropout: float = 0.0, *, attention: AttentionFactory = TEMultiHeadAttention,
                 symmetry=None, chunk_size: int | None = None,
                 memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                 **attention_options) -> None:
        self_attention, cross_attention = te_layer_factories(
            width, num_heads, dim_x, attention=attention, chunk_size=chunk_size,
            memory_budget_mb=memory_budget_mb, **attention_options)
        encoder = TETNPEncoder(dim_y, width, num_layers, self_attention=self_attention,
                               cross_attention=cross_attention, fixed_input=fixed_input,
                               dim_aux=dim_aux, aux_dropout=aux_dropout)
        super().__init__(encoder, MLP(width, 2 * dim_y, width, 2),
                         HeteroscedasticGaussian(min_std), dim_x=dim_x, dim_y=dim_y,
                         symmetry=symmetry or Translation(dim_x), dim_aux=dim_aux,
                         approximate=fixed_input is not None)

    @property
    def fixed_input(self) -> FixedInputEmbedding | None:
        return self.encoder.fixed_input

    def fixed_input_reach(self, dtype: torch.dtype | None = None) -> float:
        """0: the fixed input is evaluated at the context locations only, so a task whose
        locations all lie outside its domain sees none of it."""
        return 0.0


@register_model("te-tnp",
                "Translation-equivariant TNP (approximate=True: approximately equivariant)")
def build_te_tnp(dim_x: int, dim_y: int, *, width: int = 128, num_layers: int = 5,
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
                 split_first_layer: bool = True) -> TETNP:
    """TE-TNP. Options: ``width`` (128), ``num_layers`` (5), ``num_heads`` (8), ``min_std``
    (1e-3), ``chunk_size`` (None = from ``memory_budget_mb``, 256), ``split_first_layer``
    (True; see :class:`~approxeq.nn.te_attention.TEMultiHeadAttention`), and with
    ``approximate=True``: ``num_fixed_inputs`` (width), ``fixed_input_domain``
    ([(-2, 2)] * dim_x), ``fixed_input_dropout`` (0.5), ``fourier_features`` (0); ``dim_aux``
    (0: no auxiliary fields), ``aux_dropout`` (0.0); ``num_pseudo_tokens`` is accepted and
    unused.

    The fixed input's parameterisation (``approximate=True``): ``fixed_input_kind``
    (``"mlp"``, ``"grid"`` or ``"grid-linear"``), ``grid_levels`` (6), ``grid_coarsest`` (4),
    ``grid_finest`` (128), ``grid_features`` (4), ``grid_smoothness`` (0),
    ``fixed_input_lr`` (1); see :class:`~approxeq.approximate.FixedInput`. ``y_rep``
    (``"scalar"``): the outputs' representation; translations leave vectors unchanged."""
    check_heads(width, num_heads)
    parameterisation = fixed_input_options(fixed_input_kind, grid_levels, grid_coarsest,
                                           grid_finest, grid_features, grid_smoothness,
                                           fixed_input_lr)
    fixed_input = fixed_input_embedding(dim_x, width, approximate=approximate,
                                        num_fixed_inputs=num_fixed_inputs,
                                        domain=fixed_input_domain, p=fixed_input_dropout,
                                        fourier_features=fourier_features,
                                        **parameterisation)
    model = TETNP(dim_x, dim_y, width=width, num_layers=num_layers, num_heads=num_heads,
                  min_std=min_std, fixed_input=fixed_input, dim_aux=dim_aux,
                  aux_dropout=aux_dropout, chunk_size=chunk_size,
                  memory_budget_mb=memory_budget_mb, split_first_layer=split_first_layer)
    # translations leave vectors unchanged: the model is the same for every y_rep
    return with_output_rep(model, y_rep, dim_x, dim_y)
