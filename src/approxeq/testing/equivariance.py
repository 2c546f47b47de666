"""Equivariance asserts for neural processes and for any callable on group-acted inputs.

Every assert returns what it measured (an :class:`~approxeq.approximate.EquivarianceReport` or a
float) and, on failure, raises an ``AssertionError`` whose message holds the per-element error
table, the tolerance and the dtype, so a failing test says *which* group elements break the
symmetry and by how much.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.approximate.metrics import (
    EquivarianceReport,
    OutputAction,
    context_permutation_error,
    equivariance_error,
)
from approxeq.groups.base import Group
from approxeq.groups.representation import OutputRep
from approxeq.testing.precision import default_atol

Task = tuple[Tensor, Tensor, Tensor]

#: a finite group with at most this many elements is tested on every element
MAX_ENUMERATED = 64


def random_task(batch: int = 2, nc: int = 10, nt: int = 12, dim_x: int = 1, dim_y: int = 1, *,
                scale: float = 2.0, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> Task:
    """A random regression task ``(xc, yc, xt)``: inputs uniform on ``[-scale, scale]^dim_x``,
    outputs standard normal.

    Shapes: ``xc [batch, nc, dim_x]``, ``yc [batch, nc, dim_y]``, ``xt [batch, nt, dim_x]``.
    ``nc = 0`` gives an empty context set. Without a ``generator`` a fixed seed is used, so the
    same call gives the same task. ``dtype`` defaults to torch's default dtype.
    """
    for name, value, low in (("batch", batch, 1), ("nc", nc, 0), ("nt", nt, 0),
                             ("dim_x", dim_x, 1), ("dim_y", dim_y, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    dtype = dtype or torch.get_default_dtype()
    g = generator or torch.Generator().manual_seed(0)
    xc = (torch.rand(batch, nc, dim_x, generator=g, dtype=dtype) * 2 - 1) * scale
    yc = torch.randn(batch, nc, dim_y, generator=g, dtype=dtype)
    xt = (torch.rand(batch, nt, dim_x, generator=g, dtype=dtype) * 2 - 1) * scale
    return xc.to(device), yc.to(device), xt.to(device)


def finite_order(group: Group) -> int | None:
    """The number of elements of a finite ``group`` when it can be told without enumerating
    them, else ``None`` (infinite groups, or finite groups of unknown size). A finite group of
    your own tells it with an int attribute or property ``size``."""
    if not group.finite:
        return None
    factors = getattr(group, "factors", None)
    if factors is not None:
        orders = [finite_order(f) for f in factors]
        return None if any(o is None for o in orders) else math.prod(orders)  # type: ignore[misc]
    size = getattr(group, "size", None)
    if isinstance(size, int):
        return size
    if hasattr(group, "height") and hasattr(group, "width"):
        return int(group.height) * int(group.width)
    n = getattr(group, "n", None)
    if isinstance(n, int):
        return math.factorial(n)
    return None


def elements_to_check(group: Group, *, n_elements: int = 6,
                      generator: torch.Generator | None = None,
                      dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                      max_enumerated: int = MAX_ENUMERATED, **sample_kwargs: Any) -> Tensor:
    """The group elements an equivariance check uses: every element of a finite group of at
    most ``max_enumerated`` elements, else ``n_elements`` random draws (``sample_kwargs`` go to
    :meth:`~approxeq.groups.Group.sample`, e.g. ``scale`` for translations).

    Returns ``[k, *group.element_shape]``.
    """
    order = finite_order(group)
    if order is not None and order <= max_enumerated:
        return group.elements(dtype=dtype, device=device)
    return group.sample(n_elements, generator=generator, dtype=dtype, device=device,
                        **sample_kwargs)


def _describe(model: Any, group: Group, task: Task) -> str:
    name = getattr(model, "model_name", None) or type(model).__name__
    return f"{name} under {group!r} (inputs {task[0].dtype}, on {task[0].device})"


def _float32_hint(task: Task, atol: float) -> str:
    if task[0].dtype != torch.float64 and atol < default_atol(torch.float32):
        return ("\nhint: inputs are not float64; rounding alone gives errors near 1e-6 — run the "
                "check in float64 (see approxeq.testing.precision)")
    return ""


#: what ``output_action`` may be: ``ρ`` as a function ``(g, y) -> ρ(g) y``, an
#: :class:`~approxeq.groups.OutputRep`, or a ``y_rep`` value (``"vector"``, ``["vector",
#: "scalar"]``, ...) that names one
OutputActionLike = OutputAction | OutputRep | str | Sequence[str]


def output_action_for(output_action: OutputActionLike | None, group: Group,
                      task: Task) -> OutputAction | None:
    """The function ``(g, y) -> ρ(g) y`` that ``output_action`` stands for (``None``, scalar
    outputs, stays ``None``); a representation is checked against the task's ``dim_x`` and
    ``dim_y``."""
    if output_action is None or callable(output_action) and not isinstance(output_action,
                                                                           OutputRep):
        return output_action
    rep = OutputRep.parse(output_action, task[0].shape[-1], task[1].shape[-1])
    return None if rep.is_scalar else rep.action(group)


def _check_task(task: Any) -> Task:
    if not isinstance(task, (tuple, list)) or len(task) != 3:
        raise ValueError(f"task: expected a tuple (xc, yc, xt), got {type(task).__name__}"
                         + (f" of length {len(task)}" if isinstance(task, (tuple, list)) else ""))
    return tuple(task)  # type: ignore[return-value]


def assert_equivariant(model: nn.Module, group: Group, task: Task, *, atol: float | None = None,
                       n_elements: int = 6, generator: torch.Generator | None = None,
                       output_action: OutputActionLike | None = None,
                       elements: Tensor | None = None, model_kwargs: dict | None = None,
                       **sample_kwargs: Any) -> EquivarianceReport:
    """Assert that the neural process ``model`` is equivariant to ``group`` on ``task``.

    Compares ``model(g·xc, ρ(g) yc, g·xt)`` with ``ρ(g) model(xc, yc, xt)`` (predictive mean and
    standard deviation) for every element of a small finite group, or for ``n_elements`` random
    elements (or the given ``elements``); see :func:`~approxeq.approximate.equivariance_error`.

    Args:
        model: ``forward(xc, yc, xt, **model_kwargs)`` returns a distribution with batch shape
            ``[b, nt, dim_y]``.
        group: e.g. ``model.symmetry``.
        task: ``(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x])``, e.g. from
            :func:`random_task`.
        atol: largest absolute error allowed; default :func:`default_atol` of the task's dtype
            (1e-8 in float64).
        n_elements, generator, sample_kwargs: how random elements are drawn (a fixed seed
            without a generator).
        output_action: the action ``ρ`` on outputs (and context values): a function
            ``(g, y [b, n, dim_y]) -> ρ(g) y``, an :class:`~approxeq.groups.OutputRep`, or a
            ``y_rep`` value such as ``"vector"`` or ``["vector", "scalar"]`` (for a model,
            ``model.y_rep``). Default: scalar outputs (``ρ`` trivial). With an action, the
            predictive std is compared with the marginal stds of ``ρ(g) diag(σ²) ρ(g)ᵀ``, and a
            full covariance with ``ρ(g) Σ ρ(g)ᵀ``.
        elements: ``[k, *group.element_shape]`` elements to test instead.
        model_kwargs: extra forward arguments passed unchanged (e.g. ``aux_c``/``aux_t``).

    Returns:
        The :class:`~approxeq.approximate.EquivarianceReport`.

    Raises:
        AssertionError: with the per-element error table if an error exceeds ``atol``.
    """
    task = _check_task(task)
    atol = default_atol(task[0].dtype) if atol is None else atol
    if elements is None:
        elements = elements_to_check(group, n_elements=n_elements,
                                     generator=generator or torch.Generator().manual_seed(7),
                                     dtype=task[0].dtype, device=task[0].device,
                                     **sample_kwargs)
    report = equivariance_error(model, group, *task, elements=elements,
                                output_action=output_action_for(output_action, group, task),
                                model_kwargs=model_kwargs)
    if not report.max_error <= atol:
        raise AssertionError(f"not equivariant: {_describe(model, group, task)}: largest error "
                             f"{report.max_error:.3e} > atol {atol:.1e}\n{report.table()}"
                             + _float32_hint(task, atol))
    return report


def assert_not_equivariant(model: nn.Module, group: Group, task: Task, *, margin: float = 1e-3,
                           n_elements: int = 6, generator: torch.Generator | None = None,
                           output_action: OutputActionLike | None = None,
                           elements: Tensor | None = None, model_kwargs: dict | None = None,
                           **sample_kwargs: Any) -> EquivarianceReport:
    """Assert that ``model`` is measurably *not* equivariant to ``group`` on ``task``: the
    largest error over the tested elements exceeds ``margin``. Arguments as
    :func:`assert_equivariant`; use it to show that a symmetry-breaking part does break the
    symmetry, or that a test of equivariance is not passing vacuously.

    Raises:
        AssertionError: with the error table if every error is at most ``margin``.
    """
    task = _check_task(task)
    if elements is None:
        elements = elements_to_check(group, n_elements=n_elements,
                                     generator=generator or torch.Generator().manual_seed(7),
                                     dtype=task[0].dtype, device=task[0].device,
                                     **sample_kwargs)
    report = equivariance_error(model, group, *task, elements=elements,
                                output_action=output_action_for(output_action, group, task),
                                model_kwargs=model_kwargs)
    if not report.max_error > margin:
        raise AssertionError(f"unexpectedly equivariant: {_describe(model, group, task)}: "
                             f"largest error {report.max_error:.3e} <= margin {margin:.1e}\n"
                             f"{report.table()}")
    return report


def assert_context_permutation_invariant(model: nn.Module, task: Task, *,
                                         atol: float | None = None, n_permutations: int = 4,
                                         generator: torch.Generator | None = None) -> float:
    """Assert that reordering the context points leaves the prediction unchanged (every neural
    process is a function of the context *set*). ``task`` as :func:`assert_equivariant`;
    ``atol`` defaults to :func:`default_atol` of the task's dtype. Returns the largest change.
    """
    task = _check_task(task)
    atol = default_atol(task[0].dtype) if atol is None else atol
    err = context_permutation_error(model, *task, n_permutations=n_permutations,
                                    generator=generator or torch.Generator().manual_seed(3))
    if not err <= atol:
        name = getattr(model, "model_name", None) or type(model).__name__
        raise AssertionError(f"{name}: prediction changed by {err:.3e} (> atol {atol:.1e}) when "
                             f"the {task[0].shape[1]} context points were reordered"
                             + _float32_hint(task, atol))
    return err


def module_equivariance_gap(fn: Callable[..., Tensor], group: Group, g: Tensor,
                            inputs: Sequence[Tensor], in_kinds: Sequence[str],
                            out_kind: str) -> float:
    """``max |fn(g·x) − g·fn(x)|`` for any callable on inputs whose group action is declared by
    kind (``"points"``, ``"vectors"``, ``"nodes"``, ``"mask"``, ``"adjacency"``, ``"grid"``,
    ``"invariant"``; see :meth:`~approxeq.groups.Group.act`).

    Shapes: ``g [b, *group.element_shape]``; each input has batch size ``b``; ``fn``'s output
    is acted on as ``out_kind``.
    """
    if len(inputs) != len(in_kinds):
        raise ValueError(f"in_kinds: expected one kind per input ({len(inputs)}), "
                         f"got {len(in_kinds)}")
    moved = [group.act(g, x, kind) for x, kind in zip(inputs, in_kinds)]
    return (fn(*moved) - group.act(g, fn(*inputs), out_kind)).abs().max().item()


__all__ = [
    "MAX_ENUMERATED",
    "Task",
    "assert_context_permutation_invariant",
    "assert_equivariant",
    "assert_not_equivariant",
    "elements_to_check",
    "finite_order",
    "module_equivariance_gap",
    "output_action_for",
    "random_task",
]
