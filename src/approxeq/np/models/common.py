"""Parts shared by the neural-process models: token inputs, auxiliary and fixed-input
embeddings, and the option rules several builders apply. Imports no model module, so every
model can import it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from approxeq.approximate.auxiliary import AuxiliaryEmbedding
from approxeq.approximate.fixed_inputs import FixedInput
from approxeq.groups.representation import OutputRep

#: the ``fixed_input_kind`` option: the fixed input's parameterisation
FixedInputKind = Literal["mlp", "grid", "grid-linear"]

#: the ``y_rep`` option: ``"scalar"``, ``"vector"`` or a list of them (checked by
#: :meth:`~approxeq.groups.OutputRep.parse`)
YRep = str | list[str]

#: the ``vector_covariance`` option: each vector output's covariance
VectorCovariance = Literal["isotropic", "full"]


def with_output_rep(model: nn.Module, y_rep: YRep | OutputRep, dim_x: int,
                    dim_y: int) -> nn.Module:
    """``model`` with its ``y_rep`` attribute set to the checked representation; returns it."""
    model.y_rep = OutputRep.parse(y_rep, dim_x, dim_y)
    return model


#: a factory ``f() -> layer`` of one attention layer; encoders call it once per layer
LayerFactory = Callable[[], nn.Module]


def check_heads(width: int, num_heads: int) -> None:
    """Multi-head attention splits the token width evenly between the heads."""
    if width % num_heads:
        raise ValueError(f"num_heads: {num_heads} must divide width {width}")


def refuse_approximate(model_name: str, approximate: bool) -> None:
    """A model equivariant to no group has no approximately equivariant version."""
    if approximate:
        raise ValueError(f"approximate: {model_name} is not equivariant to any group, so it has "
                         "no approximately equivariant version; use te-tnp or te-pt-tnp "
                         "(approximate=True) instead")


def default_domain(dim_x: int, domain: Sequence[Sequence[float]] | None
                   ) -> Sequence[Sequence[float]]:
    """The fixed-input domain box: ``[(-2, 2)] * dim_x`` unless given."""
    return [(-2.0, 2.0)] * dim_x if domain is None else domain


def context_tokens_input(yc: Tensor) -> Tensor:
    """Token-embedding input of context outputs: ``[yc, 0]`` (flag 0 = observed)."""
    return torch.cat([yc, yc.new_zeros(*yc.shape[:-1], 1)], dim=-1)


def target_tokens_input(xt: Tensor, dim_y: int) -> Tensor:
    """Token-embedding input of targets: ``[0 * dim_y, 1]`` (flag 1 = to predict)."""
    zeros = xt.new_zeros(*xt.shape[:-1], dim_y)
    return torch.cat([zeros, torch.ones_like(zeros[..., :1])], dim=-1)


def aux_embedding(dim_aux: int, width: int, aux_dropout: float = 0.0
                  ) -> AuxiliaryEmbedding | None:
    """The embedding of ``dim_aux`` auxiliary channels into ``width`` (``None`` if
    ``dim_aux = 0``). Being symmetry breaking, it is zero inside
    :func:`~approxeq.approximate.equivariant_component`."""
    if dim_aux == 0:
        return None
    return AuxiliaryEmbedding(dim_aux, width, hidden=width, p=aux_dropout)


def with_aux(tokens: Tensor, embedding: AuxiliaryEmbedding | None, aux: Tensor | None) -> Tensor:
    """``tokens [b, n, width]`` plus the embedded auxiliary values ``aux [b, n, dim_aux]`` (as
    they are when the model reads no auxiliary field)."""
    return tokens if embedding is None else tokens + embedding(aux)


class FixedInputEmbedding(nn.Module):
    """A learned fixed input ``t(x)`` (:class:`~approxeq.approximate.FixedInput`) brought to the
    token width: added as is when it has ``width`` channels, otherwise through a bias-free linear
    map (so that ``t = 0`` still adds exactly zero).

    Args:
        dim_x: input dimension. width: token width (also the fixed input's MLP width).
        num_fixed_inputs: channels of ``t`` (default ``width``).
        domain: box outside which ``t = 0`` (default ``[(-2, 2)] * dim_x``).
        p: per-task dropout probability of ``t`` in training. fourier_features: see FixedInput.
        **options: the parameterisation (:func:`fixed_input_options`).

    Shapes: ``forward(x [b, n, dim_x])`` returns ``[b, n, width]``.
    """

    def __init__(self, dim_x: int, width: int, num_fixed_inputs: int | None = None,
                 domain: Sequence[Sequence[float]] | None = None, p: float = 0.5,
                 fourier_features: int = 0, **options: Any) -> None:
        super().__init__()
        channels = num_fixed_inputs or width
        self.fixed_input = FixedInput(dim_x, channels, default_domain(dim_x, domain),
                                      hidden=width, p=p, fourier_features=fourier_features,
                                      **options)
        self.projection = None if channels == width else nn.Linear(channels, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        t = self.fixed_input(x)
        return t if self.projection is None else self.projection(t)


def fixed_input_embedding(dim_x: int, width: int, *, approximate: bool,
                          num_fixed_inputs: int | None = None,
                          domain: Sequence[Sequence[float]] | None = None, p: float = 0.5,
                          fourier_features: int = 0, **options: Any
                          ) -> FixedInputEmbedding | None:
    """The fixed-input embedding of an approximately equivariant token model (``None`` if
    ``approximate`` is false); ``options``: :func:`fixed_input_options`."""
    if not approximate:
        return None
    return FixedInputEmbedding(dim_x, width, num_fixed_inputs, domain, p, fourier_features,
                               **options)


def grid_fixed_input(dim_x: int, *, approximate: bool, num_fixed_inputs: int | None,
                     default_channels: int, domain: Sequence[Sequence[float]] | None,
                     hidden: int, p: float, fourier_features: int, **options: Any
                     ) -> FixedInput | None:
    """The fixed input of an approximately equivariant grid model (``None`` if
    ``approximate`` is false): ``num_fixed_inputs`` channels (default ``default_channels``)
    on ``domain`` (default :func:`default_domain`); ``options``: :func:`fixed_input_options`.

    Raises:
        ValueError: ``num_fixed_inputs`` is not an int >= 1.
    """
    if not approximate:
        return None
    b = default_channels if num_fixed_inputs is None else num_fixed_inputs
    if not isinstance(b, int) or isinstance(b, bool) or b < 1:
        raise ValueError(f"num_fixed_inputs: expected an int >= 1 with approximate=True, got "
                         f"{num_fixed_inputs!r}")
    return FixedInput(dim_x, b, default_domain(dim_x, domain), hidden=hidden, p=p,
                      fourier_features=fourier_features, **options)


def fixed_input_options(kind: str = "mlp", levels: int = 6, coarsest: int = 4,
                        finest: int = 128, features: int = 4, smoothness: float = 0.0,
                        lr: float = 1.0) -> dict[str, Any]:
    """The :class:`~approxeq.approximate.FixedInput` keywords of the builders' options
    ``fixed_input_kind``, ``grid_levels``, ``grid_coarsest``, ``grid_finest``,
    ``grid_features``, ``grid_smoothness`` and ``fixed_input_lr`` (every approximate model
    takes them, with these defaults: the paper's MLP)."""
    return {"kind": kind, "grid_levels": levels, "grid_coarsest": coarsest,
            "grid_finest": finest, "grid_features": features, "grid_smoothness": smoothness,
            "lr_scale": lr}


#: default memory budget of a grid model's activations on its grid (MiB)
DEFAULT_MAX_GRID_MB = 8192.0


def check_grid_budget(model_name: str, lo: Sequence[float], hi: Sequence[float],
                      points_per_unit: float, cells: Sequence[int], batch: int,
                      values_per_point: int, itemsize: int, max_grid_mb: float) -> None:
    """Refuse a grid whose activations would exceed ``max_grid_mb`` before it is allocated.

    Args:
        model_name: for the message. lo, hi: the covered box, per axis (with the margin).
        points_per_unit: grid density. cells: grid points per axis. batch: tasks.
        values_per_point: activation values the model holds per grid point and task (an
            estimate over its layers). itemsize: bytes per value. max_grid_mb: the budget.
    """
    points = math.prod(cells)
    needed = batch * points * values_per_point * itemsize
    if needed > max_grid_mb * 2 ** 20:
        extent = " x ".join(f"[{a:.4g}, {b:.4g}]" for a, b in zip(lo, hi))
        raise ValueError(
            f"xc, xt: {model_name} would need a grid of {' x '.join(map(str, cells))} points "
            f"to cover the inputs' extent {extent} at points_per_unit = {points_per_unit:g}, "
            f"about {needed / 2 ** 30:.3g} GiB of activations for a batch of {batch}, over "
            f"max_grid_mb = {max_grid_mb:g}; predict far-apart targets in separate calls, "
            "lower points_per_unit, or raise max_grid_mb")
