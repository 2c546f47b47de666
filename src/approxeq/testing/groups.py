"""Checks of a :class:`~approxeq.groups.Group` implementation: the group axioms on its element
tensors, and that its action on data is a group action."""

from __future__ import annotations

import torch
from torch import Tensor

from approxeq.groups.base import Group


def _same(group: Group, a: Tensor, b: Tensor, atol: float) -> bool:
    if group.integer_elements:
        return torch.equal(a.round().long(), b.round().long())
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=0)


def _require(ok: bool, group: Group, what: str) -> None:
    if not ok:
        raise AssertionError(f"{group!r}: {what}")


def assert_group_laws(group: Group, x: Tensor | None = None, *, kind: str = "points",
                      n: int = 16, generator: torch.Generator | None = None,
                      atol: float = 1e-10) -> None:
    """Assert, on ``n`` random elements in float64, that ``group`` satisfies the group axioms
    (associativity, identity, inverses, ``[n, *element_shape]`` element tensors) and that its
    action of ``kind`` on ``x`` is a group action: ``e·x = x`` and ``(gh)·x = g·(h·x)``.

    Args:
        group: the group to check.
        x: data of batch size ``n`` to act on (default: ``[n, 5, group.dim]`` random points).
        kind: how the group acts on ``x`` (see :meth:`~approxeq.groups.Group.act`).
        n: number of random elements. generator: their source (default a fixed seed).
        atol: tolerance of float comparisons.

    Raises:
        AssertionError: naming the law that fails.
    """
    gen = generator or torch.Generator().manual_seed(0)
    a, b, c = (group.sample(n, generator=gen, dtype=torch.float64) for _ in range(3))
    e = group.identity(n, dtype=torch.float64)
    shape = (n, *group.element_shape)
    _require(tuple(a.shape) == shape, group,
             f"sample({n}) has shape {tuple(a.shape)}, expected {shape} = [n, *element_shape]")
    _require(tuple(e.shape) == shape, group,
             f"identity({n}) has shape {tuple(e.shape)}, expected {shape}")
    _require(_same(group, group.compose(group.compose(a, b), c),
                   group.compose(a, group.compose(b, c)), atol), group,
             "compose is not associative: (ab)c != a(bc)")
    _require(_same(group, group.compose(e, a), a, atol)
             and _same(group, group.compose(a, e), a, atol), group,
             "identity is not neutral: ea != a or ae != a")
    _require(_same(group, group.compose(a, group.inverse(a)), e, atol)
             and _same(group, group.compose(group.inverse(a), a), e, atol), group,
             "inverse is not an inverse: a a⁻¹ != e")
    if x is None:
        if group.dim is None:
            raise ValueError(f"x: {group!r} acts on no R^d; give the data to act on")
        x = torch.randn(n, 5, group.dim, generator=gen, dtype=torch.float64)
    if x.shape[0] != n:
        raise ValueError(f"x: expected batch size n = {n}, got shape {tuple(x.shape)}")
    act = group.act
    _require(torch.allclose(act(e, x, kind), x, atol=atol, rtol=0), group,
             f"the identity moves {kind}: e·x != x")
    _require(torch.allclose(act(group.compose(a, b), x, kind), act(a, act(b, x, kind), kind),
                            atol=atol, rtol=0), group,
             f"the action on {kind} is not compatible with compose: (ab)·x != a·(b·x)")
    if group.finite:
        from approxeq.testing.equivariance import finite_order

        order = finite_order(group)
        if order is not None and order <= 1024:
            elements = group.elements(dtype=torch.float64)
            _require(elements.shape[0] == order, group,
                     f"elements() gives {elements.shape[0]} elements, expected {order}")
            _require(torch.unique(elements.reshape(order, -1), dim=0).shape[0] == order, group,
                     "elements() repeats an element")


__all__ = ["assert_group_laws"]
