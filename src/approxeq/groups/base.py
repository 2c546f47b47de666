"""The :class:`Group` protocol: groups as small typed values whose elements are batched tensors.

A group value (``Translation(2)``, ``Dihedral(4)``, ...) holds no state beyond its parameters.
Its *elements* are plain tensors with a leading batch dimension, so that Monte-Carlo averages
over many elements stay vectorised. Every group documents the shape of one element
(``element_shape``); a batch of ``b`` elements has shape ``[b, *element_shape]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Group(ABC):
    """Abstract group acting on points of R^d (``dim``) and, through representations, on features.

    Subclasses implement the group law on batched element tensors and the action on point sets.
    ``act_points(g, x)`` takes ``g`` of shape ``[b, *element_shape]`` and ``x`` of shape
    ``[b, n, dim]`` and returns ``g · x`` with the same shape as ``x``.
    """

    #: dimension of the space the group acts on (``None`` for abstract groups such as S_n)
    dim: int | None = None
    #: shape of a single element tensor
    element_shape: tuple[int, ...] = ()
    #: whether the group is finite (then :meth:`elements` enumerates it)
    finite: bool = False
    #: whether elements are integer-valued (index tensors; ``torch.long`` unless a dtype is asked)
    integer_elements: bool = False

    @property
    def name(self) -> str:
        return repr(self)

    @abstractmethod
    def identity(self, batch: int = 1, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> Tensor:
        """``batch`` copies of the identity, shape ``[batch, *element_shape]``."""

    @abstractmethod
    def compose(self, g: Tensor, h: Tensor) -> Tensor:
        """The product ``g h`` (apply ``h`` first, then ``g``), element-wise over the batch."""

    @abstractmethod
    def inverse(self, g: Tensor) -> Tensor:
        """The inverse ``g⁻¹``, element-wise over the batch."""

    @abstractmethod
    def sample(self, batch: int, *, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None, device: torch.device | str | None = None,
               **kwargs) -> Tensor:
        """``batch`` elements drawn from the Haar (uniform) measure, or from a documented
        proper distribution for non-compact groups (e.g. translations: a scale argument)."""

    def elements(self, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> Tensor:
        """All elements of a finite group, shape ``[order, *element_shape]``."""
        raise NotImplementedError(f"{self!r} is not finite: it cannot be enumerated")

    def act_points(self, g: Tensor, x: Tensor) -> Tensor:
        """``g · x`` for point sets ``x`` of shape ``[b, n, dim]``."""
        raise NotImplementedError(f"{self!r} does not act on points")

    def act_vectors(self, g: Tensor, v: Tensor) -> Tensor:
        """The action on vector features (tangent vectors: translations act trivially)
        of shape ``[b, n, dim]``. Defaults to the trivial action."""
        return v

    def act_nodes(self, g: Tensor, h: Tensor) -> Tensor:
        """The action on node features ``h`` of shape ``[b, n, c]`` (or ``[b, n]``): permutation
        groups reorder the nodes; groups that do not act on node order leave scalar node features
        unchanged (the default)."""
        return h

    def act_adjacency(self, g: Tensor, a: Tensor) -> Tensor:
        """The action on adjacency matrices / edge features ``a`` of shape ``[b, n, n]`` or
        ``[b, n, n, c]``. Defaults to the trivial action (groups that do not reorder nodes)."""
        return a

    def act_grid(self, g: Tensor, f: Tensor) -> Tensor:
        """The action on scalar fields sampled on a grid, ``f`` of shape ``[b, H, W, c]``:
        ``(g · f)(p) = f(g⁻¹ p)``. Only groups that map the grid onto itself implement it."""
        raise NotImplementedError(f"{self!r} does not act exactly on grids")

    def act(self, g: Tensor, x: Tensor, kind: str) -> Tensor:
        """Dispatch on the kind of data: ``"points"``, ``"vectors"``, ``"nodes"``, ``"mask"``
        (a ``[b, n]`` node mask, acted on as nodes), ``"adjacency"``, ``"grid"`` or
        ``"invariant"`` (unchanged)."""
        if kind == "points":
            return self.act_points(g, x)
        if kind == "vectors":
            return self.act_vectors(g, x)
        if kind in ("nodes", "mask"):
            return self.act_nodes(g, x)
        if kind == "adjacency":
            return self.act_adjacency(g, x)
        if kind == "grid":
            return self.act_grid(g, x)
        if kind == "invariant":
            return x
        raise ValueError(f"kind must be one of points, vectors, nodes, mask, adjacency, grid, "
                         f"invariant; got {kind!r}")

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))
