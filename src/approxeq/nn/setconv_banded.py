"""Banded 1-D set convolutions: each point meets only the grid cells within reach of its RBF.

The dense set convolutions (:mod:`approxeq.nn.setconv`) weigh every point against every grid
cell, although an RBF weight beyond ``sqrt(-2 log sqrt(tiny))`` lengthscales (9.3 in float32,
26.6 in float64) is flushed to exactly 0 there. The banded versions gather, per point, the
``2 K + 1`` cells around its nearest cell, with ``K`` chosen so that the window holds every
cell whose weight is not flushed: the weights in the window are the dense ones bit for bit,
and only the order of the sums changes (float rounding). On a grid of ``G`` cells this costs
``(2 K + 1) / G`` of the dense weights: with the ConvCNP's lengthscale of one or two cells,
about 20-40 cells of a few hundred.

Shapes: points ``x [b, n]``, grid coordinates ``axis [G]`` (uniform spacing), lengthscale a
scalar tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _reach(dtype: torch.dtype) -> float:
    """Distance, in lengthscales, beyond which the dense RBF weight is flushed to 0."""
    return math.sqrt(-math.log(torch.finfo(dtype).tiny))


def banded_rbf_weights(x: Tensor, axis: Tensor, lengthscale: Tensor) -> tuple[Tensor, Tensor]:
    """Cell indices ``[b, n, W]`` and RBF weights ``[b, n, W]`` of the cells near each point
    (weights of cells outside the grid are 0); differentiable in ``x`` and ``lengthscale``."""
    g = axis.shape[0]
    spacing = float(axis[1] - axis[0]) if g > 1 else 1.0
    reach = _reach(x.dtype) * float(lengthscale.detach())
    half = min(g, math.ceil(reach / spacing + 0.5))  # the window covers every unflushed cell
    centre = torch.round((x.detach() - axis[0]) / spacing).long()
    idx = centre[..., None] + torch.arange(-half, half + 1, device=x.device)
    outside = (idx < 0) | (idx >= g)
    idx = idx.clamp_(0, g - 1)
    inv = 1.0 / lengthscale
    w = ((x[..., None] - axis[idx]) * inv).square().mul(-0.5)  # the dense _RBF's formula
    floor = 0.5 * math.log(torch.finfo(w.dtype).tiny)
    far = (w < floor) | outside
    return idx, w.clamp(min=floor).exp().masked_fill(far, 0.0)


def banded_encode(x: Tensor, feats: Tensor, axis: Tensor, lengthscale: Tensor) -> Tensor:
    """``sum_i w(x_i, g) feats_i`` on the grid: ``x [b, n]``, ``feats [b, n, C]`` ->
    ``[b, G, C]``."""
    idx, w = banded_rbf_weights(x, axis, lengthscale)
    b, n, width = idx.shape
    c = feats.shape[-1]
    src = (w[..., None] * feats[:, :, None, :]).reshape(b, n * width, c)
    out = feats.new_zeros(b, axis.shape[0], c)
    return out.scatter_add(1, idx.reshape(b, n * width, 1).expand(-1, -1, c), src)


def banded_decode(z: Tensor, x: Tensor, axis: Tensor, lengthscale: Tensor) -> Tensor:
    """``sum_g w(x, g) z(g)`` at the points: ``z [b, G, C]``, ``x [b, m]`` -> ``[b, m, C]``."""
    idx, w = banded_rbf_weights(x, axis, lengthscale)
    b, m, width = idx.shape
    c = z.shape[-1]
    near = z.gather(1, idx.reshape(b, m * width, 1).expand(-1, -1, c)).reshape(b, m, width, c)
    return (w[..., None] * near).sum(2)


__all__ = ["banded_rbf_weights", "banded_encode", "banded_decode"]
