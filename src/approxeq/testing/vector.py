"""The equivariance check of a model with vector outputs: ``f(g·D)(g·x) = ρ(g) f(D)(x)``.

:func:`vector_equivariance_error` measures it for any neural process with a ``y_rep``
(:class:`~approxeq.groups.OutputRep`) and a ``symmetry``: through
:func:`~approxeq.approximate.equivariance_error` with ``ρ = model.y_rep``, or, for a model that
samples group elements from noise it can move with the task (``forward_with_samples`` and
``transform_noise``, e.g. the LPS-TNP), with the noise draw moved by ``g`` so that the check is
exact rather than in distribution. :func:`assert_vector_equivariant` asserts it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from approxeq.approximate.metrics import equivariance_error
from approxeq.groups.base import Group
from approxeq.groups.representation import OutputRep, output_rep
from approxeq.testing.equivariance import Task, _check_task, elements_to_check
from approxeq.testing.precision import default_atol


def _marginal_std(rep: OutputRep, group: Group, g: Tensor, std: Tensor) -> Tensor:
    cov = rep.act_covariance(group, g, torch.diag_embed(std ** 2))
    return cov.diagonal(dim1=-2, dim2=-1).sqrt()


@torch.no_grad()
def _moved_noise_error(model: nn.Module, group: Group, task: Task, elements: Tensor,
                       rep: OutputRep, generator: torch.Generator) -> float:
    xc, yc, xt = task
    was_training = model.training
    model.eval()
    try:
        out = model.forward_with_samples(xc, yc, xt, generator=generator)
        mean, std = out.distribution.mean, out.distribution.stddev
        err = 0.0
        for g in elements:
            gb = g.unsqueeze(0).expand(xc.shape[0], *g.shape)
            moved = model.forward_with_samples(
                group.act_points(gb, xc), rep.act(group, gb, yc), group.act_points(gb, xt),
                noise=model.transform_noise(gb, out.noise))
            err = max(err, float((moved.distribution.mean - rep.act(group, gb, mean)).abs().max()),
                      float((moved.distribution.stddev
                             - _marginal_std(rep, group, gb, std)).abs().max()))
    finally:
        model.train(was_training)
    return err


def vector_equivariance_error(model: nn.Module, task: Task, *, group: Group | None = None,
                              elements: Tensor | None = None, n_elements: int = 6,
                              generator: torch.Generator | None = None,
                              **sample_kwargs: Any) -> float:
    """The largest ``|f(g·D)(g·x) − ρ(g) f(D)(x)|`` of the predictive mean and spread over
    the tested elements (see the module docstring).

    Args:
        model: a neural process with ``symmetry`` and ``y_rep`` (scalars when absent).
        task: ``(xc [b, nc, 2], yc [b, nc, dim_y], xt [b, nt, 2])``.
        group: default ``model.symmetry``. elements: ``[k, *group.element_shape]`` to test
            (default: the whole group if small and finite, else ``n_elements`` draws).
        generator: for the draws (a fixed seed without one); sample_kwargs: to
            :meth:`~approxeq.groups.Group.sample`.
    """
    task = _check_task(task)
    group = group or model.symmetry
    if group is None:
        raise ValueError(f"group: {type(model).__name__} has no symmetry; pass group=")
    rep = output_rep(model)
    gen = generator or torch.Generator().manual_seed(7)
    if elements is None:
        elements = elements_to_check(group, n_elements=n_elements, generator=gen,
                                     dtype=task[0].dtype, device=task[0].device, **sample_kwargs)
    if hasattr(model, "transform_noise") and hasattr(model, "forward_with_samples"):
        return _moved_noise_error(model, group, task, elements, rep, gen)
    action = None if rep.is_scalar else rep.action(group)
    return equivariance_error(model, group, *task, elements=elements,
                              output_action=action).max_error


def assert_vector_equivariant(model: nn.Module, task: Task, *, atol: float | None = None,
                              **kwargs: Any) -> float:
    """Assert :func:`vector_equivariance_error` ``<= atol`` (default :func:`default_atol` of
    the task's dtype); returns the error. Arguments as :func:`vector_equivariance_error`."""
    task = _check_task(task)
    atol = default_atol(task[0].dtype) if atol is None else atol
    err = vector_equivariance_error(model, task, **kwargs)
    if not err <= atol:
        name = getattr(model, "model_name", None) or type(model).__name__
        raise AssertionError(f"not equivariant: {name} with y_rep {output_rep(model).name}: "
                             f"largest error {err:.3e} > atol {atol:.1e}")
    return err
