"""The data of the vector-GP figures: one in-region task on a grid of targets, with the truth,
the oracle's mean, every model's mean and, for approximate models, the learned correction beside
the pinned flow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from approxeq.approximate import equivariant_component, is_approximate
from approxeq.data.vector_gp import VectorGPOracle, Vortex, matrix_kernel
from approxeq.experiments.evaluation import model_device_dtype
from approxeq.np.functional import evaluation_mode


def _flow(o: Mapping[str, Any]) -> Vortex | None:
    f = o["flow"]
    return None if f is None else Vortex(tuple(f["centre"]), f["radius"], f["strength"])


def draw_field(o: Mapping[str, Any], xc: Tensor, xg: Tensor, generator: torch.Generator
               ) -> tuple[Tensor, Tensor]:
    """One draw of the task's field, float64: noisy context values ``yc [1, nc, 2]`` at ``xc``
    and the noise-free field ``m + f`` at ``xg [1, ng, 2]``, jointly."""
    kernel = matrix_kernel(o["kernel"], o["lengthscale"], o["variance"])
    x = torch.cat([xc, xg], 1)
    gram = kernel.gram(x, x)
    gram = gram + 1e-6 * torch.eye(gram.shape[-1], dtype=gram.dtype)
    eps = torch.randn(1, gram.shape[-1], 1, generator=generator, dtype=torch.float64)
    f = (torch.linalg.cholesky(gram) @ eps).reshape(1, -1, 2)
    flow = _flow(o)
    if flow is not None:
        f = f + flow(x)
    nc = xc.shape[1]
    noise = o["noise_std"] * torch.randn(1, nc, 2, generator=generator, dtype=torch.float64)
    return f[:, :nc] + noise, f[:, nc:]


@torch.no_grad()
def _mean(model: nn.Module, xc: Tensor, yc: Tensor, xg: Tensor) -> np.ndarray:
    device, dtype = model_device_dtype(model)
    args = (t.to(device=device, dtype=dtype) for t in (xc, yc, xg))
    return model(*args).mean[0].double().cpu().numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vector fields on the same points (flattened); NaN when one is zero."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float((a * b).sum() / (na * nb)) if na > 0 and nb > 0 else float("nan")


def figure_panel(o: Mapping[str, Any], models: Mapping[str, nn.Module], *, seed: int = 0,
                 n_context: int = 24, grid: int = 13) -> dict[str, Any]:
    """The figure data of one in-region task (checked task options ``o``, see
    :func:`~approxeq.experiments.studies.vector_gp.study.task_options`): ``n_context`` context
    points drawn uniformly in the region and a ``grid × grid`` grid of targets over it.

    Returns:
        ``x [grid², 2]``, ``xc [nc, 2]``, ``yc [nc, 2]``, ``truth`` (the noise-free field),
        ``oracle`` (its posterior mean), ``flow`` (the pinned flow; zeros without one), all
        numpy float64 ``[grid², 2]`` unless said; ``region``; ``models[label]``: ``mean`` and,
        for approximate models, ``component``, ``correction`` (mean − component) and
        ``flow_cosine`` (cosine of the correction with the flow over the grid).
    """
    gen = torch.Generator().manual_seed(seed)
    (x0, x1), (y0, y1) = o["region"]
    lo = torch.tensor([x0, y0], dtype=torch.float64)
    span = torch.tensor([x1 - x0, y1 - y0], dtype=torch.float64)
    xc = (lo + span * torch.rand(1, n_context, 2, generator=gen, dtype=torch.float64))
    a, b = torch.linspace(x0, x1, grid, dtype=torch.float64), torch.linspace(
        y0, y1, grid, dtype=torch.float64)
    gx, gy = torch.meshgrid(a, b, indexing="xy")
    xg = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)[None]
    yc, truth = draw_field(o, xc, xg, gen)
    flow = _flow(o)
    oracle = VectorGPOracle(matrix_kernel(o["kernel"], o["lengthscale"], o["variance"]),
                            o["noise_std"], flow).posterior(xc, yc, xg).mean
    panel: dict[str, Any] = {
        "x": xg[0].numpy(), "xc": xc[0].numpy(), "yc": yc[0].numpy(),
        "truth": truth[0].numpy(), "oracle": oracle[0].numpy(),
        "flow": (torch.zeros_like(xg) if flow is None else flow(xg))[0].numpy(),
        "region": [list(r) for r in o["region"]], "has_flow": flow is not None, "models": {}}
    for label, model in models.items():
        with evaluation_mode(model):
            entry: dict[str, Any] = {"mean": _mean(model, xc, yc, xg)}
            if is_approximate(model):
                with equivariant_component(model):
                    entry["component"] = _mean(model, xc, yc, xg)
                entry["correction"] = entry["mean"] - entry["component"]
                entry["flow_cosine"] = _cosine(entry["correction"], panel["flow"])
        panel["models"][label] = entry
    return panel


__all__ = ["draw_field", "figure_panel"]
