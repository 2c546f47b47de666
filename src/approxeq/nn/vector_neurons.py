"""Vector neurons (Deng et al., 2021): O(d)-equivariant layers on vector-valued channels.

Vector features have shape ``[..., c, d]``: ``c`` channels, each a vector in R^d; an orthogonal
``R`` acts on the last axis (``x ↦ x Rᵀ``). Linear maps mix channels only, so they commute with
``R``; nonlinearities act along learned equivariant directions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_EPS = 1e-6


def _masked(mask: Tensor | None, x: Tensor) -> Tensor:
    """``[b, n]`` mask broadcast against ``x`` ``[b, n, ...]``."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=x.dtype, device=x.device).reshape(
            *x.shape[:2], *([1] * (x.dim() - 2)))
    return mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))


class VNLinear(nn.Module):
    """Channel mixing ``[..., in_channels, d] → [..., out_channels, d]`` (no bias: a bias vector
    would break equivariance)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels) / in_channels ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("oc,...cd->...od", self.weight, x)


class VNLeakyReLU(nn.Module):
    """Leaky ReLU along a learned direction per channel: the component of ``x`` pointing against
    ``k = W x`` is removed (scaled by ``negative_slope``); ``negative_slope = 0`` is VN-ReLU.
    ``[..., c, d] → [..., c, d]``."""

    def __init__(self, channels: int, negative_slope: float = 0.2, share_direction: bool = False):
        super().__init__()
        self.direction = VNLinear(channels, 1 if share_direction else channels)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        k = self.direction(x)
        dot = (x * k).sum(-1, keepdim=True)
        k_sq = (k * k).sum(-1, keepdim=True)
        projected = x - dot / (k_sq + _EPS) * k
        rectified = torch.where(dot >= 0, x, projected)
        return self.negative_slope * x + (1 - self.negative_slope) * rectified


class VNReLU(VNLeakyReLU):
    """VN-ReLU: :class:`VNLeakyReLU` with slope 0."""

    def __init__(self, channels: int, share_direction: bool = False) -> None:
        super().__init__(channels, 0.0, share_direction)


class VNInvariant(nn.Module):
    """O(d)-invariant scalars from vector features: inner products of the ``c`` channels with
    ``d`` learned equivariant vectors, ``[..., c, d] → [..., c · d]``."""

    def __init__(self, channels: int, dim: int = 3) -> None:
        super().__init__()
        self.frame = VNLinear(channels, dim)

    def forward(self, x: Tensor) -> Tensor:
        t = self.frame(x)
        return torch.einsum("...cd,...kd->...ck", x, t).flatten(-2)


def vn_mean_pool(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over points (dim 1) of ``[b, n, c, d]`` (masked), → ``[b, c, d]``."""
    m = _masked(mask, x)
    return (x * m).sum(1) / m.sum(1).clamp_min(1)


class VNMaxPool(nn.Module):
    """Max pooling over points: per channel, the point whose feature has the largest component
    along a learned direction, ``[b, n, c, d] → [b, c, d]`` (masked points are never chosen)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.direction = VNLinear(channels, channels)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        score = (x * self.direction(x)).sum(-1)  # [b, n, c]
        if mask is not None:
            score = score.masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))
        index = score.argmax(dim=1)  # [b, c]
        idx = index.unsqueeze(1).unsqueeze(-1).expand(-1, 1, -1, x.shape[-1])
        return torch.gather(x, 1, idx).squeeze(1)


class VNNetwork(nn.Module):
    """A small VN deep-sets network on point sets.

    Each layer maps per-point vector features, concatenated with their pooled (mean over points)
    context, through VN-linear + VN-leaky-ReLU. Invariant per-point scalars (optional input)
    gate the vector channels at the input.

    Args:
        in_vectors: input vector channels per point. in_scalars: invariant scalar channels per
            point (0 for none). hidden: vector channels. num_layers: number of layers.
        out_scalars: per-point O(d)-invariant outputs. out_vectors: pooled O(d)-equivariant
            output vectors. dim: the space dimension d.

    Shapes: ``forward(vectors [b, n, in_vectors, d], scalars [b, n, in_scalars] | None,
    mask [b, n] | None)`` → ``(scalars [b, n, out_scalars], vectors [b, out_vectors, d])``;
    scalars are S_n-equivariant and O(d)-invariant, vectors S_n-invariant and O(d)-equivariant.
    """

    def __init__(self, in_vectors: int, in_scalars: int = 0, hidden: int = 21, num_layers: int = 2,
                 out_scalars: int = 1, out_vectors: int = 3, dim: int = 3,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        self.in_vectors, self.in_scalars, self.dim = in_vectors, in_scalars, dim
        self.gate = nn.Linear(in_scalars, in_vectors) if in_scalars > 0 else None
        self.inp = VNLinear(in_vectors, hidden)
        self.layers = nn.ModuleList(
            nn.ModuleList([VNLinear(2 * hidden, hidden), VNLeakyReLU(hidden, negative_slope)])
            for _ in range(num_layers))
        self.pool = VNMaxPool(hidden)
        self.invariant = VNInvariant(2 * hidden, dim)
        self.scalar_head = nn.Sequential(nn.Linear(2 * hidden * dim + in_scalars, hidden),
                                         nn.ReLU(), nn.Linear(hidden, out_scalars))
        self.vector_head = VNLinear(hidden, out_vectors)

    def forward(self, vectors: Tensor, scalars: Tensor | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if vectors.dim() != 4 or vectors.shape[-2:] != (self.in_vectors, self.dim):
            raise ValueError(f"vectors must have shape [b, n, {self.in_vectors}, {self.dim}], "
                             f"got {tuple(vectors.shape)}")
        b, n = vectors.shape[:2]
        if self.in_scalars > 0:
            if scalars is None or scalars.shape != (b, n, self.in_scalars):
                raise ValueError(f"scalars must have shape [{b}, {n}, {self.in_scalars}], got "
                                 f"{None if scalars is None else tuple(scalars.shape)}")
            vectors = vectors * torch.sigmoid(self.gate(scalars)).unsqueeze(-1)
        m = _masked(mask, vectors)
        x = self.inp(vectors) * m
        for linear, act in self.layers:
            context = vn_mean_pool(x, mask).unsqueeze(1).expand_as(x)
            x = act(linear(torch.cat([x, context], dim=-2))) * m
        pooled = self.pool(x, mask)  # [b, hidden, d]
        both = torch.cat([x, pooled.unsqueeze(1).expand_as(x)], dim=-2)
        invariants = self.invariant(both)
        if self.in_scalars > 0:
            invariants = torch.cat([invariants, scalars], dim=-1)
        out_scalars = self.scalar_head(invariants) * m.reshape(b, n, 1)
        return out_scalars, self.vector_head(pooled)
