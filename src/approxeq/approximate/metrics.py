"""Equivariance metrics: the orbit equivariance error of any model under any group, and the
gap Δequiv between an approximately equivariant model and its equivariant component."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from approxeq.approximate.component import equivariant_component
from approxeq.groups.base import Group

OutputAction = Callable[[Tensor, Tensor], Tensor]


@dataclass
class EquivarianceReport:
    """Errors ``|Φ(g·D)(g·x) − ρ(g) Φ(D)(x)|`` of the predictive mean and std per element ``g``.

    ``mean_err`` and ``std_err`` are ``[n_elements]`` tensors of the largest absolute error over
    the batch, targets and outputs; ``scale`` is the largest absolute predictive mean (to read
    the errors relative to). ``elements`` are the group elements tested.
    """

    group: str
    elements: Tensor
    mean_err: Tensor
    std_err: Tensor
    scale: float
    extra: dict = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return float(torch.maximum(self.mean_err.max(), self.std_err.max()))

    def table(self) -> str:
        """A plain-text table, one row per group element."""
        rows = [f"equivariance error under {self.group} (|mean| scale {self.scale:.3g})",
                f"{'element':>30}  {'mean err':>10}  {'std err':>10}"]
        for g, em, es in zip(self.elements, self.mean_err, self.std_err):
            gs = ", ".join(f"{v:.3g}" for v in g.flatten().tolist()[:6])
            rows.append(f"{gs:>30}  {float(em):10.3e}  {float(es):10.3e}")
        worst_mean, worst_std = float(self.mean_err.max()), float(self.std_err.max())
        rows.append(f"{'max':>30}  {worst_mean:10.3e}  {worst_std:10.3e}")
        return "\n".join(rows)

    def summary(self) -> dict[str, float]:
        return {"equiv_err_mean": float(self.mean_err.mean()), "equiv_err_max": self.max_error}


def _predict(model: nn.Module, xc: Tensor, yc: Tensor, xt: Tensor,
             model_kwargs: dict | None = None) -> tuple[Tensor, Tensor]:
    """The predictive mean and its spread: the std of a factorised prediction, the
    ``[b, nt, dy, dy]`` covariance of one with an event shape (a full covariance)."""
    pred = model(xc, yc, xt, **(model_kwargs or {}))
    if len(pred.event_shape):
        return pred.mean, pred.covariance_matrix
    return pred.mean, pred.stddev


def _act_covariance(act_y: OutputAction, g: Tensor, cov: Tensor) -> Tensor:
    """``ρ(g) Σ ρ(g)ᵀ`` for ``cov [b, n, d, d]``: ρ on every column, then on every row."""
    b, n, d, _ = cov.shape
    cols = act_y(g, cov.transpose(-1, -2).reshape(b, n * d, d))
    left = cols.reshape(b, n, d, d).transpose(-1, -2)
    return act_y(g, left.reshape(b, n * d, d)).reshape(b, n, d, d)


def _act_spread(act_y: OutputAction | None, g: Tensor, spread: Tensor) -> Tensor:
    """The spread a prediction on the moved task should have: a covariance ``[b, n, d, d]``
    moves to ``ρ(g) Σ ρ(g)ᵀ``; a factorised std ``[b, n, d]`` to the marginal stds of
    ``ρ(g) diag(σ²) ρ(g)ᵀ`` (unchanged, without an output action)."""
    if act_y is None:
        return spread
    if spread.dim() == 4:
        return _act_covariance(act_y, g, spread)
    moved = _act_covariance(act_y, g, torch.diag_embed(spread ** 2))
    return moved.diagonal(dim1=-2, dim2=-1).sqrt()


@torch.no_grad()
def equivariance_error(model: nn.Module, group: Group, xc: Tensor, yc: Tensor, xt: Tensor, *,
                       elements: Tensor | None = None, n_elements: int = 8,
                       generator: torch.Generator | None = None,
                       output_action: OutputAction | None = None,
                       model_kwargs: dict | None = None,
                       **sample_kwargs) -> EquivarianceReport:
    """Orbit equivariance error of a neural process ``model`` under ``group``.

    For each group element ``g`` (given, the whole group if finite and ``n_elements`` is ``None``,
    else ``n_elements`` random draws), compares the prediction on the transformed task
    ``(g·xc, ρ(g) yc, g·xt)`` with the transformed prediction ``ρ(g) Φ(xc, yc)(xt)``.
    Outputs are treated as scalar fields (ρ trivial) unless ``output_action(g, y)`` is given.
    With an ``output_action``, the std is compared with the marginal stds of
    ``ρ(g) diag(σ²) ρ(g)ᵀ``, and a prediction with a full covariance (event shape ``[dy]``) has
    its covariance compared with ``ρ(g) Σ ρ(g)ᵀ`` in place of the std.
    ``model_kwargs`` (e.g. auxiliary values ``aux_c``/``aux_t``) are passed unchanged: they are
    attached to the points and move with them.
    The same ``g`` acts on every task of the batch. Dropout-like randomness is removed by
    putting the model in eval mode for the duration (restored afterwards).

    Shapes: ``xc [b, nc, dx]``, ``yc [b, nc, dy]``, ``xt [b, nt, dx]``; ``elements
    [k, *group.element_shape]``.
    """
    if elements is None:
        if n_elements is None:
            elements = group.elements(dtype=xc.dtype, device=xc.device)
        else:
            elements = group.sample(n_elements, generator=generator, dtype=xc.dtype,
                                    device=xc.device, **sample_kwargs)
    act_y = output_action or (lambda g, y: y)
    was_training = model.training
    model.eval()
    try:
        mean, std = _predict(model, xc, yc, xt, model_kwargs)
        b = xc.shape[0]
        mean_errs, std_errs = [], []
        for g in elements:
            gb = g.unsqueeze(0).expand(b, *g.shape)
            m_g, s_g = _predict(model, group.act_points(gb, xc), act_y(gb, yc),
                                group.act_points(gb, xt),
                                model_kwargs)
            mean_errs.append((m_g - act_y(gb, mean)).abs().max())
            std_errs.append((s_g - _act_spread(output_action, gb, std)).abs().max())
    finally:
        model.train(was_training)
    return EquivarianceReport(group=repr(group), elements=elements.detach().cpu(),
                              mean_err=torch.stack(mean_errs).cpu(),
                              std_err=torch.stack(std_errs).cpu(),
                              scale=float(mean.abs().max()))


@torch.no_grad()
def context_permutation_error(model: nn.Module, xc: Tensor, yc: Tensor, xt: Tensor, *,
                              n_permutations: int = 4,
                              generator: torch.Generator | None = None) -> float:
    """Largest change of the predictive mean and std when the context points are reordered."""
    was_training = model.training
    model.eval()
    try:
        mean, std = _predict(model, xc, yc, xt)
        err = 0.0
        for _ in range(n_permutations):
            perm = torch.randperm(xc.shape[1], generator=generator)
            m_p, s_p = _predict(model, xc[:, perm], yc[:, perm], xt)
            err = max(err, float((m_p - mean).abs().max()), float((s_p - std).abs().max()))
    finally:
        model.train(was_training)
    return err


@contextmanager
def common_draws(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the body under a forked global RNG seeded with ``seed`` (on the CPU and, for a CUDA
    ``device``, on that device too); the caller's random stream is restored on exit.

    Two passes that each run under ``common_draws(seed)`` draw the same random numbers (common
    random numbers): a stochastic model (e.g. LPS-TNP, which samples group elements) then
    samples the same elements in both, so their difference is the model's, not Monte-Carlo
    noise. Use it around a model and its equivariant component wherever the two are compared.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def delta_equiv(model: nn.Module, xc: Tensor, yc: Tensor, xt: Tensor, *,
                seed: int | None = None, **model_kwargs) -> Tensor:
    """Δequiv per task: mean absolute difference between the predictive means of ``model`` and
    of its equivariant component, ``[batch]``. Zero for models without fixed inputs.

    Both passes run under :func:`common_draws` with the same seed, so a stochastic model (one
    that samples at evaluation, e.g. LPS-TNP's group elements) uses the same draws in both and
    Δequiv measures the fixed inputs alone: it is exactly 0 where they are. ``seed`` (default:
    one draw from the global RNG, so successive calls differ but stay reproducible under a
    seeded caller) seeds both passes; the caller's RNG advances by that one draw only.
    ``model_kwargs`` (e.g. ``aux_c``/``aux_t``) are passed to both passes.

    Shapes: ``xc [b, nc, dx]``, ``yc [b, nc, dy]``, ``xt [b, nt, dx]``; returns ``[b]``.
    """
    if seed is None:
        seed = int(torch.randint(0, 2 ** 62, ()))
    was_training = model.training
    model.eval()
    try:
        with common_draws(seed, xc.device):
            full = model(xc, yc, xt, **model_kwargs).mean
        with common_draws(seed, xc.device), equivariant_component(model):
            comp = model(xc, yc, xt, **model_kwargs).mean
    finally:
        model.train(was_training)
    return (full - comp).abs().flatten(1).mean(-1)
