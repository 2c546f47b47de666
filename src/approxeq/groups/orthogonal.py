"""Orthogonal and Euclidean groups: O(d), SO(d), E(d) and SE(d).

Rotations act on column vectors, ``g · x = R x``; for point sets ``x`` of shape ``[b, n, d]``
(points as rows) this is ``x Rᵀ``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from approxeq.groups.base import Group


def haar_orthogonal(batch: int, dim: int, *, special: bool = False,
                    generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> Tensor:
    """``[batch, dim, dim]`` Haar-distributed orthogonal matrices (rotations if ``special``).

    QR of a Gaussian matrix is Haar only after fixing the signs of R's diagonal (otherwise the
    distribution depends on the QR implementation's sign convention)."""
    dtype = dtype or torch.get_default_dtype()
    a = torch.randn(batch, dim, dim, generator=generator, dtype=dtype, device=device)
    q, r = torch.linalg.qr(a)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    q = q * signs.unsqueeze(-2)
    if special:
        q = _fix_determinant(q)
    return q


def _fix_determinant(q: Tensor) -> Tensor:
    # Flipping the first column maps the det = -1 coset onto SO(d) and preserves Haar measure.
    det = torch.linalg.det(q)
    first = q[..., :, :1] * torch.sign(det).unsqueeze(-1).unsqueeze(-1)
    return torch.cat([first, q[..., :, 1:]], dim=-1)


def _rotate(r: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("bij,bnj->bni", r, x)


class Orthogonal(Group):
    """O(d): elements are orthogonal matrices of shape ``[d, d]``; ``g · x = R x``.

    :meth:`sample` draws from the Haar measure (QR of a Gaussian matrix with the sign fix)."""

    special = False

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"{type(self).__name__}: dim must be >= 1, got {dim}")
        self.dim = dim
        self.element_shape = (dim, dim)

    def __repr__(self) -> str:
        return f"{'SO' if self.special else 'O'}({self.dim})"

    def identity(self, batch=1, *, dtype=None, device=None) -> Tensor:
        return torch.eye(self.dim, dtype=dtype, device=device).expand(batch, -1, -1).clone()

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        return g @ h

    def inverse(self, g: Tensor) -> Tensor:
        return g.transpose(-1, -2)

    def sample(self, batch, *, generator=None, dtype=None, device=None, **kwargs) -> Tensor:
        return haar_orthogonal(batch, self.dim, special=self.special, generator=generator,
                               dtype=dtype, device=device)

    def rotation(self, g: Tensor) -> Tensor:
        """The ``[b, d, d]`` matrix of ``g`` (itself, for O(d) and SO(d))."""
        return g

    def act_points(self, g: Tensor, x: Tensor) -> Tensor:
        return _rotate(g, x)

    def act_vectors(self, g: Tensor, v: Tensor) -> Tensor:
        return _rotate(g, v)


class SpecialOrthogonal(Orthogonal):
    """SO(d): rotation matrices ``[d, d]`` with determinant +1 (Haar: QR sampling + det fix)."""

    special = True


class Euclidean(Group):
    """E(d): rigid motions ``x ↦ R x + t`` with ``R ∈ O(d)``.

    Elements are homogeneous matrices of shape ``[d + 1, d + 1]``: ``[[R, t], [0, 1]]``, so the
    group law is matrix multiplication. E(d) is not compact: :meth:`sample` draws a Haar rotation
    and a translation uniform in ``[-scale, scale]^d`` (default ``scale=10``).
    Vector features rotate and ignore translations."""

    special = False

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"{type(self).__name__}: dim must be >= 1, got {dim}")
        self.dim = dim
        self.element_shape = (dim + 1, dim + 1)

    def __repr__(self) -> str:
        return f"{'SE' if self.special else 'E'}({self.dim})"

    def from_parts(self, rotation: Tensor, translation: Tensor) -> Tensor:
        """Homogeneous elements ``[b, d+1, d+1]`` from ``rotation`` ``[b, d, d]`` and
        ``translation`` ``[b, d]``."""
        b, d = translation.shape
        bottom = torch.zeros(b, 1, d + 1, dtype=translation.dtype, device=translation.device)
        bottom[:, 0, d] = 1
        top = torch.cat([rotation, translation.unsqueeze(-1)], dim=-1)
        return torch.cat([top, bottom], dim=-2)

    def rotation(self, g: Tensor) -> Tensor:
        """The ``[b, d, d]`` rotation part."""
        return g[..., : self.dim, : self.dim]

    def translation(self, g: Tensor) -> Tensor:
        """The ``[b, d]`` translation part."""
        return g[..., : self.dim, self.dim]

    def identity(self, batch=1, *, dtype=None, device=None) -> Tensor:
        return torch.eye(self.dim + 1, dtype=dtype, device=device).expand(batch, -1, -1).clone()

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        return g @ h

    def inverse(self, g: Tensor) -> Tensor:
        r_inv = self.rotation(g).transpose(-1, -2)
        t = self.translation(g)
        return self.from_parts(r_inv, -(r_inv @ t.unsqueeze(-1)).squeeze(-1))

    def sample(self, batch, *, generator=None, dtype=None, device=None, scale: float = 10.0,
               **kwargs) -> Tensor:
        r = haar_orthogonal(batch, self.dim, special=self.special, generator=generator,
                            dtype=dtype, device=device)
        u = torch.rand(batch, self.dim, generator=generator, dtype=r.dtype, device=device)
        return self.from_parts(r, (2 * u - 1) * scale)

    def act_points(self, g: Tensor, x: Tensor) -> Tensor:
        return _rotate(self.rotation(g), x) + self.translation(g).unsqueeze(-2)

    def act_vectors(self, g: Tensor, v: Tensor) -> Tensor:
        return _rotate(self.rotation(g), v)


class SpecialEuclidean(Euclidean):
    """SE(d): rigid motions with a proper rotation; elements ``[d + 1, d + 1]`` as in E(d)."""

    special = True


# Short aliases matching the usual notation.
O = Orthogonal  # noqa: E741
SO = SpecialOrthogonal
E = Euclidean
SE = SpecialEuclidean
