"""The fall-back of approximately equivariant models, as an assert and a contract check.

An approximate model's prediction for a task whose context and target locations all lie
beyond its fixed inputs' reach (:func:`approxeq.approximate.reach`: the ∞-norm distance from
their domain box beyond which they cannot act) is exactly its equivariant component's.
:func:`tasks_beyond_reach` builds such tasks, among them the hard ones: a context on both sides
of the domain, whose mean lies inside it, and an empty context;
:func:`assert_falls_back` compares the two predictions bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.approximate.component import equivariant_component
from approxeq.approximate.metrics import common_draws
from approxeq.approximate.reach import distance_to_box, fixed_input_domain, reach
from approxeq.testing.equivariance import random_task
from approxeq.testing.perturb import perturb_symmetry_breaking
from approxeq.testing.precision import precision

Task = tuple[Tensor, Tensor, Tensor]


def _beyond(n: int, box: Tensor, gap: float, sides: Tensor, generator: torch.Generator | None,
            batch: int, axis: int) -> Tensor:
    """``[batch, n, dim_x]`` points farther than ``gap`` from ``box`` along ``axis`` (below it
    where ``sides`` is 0, above where 1), uniform within the box along the other axes."""
    dx = box.shape[0]
    lo, hi = box[:, 0], box[:, 1]
    width = float((hi - lo).max())
    x = lo + (hi - lo) * torch.rand(batch, n, dx, generator=generator, dtype=box.dtype)
    out = gap + width * torch.rand(batch, n, generator=generator, dtype=box.dtype)
    x[..., axis] = torch.where(sides.bool(), hi[axis] + out, lo[axis] - out)
    return x


def tasks_beyond_reach(box: Tensor, reach_: float, dim_y: int, *, batch: int = 2, nc: int = 8,
                       nt: int = 6, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64) -> dict[str, Task]:
    """Tasks whose every location lies farther than ``reach_`` (plus a small gap) from ``box``
    ``[dim_x, 2]`` along some axis, by name: ``"both sides"`` (context and targets split across
    the two sides of the box along the first axis, so their mean lies inside it), ``"one
    side"`` (all beyond the last axis's low end) and ``"empty context"`` (targets on both
    sides).

    Shapes: each task is ``(xc [batch, nc, dim_x], yc [batch, nc, dim_y], xt [batch, nt,
    dim_x])`` (``nc = 0`` for ``"empty context"``).
    """
    if not math.isfinite(reach_) or reach_ < 0:
        raise ValueError(f"reach_: expected a finite number >= 0, got {reach_!r}")
    box = box.to(dtype)
    gap = reach_ + 1e-3 * (1.0 + reach_)
    last = box.shape[0] - 1

    def both(n: int) -> Tensor:
        sides = (torch.arange(n) % 2).expand(batch, n)
        return _beyond(n, box, gap, sides, generator, batch, 0)

    def one(n: int) -> Tensor:
        return _beyond(n, box, gap, torch.zeros(batch, n), generator, batch, last)

    def values(n: int) -> Tensor:
        return torch.randn(batch, n, dim_y, generator=generator, dtype=dtype)

    tasks = {"both sides": (both(nc), values(nc), both(nt)),
             "one side": (one(nc), values(nc), one(nt)),
             "empty context": (both(0), values(0), both(nt))}
    for name, (xc, _, xt) in tasks.items():  # the construction's own promise
        if not bool((distance_to_box(torch.cat([xc, xt], 1), box) > reach_).all()):
            raise RuntimeError(f"tasks_beyond_reach: the {name!r} task reaches the box")
    return tasks


def assert_falls_back(model: nn.Module, task: Task, *, seed: int = 0,
                      model_kwargs: dict[str, Any] | None = None, what: str = "") -> None:
    """Assert that ``model``'s prediction (predictive mean and std, in eval mode) for ``task``
    is exactly, bit for bit, its equivariant component's. Both passes draw the same random
    numbers (:func:`~approxeq.approximate.common_draws` with ``seed``), so a stochastic model
    is compared on equal terms."""
    xc, yc, xt = task
    kwargs = model_kwargs or {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            with common_draws(seed, xc.device):
                full = model(xc, yc, xt, **kwargs)
            with common_draws(seed, xc.device), equivariant_component(model):
                comp = model(xc, yc, xt, **kwargs)
    finally:
        model.train(was_training)
    for name, a, b in (("mean", full.mean, comp.mean), ("std", full.stddev, comp.stddev)):
        if not torch.equal(a, b):
            where = f" ({what})" if what else ""
            raise AssertionError(
                f"beyond the fixed inputs' reach{where} the predictive {name} differs from the "
                f"equivariant component's by up to {float((a - b).abs().max()):.3e}: the fixed "
                "inputs act farther than the model's fixed_input_reach says")


def check_fallback(case: Any, device: torch.device | None) -> None:
    """The contract check: float64, fixed inputs made non-zero; every task of
    :func:`tasks_beyond_reach` is predicted exactly as by the equivariant component, and a
    task inside the domain is not (so the check is not vacuous)."""
    with precision(torch.float64, seed=case.spec.seed) as gen:
        model = case.build().eval()
        perturb_symmetry_breaking(model, generator=gen)
        box = fixed_input_domain(model)
        if box is None:
            raise AssertionError("no FixedInput (no domain box) although the model is built as "
                                 "approximately equivariant")
        r = reach(model, torch.float64)
        if not math.isfinite(r):
            raise AssertionError(
                "the model's reach is unknown (inf): declare fixed_input_reach(dtype), how far "
                "from the domain box its fixed inputs can act (see approxeq.approximate.reach)")
        for name, task in tasks_beyond_reach(box, r, case.spec.dim_y, generator=gen).items():
            assert_falls_back(model, task, what=f"reach {r:.4g}, {name}")
        inside = random_task(2, 8, 6, case.spec.dim_x, case.spec.dim_y,
                             scale=case.spec.task_scale, generator=gen)
        try:
            assert_falls_back(model, inside)
        except AssertionError:
            return
        raise AssertionError("inside the domain box the fixed inputs change nothing: the "
                             "fall-back check would pass vacuously")


__all__ = ["assert_falls_back", "check_fallback", "tasks_beyond_reach"]
