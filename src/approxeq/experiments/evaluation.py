"""The one evaluation path of every neural-process experiment: the model's own metrics, its
equivariant component's, Δequiv and the orbit equivariance error, all under a forked RNG seeded
per call and with the batch's auxiliary inputs passed to the model."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.approximate import (
    delta_equiv,
    equivariance_error,
    equivariant_component,
    is_approximate,
)
from approxeq.groups.representation import output_rep
from approxeq.np.batch import Batch
from approxeq.np.functional import EvalResult, TargetChunked, evaluation_mode, gaussian_metrics
from approxeq.train.loop import evaluate


def mean_se(v: Tensor) -> tuple[float, float]:
    """Mean and standard error (NaN for one value) of the values of ``v`` (any shape)."""
    v = v.double().reshape(-1)
    n = v.numel()
    return float(v.mean()), (float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan"))


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of ``model``'s first parameter (CPU and the default dtype
    for a model without parameters)."""
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def to_model(batch: Batch, model: nn.Module) -> Batch:
    """``batch`` moved to ``model``'s device and cast to its dtype (auxiliary inputs included)."""
    device, dtype = model_device_dtype(model)
    return batch.to(device=device, dtype=dtype)


def oracle_metrics(batches: Sequence[Batch], *, key: str = "gt", oracle_key: str = "oracle",
                   y_scale: float | None = None) -> dict[str, float] | None:
    """The metrics of a reference predictive that a batch carries in its ``meta``:
    ``loglik`` (± ``loglik_se``) from ``meta[f"{key}_loglik"]`` (float64 ``[b]``); ``rmse``
    (± ``rmse_se``) from ``meta[f"{key}_rmse"]`` when every batch has it, and
    ``coverage95`` (and else ``rmse``) from the moment-matched predictive of
    ``meta[oracle_key]`` when that has a ``posterior``. ``None`` when a batch has no
    ``f"{key}_loglik"``.

    The default is the exact oracle; ``key="blind", oracle_key="blind_oracle"`` scores the
    terrain-blind reference of :class:`approxeq.data.terrain.TerrainTaskGenerator`.
    ``y_scale`` (output units per normalised unit) adds ``rmse_K`` and ``rmse_K_se``.
    """
    name = f"{key}_loglik"
    if not batches or not all(b.meta and name in b.meta for b in batches):
        return None
    ll = torch.cat([b.meta[name].double().reshape(-1) for b in batches])
    mean, se = mean_se(ll)
    out: dict[str, float] = {"loglik": mean, "loglik_se": se, "n_tasks": ll.numel()}
    if all(oracle_key in b.meta and hasattr(b.meta[oracle_key], "posterior") for b in batches):
        results = []
        for b in batches:
            post = b.meta[oracle_key].posterior(b.xc.double(), b.yc.double(), b.xt.double())
            results.append(gaussian_metrics(post.mean, post.var.clamp_min(0).sqrt(), b.yt, b.mt))
        s = EvalResult.cat(results).summary()
        out.update(rmse=s["rmse"], rmse_se=s["rmse_se"], coverage95=s["coverage95"])
    if all(f"{key}_rmse" in b.meta for b in batches):
        # the batch's own per-task RMSE is exact (float64), so it wins over the recomputation
        out["rmse"], out["rmse_se"] = mean_se(torch.cat(
            [b.meta[f"{key}_rmse"].double().reshape(-1) for b in batches]))
    if y_scale is not None and "rmse" in out:
        out["rmse_K"], out["rmse_K_se"] = out["rmse"] * y_scale, out["rmse_se"] * y_scale
    return out


