"""The symmetric group S_n acting on sets and graphs by reordering nodes."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from approxeq.groups.base import Group
from approxeq.groups.finite import as_index


class Permutation(Group):
    """S_n: elements are index tensors ``σ`` of shape ``[n]`` (integer-valued; ``torch.long``
    unless another ``dtype`` is requested).

    Convention: ``σ`` sends node ``i`` to position ``σ[i]``, so ``(σ · X)[σ[i]] = X[i]`` for any
    node-indexed tensor (node features ``[b, n, c]``, points and vectors ``[b, n, d]``), and
    ``(σ · A)[σ[i], σ[j]] = A[i, j]`` for adjacency ``[b, n, n]`` or edge features
    ``[b, n, n, c]``. As matrices, ``σ · X = M X`` and ``σ · A = M A Mᵀ`` with
    ``M = matrix(σ)``, ``M[σ[i], i] = 1``. Composition ``(σ τ)[i] = σ[τ[i]]``.

    :meth:`sample` draws uniform random permutations (argsort of uniform noise).
    """

    finite = True
    integer_elements = True
    dim = None

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"Permutation: n must be >= 1, got {n}")
        self.n = n
        self.element_shape = (n,)

    def __repr__(self) -> str:
        return f"S{self.n}"

    def identity(self, batch=1, *, dtype=None, device=None) -> Tensor:
        return torch.arange(self.n, device=device).expand(batch, -1).to(dtype or torch.long)

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        return torch.gather(as_index(g), -1, as_index(h)).to(g.dtype)

    def inverse(self, g: Tensor) -> Tensor:
        return torch.argsort(as_index(g), dim=-1).to(g.dtype)

    def sample(self, batch, *, generator=None, dtype=None, device=None, **kwargs) -> Tensor:
        u = torch.rand(batch, self.n, generator=generator, device=device)
        return torch.argsort(u, dim=-1).to(dtype or torch.long)

    def elements(self, *, dtype=None, device=None) -> Tensor:
        if math.factorial(self.n) > 40320:
            raise ValueError(f"{self!r} has {math.factorial(self.n)} elements: "
                             "too many to enumerate")
        perms = list(itertools.permutations(range(self.n)))
        return torch.tensor(perms, device=device).to(dtype or torch.long)

    def matrix(self, g: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The ``[b, n, n]`` permutation matrices ``M[σ[i], i] = 1``."""
        dtype = dtype or (g.dtype if g.is_floating_point() else torch.get_default_dtype())
        eye = torch.eye(self.n, dtype=dtype, device=g.device)
        return eye[as_index(g)].transpose(-1, -2)

    def _check(self, x: Tensor, name: str, min_dim: int) -> None:
        if x.dim() < min_dim or x.shape[1] != self.n:
            raise ValueError(f"{name} must have {self.n} nodes along dim 1 "
                             f"(shape [b, {self.n}, ...]), got {tuple(x.shape)}")

    def act_nodes(self, g: Tensor, h: Tensor) -> Tensor:
        self._check(h, "h", 2)
        source = as_index(self.inverse(g))  # (σ · X)[j] = X[σ⁻¹[j]]
        index = source.reshape(*source.shape, *([1] * (h.dim() - 2))).expand_as(h)
        return torch.gather(h, 1, index)

    def act_points(self, g: Tensor, x: Tensor) -> Tensor:
        return self.act_nodes(g, x)

    def act_vectors(self, g: Tensor, v: Tensor) -> Tensor:
        return self.act_nodes(g, v)

    def act_adjacency(self, g: Tensor, a: Tensor) -> Tensor:
        self._check(a, "a", 3)
        if a.shape[2] != self.n:
            raise ValueError(f"a must have shape [b, {self.n}, {self.n}(, c)], "
                             f"got {tuple(a.shape)}")
        rows = self.act_nodes(g, a)
        return self.act_nodes(g, rows.transpose(1, 2)).transpose(1, 2)
