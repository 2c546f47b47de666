"""The equivariant component of an approximately equivariant model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from approxeq.approximate.fixed_inputs import SymmetryBreaking


def symmetry_breaking_modules(model: nn.Module) -> list[SymmetryBreaking]:
    """Every :class:`SymmetryBreaking` submodule of ``model`` (fixed inputs, relaxed weights)."""
    return [m for m in model.modules() if isinstance(m, SymmetryBreaking)]


def is_approximate(model: nn.Module) -> bool:
    """Whether ``model`` has any symmetry-breaking part."""
    return bool(symmetry_breaking_modules(model))


@contextmanager
def equivariant_component(model: nn.Module) -> Iterator[nn.Module]:
    """Inside this context every fixed input of ``model`` is zero, so ``model`` is exactly
    equivariant to ``model.symmetry``. State is restored on exit, also on exceptions; contexts
    nest. Yields ``model`` itself. For a model without fixed inputs this changes nothing.

    Example::

        with equivariant_component(model):
            pred_equivariant = model(xc, yc, xt)
    """
    modules = symmetry_breaking_modules(model)
    entered: list[SymmetryBreaking] = []
    try:
        for m in modules:
            m._push_zero()
            entered.append(m)
        yield model
    finally:
        for m in entered:
            m._pop_zero()


def regularization_loss(model: nn.Module) -> Tensor | None:
    """The sum of the regularisers of ``model``'s symmetry-breaking modules (a fixed input's
    grid smoothness penalty), to add to the training loss; ``None`` when none has one (the
    loss is then unchanged). :func:`~approxeq.np.np_loss` adds it."""
    terms = [t for m in symmetry_breaking_modules(model)
             if callable(getattr(m, "regularization", None))
             and (t := m.regularization()) is not None]
    return sum(terms[1:], terms[0]) if terms else None


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``model``: one group at ``lr`` and ``weight_decay`` with every
    parameter, unless a symmetry-breaking module asks for its own settings
    (``optimizer_overrides()``: a fixed input's learning-rate multiplier, no weight decay on a
    learned grid); those parameters then form extra groups. One group when nothing asks, so the
    optimiser (and its checkpoints) are as without this function."""
    special: dict[int, tuple[float, float]] = {}
    for m in symmetry_breaking_modules(model):
        overrides = getattr(m, "optimizer_overrides", None)
        for params, scale, decay in (overrides() if callable(overrides) else []):
            for p in params:
                special[id(p)] = (lr * scale, weight_decay if decay is None else decay)
    params = [p for p in model.parameters()]
    groups = [{"params": [p for p in params if id(p) not in special], "lr": lr,
               "weight_decay": weight_decay}]
    by_setting: dict[tuple[float, float], list[nn.Parameter]] = {}
    for p in params:
        if id(p) in special:
            by_setting.setdefault(special[id(p)], []).append(p)
    groups += [{"params": ps, "lr": g_lr, "weight_decay": g_wd}
               for (g_lr, g_wd), ps in by_setting.items()]
    return [g for g in groups if g["params"]] or groups[:1]
