"""Direct products of groups, e.g. S_n × O(3) acting on point clouds."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from approxeq.groups.base import Group


class DirectProduct(Group):
    """``G_1 × ... × G_m``, each factor acting on its own aspect of the data.

    Elements are flat tensors of shape ``[Σ_i prod(G_i.element_shape)]``: the factors' elements
    flattened and concatenated in factor order (:meth:`split` / :meth:`join` convert). Integer
    factors (e.g. S_n) are stored as integer-valued floats when a continuous factor is present,
    so the default dtype is ``torch.long`` only if every factor has integer elements.

    Every action applies each factor's action in turn (last factor first). This is the product
    action whenever the factors' actions commute, e.g. S_n (reorders nodes) × O(d)/E(d)
    (moves coordinates) on points ``[b, n, d]``, vectors, node features and adjacency.
    """

    def __init__(self, *factors: Group) -> None:
        if len(factors) < 2:
            raise ValueError(f"DirectProduct needs at least 2 factors, got {len(factors)}")
        self.factors = tuple(factors)
        dims = {f.dim for f in factors if f.dim is not None}
        if len(dims) > 1:
            raise ValueError("DirectProduct: factors act on spaces of different dims "
                             f"{sorted(dims)}")
        self.dim = dims.pop() if dims else None
        self.sizes = tuple(math.prod(f.element_shape) for f in factors)
        self.element_shape = (sum(self.sizes),)
        self.finite = all(f.finite for f in factors)
        self.integer_elements = all(f.integer_elements for f in factors)

    def __repr__(self) -> str:
        return " x ".join(repr(f) for f in self.factors)

    def _dtype(self, dtype):
        if dtype is not None:
            return dtype
        return torch.long if self.integer_elements else torch.get_default_dtype()

    def split(self, g: Tensor) -> list[Tensor]:
        """Factor elements ``[b, *G_i.element_shape]`` of ``g`` ``[b, Σ sizes]``."""
        parts = torch.split(g, self.sizes, dim=-1)
        return [p.reshape(*g.shape[:-1], *f.element_shape) for p, f in zip(parts, self.factors)]

    def join(self, *parts: Tensor) -> Tensor:
        """Inverse of :meth:`split`; parts are cast to a common dtype."""
        floats = [p.dtype for p in parts if p.is_floating_point()]
        dtype = floats[0] if floats else torch.long
        flat = [p.reshape(*p.shape[: p.dim() - len(f.element_shape)], -1).to(dtype)
                for p, f in zip(parts, self.factors)]
        return torch.cat(flat, dim=-1)

    def identity(self, batch=1, *, dtype=None, device=None) -> Tensor:
        dtype = self._dtype(dtype)
        return self.join(*[f.identity(batch, dtype=dtype, device=device) for f in self.factors])

    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        return self.join(*[f.compose(a, b) for f, a, b in
                           zip(self.factors, self.split(g), self.split(h))]).to(g.dtype)

    def inverse(self, g: Tensor) -> Tensor:
        return self.join(*[f.inverse(a) for f, a in zip(self.factors, self.split(g))]).to(g.dtype)

    def sample(self, batch, *, generator=None, dtype=None, device=None, **kwargs) -> Tensor:
        dtype = self._dtype(dtype)
        return self.join(*[f.sample(batch, generator=generator, dtype=dtype, device=device,
                                    **kwargs) for f in self.factors]).to(dtype)

    def elements(self, *, dtype=None, device=None) -> Tensor:
        if not self.finite:
            raise NotImplementedError(f"{self!r} is not finite: it cannot be enumerated")
        dtype = self._dtype(dtype)
        per_factor = [f.elements(dtype=dtype, device=device) for f in self.factors]
        index = torch.tensor(list(itertools.product(*[range(len(e)) for e in per_factor])),
                             device=device)
        return self.join(*[e[index[:, i]] for i, e in enumerate(per_factor)]).to(dtype)

    def _apply(self, method: str, g: Tensor, x: Tensor) -> Tensor:
        for f, part in reversed(list(zip(self.factors, self.split(g)))):
            x = getattr(f, method)(part, x)
        return x

    def act_points(self, g: Tensor, x: Tensor) -> Tensor:
        return self._apply("act_points", g, x)

    def act_vectors(self, g: Tensor, v: Tensor) -> Tensor:
        return self._apply("act_vectors", g, v)

    def act_nodes(self, g: Tensor, h: Tensor) -> Tensor:
        return self._apply("act_nodes", g, h)

    def act_adjacency(self, g: Tensor, a: Tensor) -> Tensor:
        return self._apply("act_adjacency", g, a)

    def act_grid(self, g: Tensor, f: Tensor) -> Tensor:
        return self._apply("act_grid", g, f)
