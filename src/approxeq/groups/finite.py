"""Finite groups acting on the plane and on grids: C_N, D_N and circular grid shifts.

Elements are *integer-valued* tensors. They are returned as ``torch.long`` unless a ``dtype`` is
requested (e.g. a floating dtype so they can be concatenated with continuous elements in a
:class:`~approxeq.groups.DirectProduct`); the values are integers either way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from approxeq.groups.base import Group


def as_index(g: Tensor) -> Tensor:
    """Integer-valued element tensor of any dtype as ``torch.long``."""
    return g.round().long() if g.is_floating_point() else g.long()


def _cell_coordinates(h: int, w: int, dtype: torch.dtype, device) -> Tensor:
    i = torch.arange(h, dtype=dtype, device=device) - (h - 1) / 2
    j = torch.arange(w, dtype=dtype, device=device) - (w - 1) / 2
    return torch.stack(torch.meshgrid(i, j, indexing="ij"), dim=-1).reshape(h * w, 2)


def grid_act_by_points(group: Group, g: Tensor, f: Tensor) -> Tensor:
    """``(g · f)(p) = f(g⁻¹ p)`` for ``f`` ``[b, H, W, c]`` whose cell ``(i, j)`` sits at the
    point ``(i − (H−1)/2, j − (W−1)/2)`` (axis 1 ↔ first coordinate); exact when ``g⁻¹`` maps the
    cell centres onto cell centres, otherwise an error."""
    if f.dim() != 4:
        raise ValueError(f"f must have shape [b, H, W, c], got {tuple(f.shape)}")
    b, h, w, c = f.shape
    coords = _cell_coordinates(h, w, torch.float64, f.device).expand(b, -1, -1)
    src = group.act_points(group.inverse(g), coords)
    si = src[..., 0] + (h - 1) / 2
    sj = src[..., 1] + (w - 1) / 2
    ri, rj = torch.round(si), torch.round(sj)
    exact = ((si - ri).abs() < 1e-6) & ((sj - rj).abs() < 1e-6)
    inside = (ri >= 0) & (ri < h) & (rj >= 0) & (rj < w)
    if not bool((exact & inside).all()):
        raise ValueError(f"{group!r} does not map a {h}x{w} grid onto itself")
    flat = (ri.long() * w + rj.long()).unsqueeze(-1).expand(-1, -1, c)
    return f.reshape(b, h * w, c).gather(1, flat).reshape(b, h, w, c)


class Dihedral(Group):
    """D_N acting on R²: elements ``[2]`` = ``(k, s)`` with ``k ∈ {0..N-1}``, ``s ∈ {0, 1}``,
    standing for the matrix ``R(2πk/N) Fˢ`` where ``F = diag(1, −1)`` reflects across the first
    axis (first the reflection, then the rotation). Order ``2N``.

    Grids (:meth:`act_grid`) are acted on exactly for ``N ∈ {1, 2, 4}`` (square grids for N = 4).
    """

    finite = True
    integer_elements = True
    dim = 2
    element_shape = (2,)
    reflections = True

    def __init__(self, order: int) -> None:
        if order < 1:
            raise ValueError(f"{type(self).__name__}: order must be >= 1, got {order}")
        self.order = order

    def __repr__(self) -> str:
        return f"{'D' if self.reflections else 'C'}{self.order}"

    @property
    def size(self) -> int:
        return self.order * (2 if self.reflections else 1)

    def _pack(self, k: Tensor, s: Tensor, dtype) -> Tensor:
        return torch.stack([k % self.order, s % 2], dim=-1).to(dtype or torch.long)

    def identity(self, batch=1, *, dtype=None, device=None) -> Tensor:
        return torch.zeros(batch, 2, dtype=dtype or torch.long, device=device)

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        # F R^k = R^{-k} F, hence (k1, s1)(k2, s2) = (k1 + (-1)^s1 k2, s1 xor s2).
        g_, h_ = as_index(g), as_index(h)
        sign = 1 - 2 * g_[..., 1]
        return self._pack(g_[..., 0] + sign * h_[..., 0], g_[..., 1] + h_[..., 1], g.dtype)

    def inverse(self, g: Tensor) -> Tensor:
        g_ = as_index(g)
        k = torch.where(g_[..., 1] == 1, g_[..., 0], -g_[..., 0])
        return self._pack(k, g_[..., 1], g.dtype)

    def sample(self, batch, *, generator=None, dtype=None, device=None, **kwargs) -> Tensor:
        k = torch.randint(self.order, (batch,), generator=generator, device=device)
        if self.reflections:
            s = torch.randint(2, (batch,), generator=generator, device=device)
        else:
            s = torch.zeros_like(k)
        return self._pack(k, s, dtype)

    def elements(self, *, dtype=None, device=None) -> Tensor:
        k = torch.arange(self.order, device=device)
        reflections = 2 if self.reflections else 1
        ks = k.repeat(reflections)
        ss = torch.arange(reflections, device=device).repeat_interleave(self.order)
        return self._pack(ks, ss, dtype)

    def matrix(self, g: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The ``[b, 2, 2]`` matrices ``R(2πk/N) Fˢ``. Entries that are integers in exact
        arithmetic (every entry when ``N`` divides 4) are exact, so that 90° rotations permute
        coordinates instead of mixing them by ``cos(π/2) ≈ 6e-17``."""
        g_ = as_index(g)
        dtype = dtype or (g.dtype if g.is_floating_point() else torch.get_default_dtype())
        angle = (2 * math.pi / self.order) * g_[..., 0].to(torch.float64)
        c, s = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        flip = 1 - 2 * g_[..., 1].to(torch.float64)
        m = rot * torch.stack([torch.ones_like(flip), flip], -1).unsqueeze(-2)
        m = torch.where((m - m.round()).abs() < 1e-12, m.round(), m)
        return m.to(dtype)

    def matrices(self, *, dtype: torch.dtype | None = None, device=None) -> Tensor:
        """The ``[|G|, 2, 2]`` matrices of every element, in the order of :meth:`elements`
        (index ``s·N + k``)."""
        return self.matrix(self.elements(device=device), dtype or torch.get_default_dtype())

    def act_points(self, g: Tensor, x: Tensor) -> Tensor:
        return torch.einsum("bij,bnj->bni", self.matrix(g, x.dtype), x)

    def act_vectors(self, g: Tensor, v: Tensor) -> Tensor:
        return self.act_points(g, v)

    def act_grid(self, g: Tensor, f: Tensor) -> Tensor:
        if self.order not in (1, 2, 4):
            raise NotImplementedError(f"{self!r} acts exactly on square grids only for "
                                      "N in 1, 2, 4")
        return grid_act_by_points(self, g, f)


