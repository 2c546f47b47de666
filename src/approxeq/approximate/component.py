"""The equivariant component of an approximately equivariant model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

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
