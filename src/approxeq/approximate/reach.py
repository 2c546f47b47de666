"""How far a model's fixed inputs reach: the distance from their domain box beyond which a
prediction is exactly the equivariant component's.

A fixed input is exactly zero outside its domain box, but a model may carry its effect some
way out: a ConvCNP's convolutions and its decoder's set convolution spread the grid values the
fixed input changed, and a pseudo-token TNP evaluates its fixed input at pseudo-token locations
that need not be data locations. The **reach** ``r`` of a model is a bound on that distance,
in the ∞-norm (per axis): if every context and target location lies farther than ``r`` from
the domain box along some axis, the model's prediction is exactly (bit for bit) that of its
equivariant component. Each approximate model states its reach by construction (its
``fixed_input_reach(dtype)`` method; see ``docs/approximate-equivariance.md``), and the model
contract checks it (the ``fallback`` check of :mod:`approxeq.testing.contract`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from approxeq.approximate.fixed_inputs import FixedInput
from approxeq.nn.placement import model_dtype  # noqa: F401  (re-exported: models import it here)


def fixed_inputs(model: nn.Module) -> list[FixedInput]:
    """Every :class:`~approxeq.approximate.FixedInput` of ``model`` (relaxed convolutions'
    mixing weights included)."""
    return [m for m in model.modules() if isinstance(m, FixedInput)]


def fixed_input_domain(model: nn.Module) -> Tensor | None:
    """The box ``[dim_x, 2]`` (float64, ``(low, high)`` per axis) outside which every fixed
    input of ``model`` is zero: the bounding box of their domains. ``None`` without fixed
    inputs."""
    boxes = [m.domain.detach().double().cpu() for m in fixed_inputs(model)]
    if not boxes:
        return None
    stacked = torch.stack(boxes)  # [k, dim_x, 2]
    return torch.stack([stacked[..., 0].amin(0), stacked[..., 1].amax(0)], -1)


def reach(model: nn.Module, dtype: torch.dtype | None = None) -> float:
    """The reach of ``model``'s fixed inputs (see the module docstring), for predictions in
    ``dtype`` (default: the dtype of the model's first floating parameter; a grid model's reach
    depends on it, since its set convolutions' weights vanish at a dtype-dependent distance).

    Read from the model's ``fixed_input_reach`` (a method ``f(dtype) -> float`` or a number);
    a model without one has reach 0 if it has no fixed inputs, else ``inf`` (no guarantee).
    """
    dtype = dtype or model_dtype(model)
    declared = getattr(model, "fixed_input_reach", None)
    if callable(declared):
        return float(declared(dtype))
    if declared is not None:
        return float(declared)
    return 0.0 if not fixed_inputs(model) else math.inf


def distance_to_box(x: Tensor, box: Tensor) -> Tensor:
    """∞-norm distance of points ``x [..., dim_x]`` from the closed box ``[dim_x, 2]``:
    ``[...]``, zero inside it."""
    box = box.to(x)
    below = (box[:, 0] - x).clamp_min(0)
    above = (x - box[:, 1]).clamp_min(0)
    return torch.maximum(below, above).amax(-1)