def evaluate_model(model: nn.Module, batches: Sequence[Batch], *, equivariance_elements: int = 4,
                   equivariance_tasks: int = 8, seed: int = 0,
                   y_scale: float | None = None) -> dict[str, Any]:
    """Every metric of one neural process on one fixed set of tasks.

    Args:
        model: ``forward(xc, yc, xt, **batch.model_inputs())``; batches are moved to its
            device and dtype (auxiliary inputs ``aux_c [b, nc, dim_aux]``/``aux_t [b, nt,
            dim_aux]`` included).
        batches: the tasks; ``equivariance_tasks`` tasks of the first batch and
            ``equivariance_elements`` random group elements give the orbit equivariance error
            (0 elements: none).
        seed: every stochastic part runs under a forked RNG seeded with it.
        y_scale: the standard deviation of the outputs in their own units; when given, RMSEs
            and Δequiv are also reported in those units (``rmse_K``, ``delta_equiv_K``).

    Returns:
        ``loglik``, ``loglik_se``, ``rmse``, ``rmse_se``, ``coverage95``, ``n_tasks``; for
        approximately equivariant models ``component`` (the same metrics of the equivariant
        component), ``component_loglik``, ``component_loglik_se``, ``delta_equiv``,
        ``delta_equiv_se``; for models with a ``symmetry``, ``equivariance`` (``group``,
        ``equiv_err_mean``, ``equiv_err_max``, ``scale`` and, for approximate models,
        ``component_equiv_err_max``). The model's training mode is left as it was.
    """
    def summary(result: EvalResult) -> dict[str, Any]:
        s = result.summary()
        if y_scale is not None:
            s["rmse_K"], s["rmse_K_se"] = s["rmse"] * y_scale, s["rmse_se"] * y_scale
        return s

    # predictions in eval mode whatever mode the caller left the model in; restored on exit
    with evaluation_mode(model):
        out = summary(evaluate(model, batches, seed=seed))
        approximate = is_approximate(model)
        # the same modules, called on bounded chunks of targets, so memory stays linear in them
        chunked = TargetChunked(model)
        if approximate:
            with equivariant_component(model):
                comp = summary(evaluate(model, batches, seed=seed))
            out["component"] = comp
            out["component_loglik"] = comp["loglik"]
            out["component_loglik_se"] = comp["loglik_se"]
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                deltas = torch.cat([delta_equiv(chunked, b.xc, b.yc, b.xt, **b.model_inputs())
                                    .double().cpu() for b in (to_model(b, model) for b in batches)])
            out["delta_equiv"], out["delta_equiv_se"] = mean_se(deltas)
            if y_scale is not None:
                out["delta_equiv_K"] = out["delta_equiv"] * y_scale
        group = getattr(model, "symmetry", None)
        if group is not None and equivariance_elements > 0:
            b = to_model(batches[0], model)
            k = min(equivariance_tasks, b.batch_size)
            kwargs = {key: v[:k] for key, v in b.model_inputs().items()}
            task = (b.xc[:k], b.yc[:k], b.xt[:k])

            rep = output_rep(model)  # vectors turn with the scene; scalars: no action
            action = None if rep.is_scalar else rep.action(group)

            def report():
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    return equivariance_error(chunked, group, *task,
                                              n_elements=equivariance_elements,
                                              generator=torch.Generator().manual_seed(seed),
                                              output_action=action, model_kwargs=kwargs)

            full = report()
            eq = {"group": repr(group), **full.summary(), "scale": full.scale}
            if approximate:
                with equivariant_component(model):
                    eq["component_equiv_err_max"] = report().max_error
            out["equivariance"] = eq
        return out


def metrics_entry(per_setting: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any]) -> dict:
    """A metrics.json entry: the first setting's headline numbers at the top level (so every
    entry has ``loglik`` and ``loglik_se``), then ``extra``, then one dict per setting."""
    first = next(iter(per_setting.values()))
    entry = {k: first[k] for k in ("loglik", "loglik_se", "rmse", "coverage95") if k in first}
    if "component_loglik" in first:
        entry["component_loglik"] = first["component_loglik"]
        entry["delta_equiv"] = first["delta_equiv"]
    entry.update(extra)
    entry.update({s: dict(v) for s, v in per_setting.items()})
    return entry


__all__ = ["evaluate_model", "mean_se", "metrics_entry", "model_device_dtype", "oracle_metrics",
           "to_model"]