class Cyclic(Dihedral):
    """C_N acting on R² by rotations ``R(2πk/N)``: elements ``[2]`` = ``(k, 0)``, the same
    convention as :class:`Dihedral` with the reflection bit always 0. Order ``N``."""

    reflections = False


def point_group(name: str) -> Dihedral:
    """The planar point group a config names: ``"D4"`` → ``Dihedral(4)``, ``"C8"`` →
    ``Cyclic(8)``; any ``C<N>``/``D<N>`` with ``N >= 1``."""
    if isinstance(name, str) and len(name) > 1 and name[0] in "CD" and name[1:].isdigit() \
            and int(name[1:]) >= 1:
        return (Dihedral if name[0] == "D" else Cyclic)(int(name[1:]))
    raise ValueError(f"group: expected 'C<N>' or 'D<N>' (e.g. 'D4', 'C4', 'D8', 'C8'), "
                     f"got {name!r}")


class GridShift(Group):
    """Circular shifts of an ``H × W`` grid, Z_H × Z_W: elements ``[2]`` = ``(a, b)``;
    ``(g · f)[i, j] = f[(i − a) mod H, (j − b) mod W]`` for ``f`` ``[batch, H, W, c]``.
    The lattice translations a grid model with circular padding is exactly equivariant to."""

    finite = True
    integer_elements = True
    dim = 2
    element_shape = (2,)

    def __init__(self, height: int, width: int) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"GridShift: height and width must be >= 1, got {height}, {width}")
        self.height = height
        self.width = width

    def __repr__(self) -> str:
        return f"GridShift({self.height}, {self.width})"

    def _wrap(self, a: Tensor, b: Tensor, dtype) -> Tensor:
        return torch.stack([a % self.height, b % self.width], -1).to(dtype or torch.long)

    def identity(self, batch=1, *, dtype=None, device=None) -> Tensor:
        return torch.zeros(batch, 2, dtype=dtype or torch.long, device=device)

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        s = as_index(g) + as_index(h)
        return self._wrap(s[..., 0], s[..., 1], g.dtype)

    def inverse(self, g: Tensor) -> Tensor:
        s = -as_index(g)
        return self._wrap(s[..., 0], s[..., 1], g.dtype)

    def sample(self, batch, *, generator=None, dtype=None, device=None, **kwargs) -> Tensor:
        a = torch.randint(self.height, (batch,), generator=generator, device=device)
        b = torch.randint(self.width, (batch,), generator=generator, device=device)
        return self._wrap(a, b, dtype)

    def elements(self, *, dtype=None, device=None) -> Tensor:
        a = torch.arange(self.height, device=device).repeat_interleave(self.width)
        b = torch.arange(self.width, device=device).repeat(self.height)
        return self._wrap(a, b, dtype)

    def act_grid(self, g: Tensor, f: Tensor) -> Tensor:
        if f.dim() != 4 or f.shape[1:3] != (self.height, self.width):
            raise ValueError(f"f must have shape [b, {self.height}, {self.width}, c], "
                             f"got {tuple(f.shape)}")
        b, h, w, c = f.shape
        g_ = as_index(g)
        i = (torch.arange(h, device=f.device) - g_[:, :1]) % h  # [b, H]
        j = (torch.arange(w, device=f.device) - g_[:, 1:]) % w  # [b, W]
        flat = (i.unsqueeze(-1) * w + j.unsqueeze(-2)).reshape(b, h * w, 1).expand(-1, -1, c)
        return f.reshape(b, h * w, c).gather(1, flat).reshape(b, h, w, c)
