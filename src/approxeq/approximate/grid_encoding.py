"""A learned multi-resolution grid over a box: features at any location by (bi)linear
interpolation, in the spirit of multi-resolution grid encodings (Müller et al., 2022), with dense
grids (the sizes fixed inputs need are small).

Level ``l`` of ``L`` splits every axis of the box into ``n_l`` cells, ``n_l`` geometric from
``coarsest`` to ``finest``; its table holds ``features`` learned values at each of the
``(n_l + 1)^dim_x`` vertices. A location's encoding is the concatenation over levels of the
linearly (1-D), bilinearly (2-D) or multilinearly interpolated vertex values. Locations outside
the box are clamped to its faces (callers that must be zero outside mask the result).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


def level_cells(levels: int, coarsest: int, finest: int) -> list[int]:
    """Cells per axis of each level: ``levels`` values geometric from ``coarsest`` to
    ``finest`` (rounded; one level: ``finest``)."""
    if levels < 1:
        raise ValueError(f"grid_levels: expected an int >= 1, got {levels}")
    if not 1 <= coarsest <= finest:
        raise ValueError(f"grid_coarsest, grid_finest: expected 1 <= coarsest <= finest cells, "
                         f"got {coarsest}, {finest}")
    if levels == 1:
        return [finest]
    ratio = (finest / coarsest) ** (1.0 / (levels - 1))
    return [int(round(coarsest * ratio ** i)) for i in range(levels)]


class GridEncoding(nn.Module):
    """Learned dense multi-resolution grid features over ``box``.

    Args:
        box: ``[dim_x, 2]`` tensor of (low, high) per axis.
        levels, coarsest, finest: see :func:`level_cells`. features: values per vertex and
            level. init_std: std of the initial values (0: zero-initialised).

    Shapes: ``forward(x [..., dim_x])`` returns ``[..., levels * features]``.
    """

    def __init__(self, box: Tensor, *, levels: int = 6, coarsest: int = 4, finest: int = 128,
                 features: int = 4, init_std: float = 0.0) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"grid_features: expected an int >= 1, got {features}")
        self.dim_x = box.shape[0]
        self.cells = level_cells(levels, coarsest, finest)
        check_grid_size(self.cells, self.dim_x, features)
        self.features = features
        self.register_buffer("box", box.float().clone())
        self.tables = nn.ParameterList(
            nn.Parameter(torch.randn((n + 1) ** self.dim_x, features) * init_std)
            for n in self.cells)

    @property
    def out_features(self) -> int:
        return len(self.cells) * self.features

    def _interpolate(self, u: Tensor, table: Tensor, n: int) -> Tensor:
        """Multilinear interpolation of one level at unit-box coordinates ``u [m, dim_x]``."""
        pos = u * n
        i0 = pos.floor().clamp(0, n - 1)
        w = pos - i0  # [m, dim_x] in [0, 1]
        i0 = i0.long()
        out = u.new_zeros(u.shape[0], self.features)
        for corner in itertools.product((0, 1), repeat=self.dim_x):
            idx = torch.zeros_like(i0[:, 0])
            weight = torch.ones_like(w[:, 0])
            for k, c in enumerate(corner):
                idx = idx * (n + 1) + i0[:, k] + c
                weight = weight * (w[:, k] if c else 1 - w[:, k])
            out = out + weight.unsqueeze(-1) * table[idx].to(u.dtype)
        return out

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = self.box[:, 0].to(x.dtype), self.box[:, 1].to(x.dtype)
        u = ((x.reshape(-1, self.dim_x) - lo) / (hi - lo)).clamp(0, 1)
        parts = [self._interpolate(u, t, n) for t, n in zip(self.tables, self.cells)]
        return torch.cat(parts, -1).reshape(*x.shape[:-1], self.out_features)

    def roughness(self) -> Tensor:
        """Mean squared difference of neighbouring vertex values, along every axis, summed over
        levels: the smoothness penalty (zero for a constant grid)."""
        total = self.tables[0].new_zeros(())
        for table, n in zip(self.tables, self.cells):
            grid = table.reshape(*([n + 1] * self.dim_x), self.features)
            for axis in range(self.dim_x):
                total = total + grid.diff(dim=axis).pow(2).mean()
        return total

    def extra_repr(self) -> str:
        return (f"dim_x={self.dim_x}, cells={self.cells}, features={self.features}, "
                f"parameters={sum(t.numel() for t in self.tables):,}")


def check_grid_size(cells: list[int], dim_x: int, features: int, limit: int = 50_000_000) -> None:
    """Refuse dense grids too large to hold (``limit`` values in all)."""
    total = sum((n + 1) ** dim_x for n in cells) * features
    if total > limit:
        raise ValueError(f"grid_finest: a dense grid of {cells} cells per axis in {dim_x}-D with "
                         f"{features} features holds {total:,} values, over {limit:,}; lower "
                         "grid_finest, grid_levels or grid_features")


__all__ = ["GridEncoding", "level_cells", "check_grid_size"]
