"""The translation-equivariant TNP (TE-TNP, Ashman et al., ICML 2024) and its approximately
equivariant version (Ashman et al., NeurIPS 2024)."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn
from torch.distributions import Distribution

from approxeq.approximate.auxiliary import check_aux
from approxeq.approximate.fixed_inputs import FixedInput
from approxeq.groups.translation import Translation
from approxeq.nn.mlp import MLP
from approxeq.nn.te_attention import (DEFAULT_MEMORY_BUDGET_MB, TECrossAttentionLayer,
                                      TESelfAttentionLayer)
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.models.cnp import (AUX_OPTIONS, aux_embedding, check_model_inputs,
                                    resolve_options, with_aux)
from approxeq.np.models.tnp import context_tokens_input, target_tokens_input
from approxeq.np.registry import register_model

#: options of the TE attention (see :class:`~approxeq.nn.te_attention.TEMultiHeadAttention`)
TE_OPTIONS: dict[str, Any] = {"chunk_size": None, "memory_budget_mb": DEFAULT_MEMORY_BUDGET_MB}


class FixedInputEmbedding(nn.Module):
    """A learned fixed input ``t(x)`` (:class:`~approxeq.approximate.FixedInput`) brought to the
    token width: added as is when it has ``width`` channels, otherwise through a bias-free linear
    map (so that ``t = 0`` still adds exactly zero).

    Args:
        dim_x: input dimension. width: token width (also the fixed input's MLP width).
        num_fixed_inputs: channels of ``t`` (default ``width``).
        domain: box outside which ``t = 0`` (default ``[(-2, 2)] * dim_x``).
        p: per-task dropout probability of ``t`` in training. fourier_features: see FixedInput.

    Shapes: ``forward(x [b, n, dim_x])`` returns ``[b, n, width]``.
    """

    def __init__(self, dim_x: int, width: int, num_fixed_inputs: int | None = None,
                 domain: Sequence[Sequence[float]] | None = None, p: float = 0.5,
                 fourier_features: int = 0) -> None:
        super().__init__()
        channels = num_fixed_inputs or width
        self.fixed_input = FixedInput(dim_x, channels, domain if domain is not None
                                      else [(-2.0, 2.0)] * dim_x, hidden=width, p=p,
                                      fourier_features=fourier_features)
        self.projection = None if channels == width else nn.Linear(channels, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        t = self.fixed_input(x)
        return t if self.projection is None else self.projection(t)


def fixed_input_embedding(dim_x: int, options: dict[str, Any]) -> FixedInputEmbedding | None:
    """The fixed-input embedding asked for by resolved model options (``None`` if exact)."""
    if not options["approximate"]:
        return None
    return FixedInputEmbedding(dim_x, options["width"], options["num_fixed_inputs"],
                               options["fixed_input_domain"], options["fixed_input_dropout"],
                               options["fourier_features"])


class TETNPEncoder(nn.Module):
    """``num_layers`` layers of [TE self-attention among the context tokens, then TE
    cross-attention from the target tokens to the context tokens]; locations stay fixed.

    Shapes: ``forward(zc [b, nc, width], zt [b, nt, width], xc [b, nc, dim_x],
    xt [b, nt, dim_x])`` returns the target tokens ``[b, nt, width]``.
    """

    def __init__(self, width: int, num_layers: int, num_heads: int, dim_x: int,
                 **attention_options: Any) -> None:
        super().__init__()
        self.context_layers = nn.ModuleList(
            TESelfAttentionLayer(width, num_heads, dim_x, **attention_options)
            for _ in range(num_layers))
        self.target_layers = nn.ModuleList(
            TECrossAttentionLayer(width, num_heads, dim_x, **attention_options)
            for _ in range(num_layers))

    def forward(self, zc: Tensor, zt: Tensor, xc: Tensor, xt: Tensor) -> Tensor:
        for context_layer, target_layer in zip(self.context_layers, self.target_layers):
            zc = context_layer(zc, xc)
            zt = target_layer(zt, zc, xt, xc)
        return zt


class TETNP(nn.Module):
    """Translation-equivariant TNP: tokens ``MLP(y, flag)`` carry no absolute position (context
    ``[y, 0]``, targets ``[0, 1]``); locations enter only through the differences inside TE
    attention (:class:`TETNPEncoder`); MLP decoder to a heteroscedastic Gaussian.

    With ``fixed_input`` (approximate version), ``t(xc)`` is added to the context tokens once,
    before the first layer; inside :func:`~approxeq.approximate.equivariant_component` it is zero
    and the model is exactly translation equivariant (``symmetry = Translation(dim_x)``).

    With ``dim_aux > 0``, embedded auxiliary values (``aux_c [b, nc, dim_aux]``,
    ``aux_t [b, nt, dim_aux]``) are added to the context and target tokens; they are zero inside
    the equivariant component too.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x], aux_c=None,
    aux_t=None)`` returns a distribution with batch shape ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 num_heads: int = 8, min_std: float = 1e-3,
                 fixed_input: FixedInputEmbedding | None = None, dim_aux: int = 0,
                 aux_dropout: float = 0.0, **attention_options: Any) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.dim_aux = dim_x, dim_y, dim_aux
        self.symmetry = Translation(dim_x)
        self.token_embedding = MLP(dim_y + 1, width, width, 2)
        self.fixed_input = fixed_input
        self.aux_embedding = aux_embedding(dim_aux, width, aux_dropout)
        self.encoder = self.make_encoder(width, num_layers, num_heads, dim_x, **attention_options)
        self.decoder = MLP(width, 2 * dim_y, width, 2)
        self.likelihood = HeteroscedasticGaussian(min_std)

    @staticmethod
    def make_encoder(width: int, num_layers: int, num_heads: int, dim_x: int,
                     **attention_options: Any) -> nn.Module:
        """The attention stack; subclasses swap in another equivariant one."""
        return TETNPEncoder(width, num_layers, num_heads, dim_x, **attention_options)

    @property
    def approximate(self) -> bool:
        return self.fixed_input is not None

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Distribution:
        check_model_inputs(self, xc, yc, xt)
        check_aux(self.dim_aux, aux_c, aux_t, xc, xt)
        zc = self.token_embedding(context_tokens_input(yc))
        if self.fixed_input is not None:
            zc = zc + self.fixed_input(xc)
        zt = self.token_embedding(target_tokens_input(xt, self.dim_y))
        zc = with_aux(zc, self.aux_embedding, aux_c)
        zt = with_aux(zt, self.aux_embedding, aux_t)
        return self.likelihood(self.decoder(self.encoder(zc, zt, xc, xt)))


@register_model("te-tnp",
                "Translation-equivariant TNP (approximate=True: approximately equivariant)")
def build_te_tnp(dim_x: int, dim_y: int, **options: Any) -> TETNP:
    """Options: ``width`` (128), ``num_layers`` (5), ``num_heads`` (8), ``min_std`` (1e-3),
    ``chunk_size`` (None = from ``memory_budget_mb``, 256), and with ``approximate=True``:
    ``num_fixed_inputs`` (width), ``fixed_input_domain`` ([(-2, 2)] * dim_x),
    ``fixed_input_dropout`` (0.5), ``fourier_features`` (0); ``dim_aux`` (0: no auxiliary
    fields), ``aux_dropout`` (0.0)."""
    o = resolve_options("te-tnp", options, {**TE_OPTIONS, **AUX_OPTIONS}, approximable=True)
    return TETNP(dim_x, dim_y, width=o["width"], num_layers=o["num_layers"],
                 num_heads=o["num_heads"], min_std=o["min_std"],
                 fixed_input=fixed_input_embedding(dim_x, o), dim_aux=o["dim_aux"],
                 aux_dropout=o["aux_dropout"], chunk_size=o["chunk_size"],
                 memory_budget_mb=o["memory_budget_mb"])
