"""Loss and evaluation functions for neural processes (model-agnostic)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from approxeq.np.batch import Batch


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over targets (dims 1..) per task; ``values`` is ``[batch, n_target, dim_y]``."""
    if mask is None:
        return values.flatten(1).mean(-1)
    m = mask.unsqueeze(-1).to(values.dtype).expand_as(values)
    return (values * m).flatten(1).sum(-1) / m.flatten(1).sum(-1).clamp_min(1)


def model_inputs(batch: Batch) -> dict:
    """Keyword inputs a model takes besides ``(xc, yc, xt)``: the auxiliary fields at context and
    target locations (``batch.aux_c``, ``batch.aux_t``) when the batch has them."""
    return batch.model_inputs()


def np_loss(model: torch.nn.Module, batch: Batch) -> Tensor:
    """Training loss: negative log-likelihood per target point, averaged over tasks.

    Returns a scalar tensor (differentiable).
    """
    if batch.yt is None:
        raise ValueError("batch.yt: the loss needs target outputs, got None")
    pred = model(batch.xc, batch.yc, batch.xt, **model_inputs(batch))
    return -_masked_mean(pred.log_prob(batch.yt), batch.mt).mean()


@dataclass
class EvalResult:
    """Per-task metrics of one model on a set of tasks, all float64 ``[n_tasks]`` tensors."""

    loglik: Tensor
    rmse: Tensor
    coverage: Tensor

    def summary(self) -> dict[str, float]:
        n = self.loglik.numel()
        se = lambda v: float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
        return {
            "loglik": float(self.loglik.mean()),
            "loglik_se": se(self.loglik),
            "rmse": float(self.rmse.mean()),
            "rmse_se": se(self.rmse),
            "coverage95": float(self.coverage.mean()),
            "n_tasks": n,
        }

    @staticmethod
    def cat(results: list["EvalResult"]) -> "EvalResult":
        return EvalResult(*(torch.cat([getattr(r, k) for r in results]) for k in ("loglik", "rmse", "coverage")))


def gaussian_metrics(mean: Tensor, std: Tensor, yt: Tensor, mt: Tensor | None = None) -> EvalResult:
    """Per-task metrics of a factorised Gaussian prediction, computed in float64.

    Args:
        mean, std: ``[batch, n_target, dim_y]``.
        yt: ``[batch, n_target, dim_y]``.
        mt: optional target mask ``[batch, n_target]``.
    """
    mean, std, yt = mean.double(), std.double(), yt.double()
    dist = Normal(mean, std)
    loglik = _masked_mean(dist.log_prob(yt), mt)
    rmse = _masked_mean((mean - yt) ** 2, mt).sqrt()
    z = 1.959963984540054
    inside = ((yt - mean).abs() <= z * std).to(torch.float64)
    coverage = _masked_mean(inside, mt)
    return EvalResult(loglik=loglik, rmse=rmse, coverage=coverage)


@torch.no_grad()
def np_evaluate(model: torch.nn.Module, batch: Batch) -> EvalResult:
    """Evaluate ``model`` on ``batch``: mean Gaussian log-likelihood per target point (float64),
    RMSE of the predictive mean and the coverage of the central 95% interval, per task."""
    if batch.yt is None:
        raise ValueError("batch.yt: evaluation needs target outputs, got None")
    pred: Distribution = model(batch.xc, batch.yc, batch.xt, **model_inputs(batch))
    return gaussian_metrics(pred.mean, pred.stddev, batch.yt, batch.mt)
