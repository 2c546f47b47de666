"""The translation group T(d) of R^d, and its lattice subgroup h·Z^d."""

from __future__ import annotations

import torch
from torch import Tensor

from approxeq.groups.base import Group


class Translation(Group):
    """T(d): elements are shift vectors of shape ``[d]``; ``g · x = x + g``.

    T(d) is not compact, so there is no Haar probability measure: :meth:`sample` draws shifts
    uniformly from ``[-scale, scale]^d`` (default ``scale=10``), which is what equivariance
    tests need.

    If ``spacing`` is given, this is the lattice subgroup ``spacing · Z^d`` (e.g. the shifts a
    ConvCNP with ``points_per_unit = 1/spacing`` is exactly equivariant to); samples are then
    rounded to the lattice.
    """

    finite = False

    def __init__(self, dim: int, spacing: float | None = None) -> None:
        if dim < 1:
            raise ValueError(f"Translation: dim must be >= 1, got {dim}")
        if spacing is not None and spacing <= 0:
            raise ValueError(f"Translation: spacing must be positive, got {spacing}")
        self.dim = dim
        self.spacing = spacing
        self.element_shape = (dim,)

    def __repr__(self) -> str:
        if self.spacing is None:
            return f"T({self.dim})"
        return f"T({self.dim}, spacing={self.spacing:g})"

    def identity(self, batch=1, *, dtype=None, device=None) -> Tensor:
        return torch.zeros(batch, self.dim, dtype=dtype, device=device)

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        return g + h

    def inverse(self, g: Tensor) -> Tensor:
        return -g

    def sample(self, batch, *, generator=None, dtype=None, device=None, scale: float = 10.0,
               **kwargs) -> Tensor:
        u = torch.rand(batch, self.dim, generator=generator,
                       dtype=dtype or torch.get_default_dtype(),
                       device=device)
        g = (2 * u - 1) * scale
        if self.spacing is not None:
            g = torch.round(g / self.spacing) * self.spacing
        return g

    def act_points(self, g: Tensor, x: Tensor) -> Tensor:
        return x + g.unsqueeze(-2)
