"""The one reusable equivariance checker for tests (wraps approxeq.approximate.metrics)."""

from __future__ import annotations

import torch

from approxeq.approximate import context_permutation_error, equivariance_error
from approxeq.groups import Group


def random_task(batch=2, nc=10, nt=12, dim_x=1, dim_y=1, *, scale=2.0, dtype=None, generator=None):
    dtype = dtype or torch.get_default_dtype()
    g = generator or torch.Generator().manual_seed(0)
    xc = (torch.rand(batch, nc, dim_x, generator=g, dtype=dtype) * 2 - 1) * scale
    yc = torch.randn(batch, nc, dim_y, generator=g, dtype=dtype)
    xt = (torch.rand(batch, nt, dim_x, generator=g, dtype=dtype) * 2 - 1) * scale
    return xc, yc, xt


def assert_equivariant(model, group: Group, task, *, atol=1e-8, n_elements=6, generator=None,
                       output_action=None, **kw):
    """Assert that ``model`` is equivariant to ``group`` on ``task``; return the report."""
    report = equivariance_error(model, group, *task, n_elements=n_elements,
                                generator=generator or torch.Generator().manual_seed(7),
                                output_action=output_action, **kw)
    assert report.max_error <= atol, "not equivariant:\n" + report.table()
    return report


def assert_not_equivariant(model, group: Group, task, *, margin=1e-3, n_elements=6, generator=None,
                           output_action=None, **kw):
    """Assert that ``model`` is measurably *not* equivariant (error above ``margin``)."""
    report = equivariance_error(model, group, *task, n_elements=n_elements,
                                generator=generator or torch.Generator().manual_seed(7),
                                output_action=output_action, **kw)
    assert report.max_error > margin, "unexpectedly equivariant:\n" + report.table()
    return report


def assert_context_permutation_invariant(model, task, *, atol=1e-8):
    err = context_permutation_error(model, *task, generator=torch.Generator().manual_seed(3))
    assert err <= atol, f"prediction changed by {err:.3e} when context points were reordered"


def module_equivariance_gap(fn, group: Group, g, inputs, in_kinds, out_kind) -> float:
    """``max |fn(g·x) − g·fn(x)|`` for any callable on inputs whose group action is declared by
    kind (``points``, ``vectors``, ``nodes``, ``adjacency``, ``grid``, ``invariant``)."""
    moved = [group.act(g, x, kind) for x, kind in zip(inputs, in_kinds)]
    return (fn(*moved) - group.act(g, fn(*inputs), out_kind)).abs().max().item()
