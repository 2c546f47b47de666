"""The terrain experiment's view of what fixed inputs learned: the correction (full model minus
its equivariant component) against the true break ``β h⁺``, pooled over tasks, tracked over
training, and drawn whole on one patch for the map figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from approxeq.approximate import common_draws, equivariant_component
from approxeq.data.terrain import TerrainTaskGenerator
from approxeq.experiments.evaluation import to_model
from approxeq.np.batch import Batch
from approxeq.np.functional import evaluation_mode


@torch.no_grad()
def _means(model: nn.Module, xc: torch.Tensor, yc: torch.Tensor, xt: torch.Tensor,
           **kwargs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive means of ``model`` and of its equivariant component ``[b, nt, 1]``, in eval
    mode (in training mode fixed-input and auxiliary dropout would enter the correction) and
    with the same random draws (:func:`~approxeq.approximate.common_draws`), so that for a
    stochastic model the correction is the fixed inputs', not Monte-Carlo noise."""
    with evaluation_mode(model):
        with common_draws(0, xc.device):
            full = model(xc, yc, xt, **kwargs).mean
        with common_draws(0, xc.device), equivariant_component(model):
            comp = model(xc, yc, xt, **kwargs).mean
    return full, comp


def lapse_at(gen: TerrainTaskGenerator, x: torch.Tensor) -> np.ndarray:
    """``β h⁺`` (K) at normalised inputs ``x [..., 2]`` of ``gen``'s region."""
    lat, lon = gen.normaliser.unnormalise_x(x.detach().reshape(-1, 2).double().cpu().numpy())
    i, j = gen.topography.index(lat, lon)
    return gen.field.lapse_rate * gen.topography.height_km[i, j]


def _corrections(model: nn.Module, batches: Sequence[Batch]) -> np.ndarray:
    """The learned correction (full minus equivariant-component predictive mean) at every
    target of ``batches``, pooled, float64."""
    corr = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for b in batches:
            b = to_model(b, model)
            full, comp = _means(model, b.xc, b.yc, b.xt, **b.model_inputs())
            corr.append((full - comp).double().reshape(-1).cpu().numpy())
    return np.concatenate(corr)


def oracle_correction(gen: TerrainTaskGenerator, batch: Batch) -> np.ndarray:
    """The ideal correction at ``batch``'s targets: the exact GP oracle's predictive mean minus
    the terrain-blind GP's, in K. It is what knowing the terrain adds to what the context
    already tells, so it is *not* ``β h⁺``: the context reveals part of the terrain term."""
    xc, yc, xt = (v.detach().to("cpu", torch.float64) for v in (batch.xc, batch.yc, batch.xt))
    full = gen.exact_oracle.posterior(xc, yc, xt).mean
    blind = gen.blind_oracle.posterior(xc, yc, xt).mean
    return ((full - blind) * gen.field.y_scale).reshape(-1).numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def correction_lapse_correlation(model: nn.Module, batches: Sequence[Batch],
                                 gen: TerrainTaskGenerator) -> float:
    """Pearson correlation, pooled over the targets of ``batches``, between the learned
    correction (full minus equivariant-component predictive mean) and ``β h⁺`` (NaN when
    either is constant)."""
    return correction_correlations(model, batches, gen)["correction_lapse_corr"]


def correction_correlations(model: nn.Module, batches: Sequence[Batch],
                            gen: TerrainTaskGenerator) -> dict[str, float]:
    """The learned correction's Pearson correlations, pooled over the targets of ``batches``:
    ``correction_lapse_corr`` with ``β h⁺`` and ``correction_oracle_corr`` with the oracle's
    correction (:func:`oracle_correction`: what a perfect model's correction would be); NaN
    where either side is constant."""
    c = _corrections(model, batches)
    lapse = np.concatenate([lapse_at(gen, b.xt) for b in batches])
    ideal = np.concatenate([oracle_correction(gen, b) for b in batches])
    return {"correction_lapse_corr": _pearson(c, lapse),
            "correction_oracle_corr": _pearson(c, ideal)}


def fixed_input_progress(gen: TerrainTaskGenerator, seed: int
                         ) -> Callable[[nn.Module, Sequence[Batch]], dict[str, float]]:
    """What an approximate model's fixed inputs have learned, for each validation check of its
    training (``history.json``): ``component_loglik`` (the equivariant component's validation
    log-likelihood), ``fixed_input_gain`` (the full model's minus the component's) and
    ``correction_lapse_corr`` and ``correction_oracle_corr`` (:func:`correction_correlations`
    on the validation targets)."""

    def progress(model: nn.Module, batches: Sequence[Batch]) -> dict[str, float]:
        from approxeq.train.loop import evaluate

        full = evaluate(model, batches, seed=seed).summary()["loglik"]
        with equivariant_component(model):
            comp = evaluate(model, batches, seed=seed).summary()["loglik"]
        return {"component_loglik": comp, "fixed_input_gain": full - comp,
                **correction_correlations(model, batches, gen)}

    return progress


def map_panel(model: nn.Module, gen: TerrainTaskGenerator, corner: tuple[int, int], *,
              context_fraction: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """One patch drawn whole: a sample of the field on every cell, a random
    ``context_fraction`` of the cells as context, and the model's predictive means.

    Returns:
        ``lat [p]``, ``lon [p]`` (degrees) and ``[p, p]`` arrays in K: ``truth``, ``context``
        (truth at the context cells, NaN elsewhere), ``full``, ``component``,
        ``correction = full - component`` and ``lapse = β h⁺``; ``region``.
    """
    from approxeq.data.oracle import noisy_cholesky

    patch = gen.patch(corner)
    p = gen.patch_cells
    g = torch.Generator().manual_seed(seed)
    x64 = patch.x.double()[None]
    chol = noisy_cholesky(gen.exact_oracle.kernel, gen.field.noise, x64, gen.field.jitter)
    eps = torch.randn(1, p * p, 1, generator=g, dtype=torch.float64)
    y = gen.exact_oracle.mean_at(x64) + chol @ eps
    n_ctx = max(1, round(context_fraction * p * p))
    ctx = torch.randperm(p * p, generator=g)[:n_ctx]
    device_dtype = next(iter(model.parameters()), patch.x)
    x = patch.x[None].to(device_dtype.device, device_dtype.dtype)
    yd = y.to(x)
    kwargs = {}
    if int(getattr(model, "dim_aux", 0) or 0) and patch.aux is not None:
        aux = patch.aux[None].to(x)
        kwargs = {"aux_c": aux[:, ctx], "aux_t": aux}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        full, comp = _means(model, x[:, ctx], yd[:, ctx], x, **kwargs)
    scale = gen.field.y_scale

    def grid(v: torch.Tensor) -> np.ndarray:
        return v.reshape(p, p).double().cpu().numpy() * scale

    truth = grid(y)
    context = np.full(p * p, np.nan)
    context[ctx.numpy()] = truth.reshape(-1)[ctx.numpy()]
    return {"lat": patch.part.lat, "lon": patch.part.lon, "truth": truth,
            "context": context.reshape(p, p), "full": grid(full), "component": grid(comp),
            "correction": grid(full - comp), "lapse": patch.part.lapse,
            "region": gen.topography.name}


__all__ = ["lapse_at", "correction_correlations", "correction_lapse_correlation",
           "fixed_input_progress", "map_panel", "oracle_correction"]
