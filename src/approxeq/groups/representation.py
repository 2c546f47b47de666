"""Output representations: how a group acts on the values of a field, not only on its points.

A neural process predicts fields. Each output is a *scalar* field (a temperature: a rotation of
the scene moves where the value sits but leaves the value unchanged) or a *vector* field in the
plane (a wind: the value turns with the scene, ``y ↦ R y``). :class:`OutputRep` is a small typed
value listing the kinds of a model's outputs in order, e.g. ``OutputRep.parse(["vector",
"scalar"], dim_x=2, dim_y=3)`` for ``(u, v, T)``. Its :meth:`~OutputRep.act` is the action
``ρ(g)`` on outputs for any group with :meth:`~approxeq.groups.Group.act_vectors` (O(2), SO(2),
E(2), D_N, C_N, the lattice groups; translations leave vectors unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from approxeq.groups.base import Group

#: the kinds of output an :class:`OutputRep` lists
REP_KINDS = ("scalar", "vector")
#: components of one vector output (vectors live in the plane)
VECTOR_DIM = 2


@dataclass(frozen=True)
class OutputRep:
    """The representation of a model's outputs: one kind per output field, in order.

    Attributes:
        kinds: ``"scalar"`` (1 component, invariant) or ``"vector"`` (2 components, turned by
            the rotation part of ``g``) for each field.

    ``dim`` is the number of components (``dim_y``). Shapes: outputs ``y [..., n, dim]``.
    """

    kinds: tuple[str, ...]

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in REP_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"y_rep: expected 'scalar', 'vector' or a non-empty list of them, "
                             f"got {list(self.kinds)!r}")

    @classmethod
    def scalar(cls, dim_y: int) -> OutputRep:
        """``dim_y`` scalar outputs (the default of every model)."""
        return cls(("scalar",) * dim_y)

    @classmethod
    def parse(cls, y_rep: str | Sequence[str] | OutputRep, dim_x: int, dim_y: int) -> OutputRep:
        """The representation a ``y_rep`` option names, checked against ``dim_x`` and ``dim_y``.

        ``"scalar"``: every one of the ``dim_y`` outputs is a scalar. ``"vector"``: the two
        outputs are one planar vector (``dim_y = 2``). A list (``["vector", "scalar"]``): one
        entry per field, vectors taking two components each, summing to ``dim_y``.
        Raises a one-line ``ValueError`` naming ``y_rep``, ``dim_x`` or ``dim_y``.
        """
        if isinstance(y_rep, OutputRep):
            rep = y_rep
        elif y_rep == "scalar":
            rep = cls.scalar(dim_y)
        elif y_rep == "vector":
            rep = cls(("vector",))
        elif isinstance(y_rep, (list, tuple)) and all(isinstance(k, str) for k in y_rep):
            rep = cls(tuple(y_rep))
        else:
            raise ValueError(f"y_rep: expected 'scalar', 'vector' or a list of them (e.g. "
                             f"['vector', 'scalar']), got {y_rep!r}")
        if rep.dim != dim_y:
            raise ValueError(f"dim_y: y_rep {rep.name} has {rep.dim} components, got "
                             f"dim_y = {dim_y}")
        if rep.num_vectors and dim_x != VECTOR_DIM:
            raise ValueError(f"dim_x: vector outputs (y_rep {rep.name}) turn with rotations of "
                             f"the plane and need dim_x = 2, got dim_x = {dim_x}")
        return rep

    @property
    def name(self) -> str:
        """``'scalar'``, ``'vector'``, or the list, as an option value names it."""
        if self.is_scalar:
            return "'scalar'"
        if self.kinds == ("vector",):
            return "'vector'"
        return repr(list(self.kinds))

    @property
    def dim(self) -> int:
        return sum(VECTOR_DIM if k == "vector" else 1 for k in self.kinds)

    @property
    def is_scalar(self) -> bool:
        """Whether every output is a scalar (``ρ`` trivial)."""
        return all(k == "scalar" for k in self.kinds)

    @property
    def num_vectors(self) -> int:
        return sum(k == "vector" for k in self.kinds)

    @property
    def num_scalars(self) -> int:
        return sum(k == "scalar" for k in self.kinds)

    @property
    def num_invariants(self) -> int:
        """Width of :meth:`invariants`: one number per field."""
        return len(self.kinds)

    def vector_slices(self) -> list[slice]:
        """The components of each vector field, in order."""
        out, i = [], 0
        for k in self.kinds:
            if k == "vector":
                out.append(slice(i, i + VECTOR_DIM))
            i += VECTOR_DIM if k == "vector" else 1
        return out

    def scalar_index(self) -> list[int]:
        """The components that are scalars, in order."""
        out, i = [], 0
        for k in self.kinds:
            if k == "scalar":
                out.append(i)
            i += VECTOR_DIM if k == "vector" else 1
        return out

    def split(self, y: Tensor) -> tuple[list[Tensor], Tensor]:
        """``y [..., dim]`` as (the vector fields ``[..., 2]`` each, the scalars
        ``[..., num_scalars]``)."""
        self._check(y)
        vectors = [y[..., s] for s in self.vector_slices()]
        return vectors, y[..., self.scalar_index()]

    def merge(self, vectors: Sequence[Tensor], scalars: Tensor) -> Tensor:
        """The inverse of :meth:`split`: ``[..., dim]`` in the order of :attr:`kinds`."""
        parts, v, s = [], iter(vectors), 0
        for k in self.kinds:
            if k == "vector":
                parts.append(next(v))
            else:
                parts.append(scalars[..., s:s + 1])
                s += 1
        return torch.cat(parts, -1)

    def invariants(self, y: Tensor) -> Tensor:
        """Rotation-invariant features of ``y [..., dim]``: each scalar as it is, each vector's
        length; ``[..., num_invariants]`` in the order of :attr:`kinds`."""
        vectors, scalars = self.split(y)
        norms = [_norm(v) for v in vectors]
        return self.merge(norms, scalars)  # each length in its vector's place

    def act(self, group: Group, g: Tensor, y: Tensor) -> Tensor:
        """``ρ(g) y`` for outputs ``y [b, n, dim]`` and elements ``g [b, *element_shape]``:
        vectors by ``group.act_vectors``, scalars unchanged."""
        if self.is_scalar:
            return y
        vectors, scalars = self.split(y)
        return self.merge([group.act_vectors(g, v) for v in vectors], scalars)

    def act_covariance(self, group: Group, g: Tensor, cov: Tensor) -> Tensor:
        """``ρ(g) Σ ρ(g)ᵀ`` for covariances ``cov [b, n, dim, dim]``."""
        b, n, d, _ = cov.shape
        # ρ on every column gives ρΣ; ρ on every row of that gives (ρΣ)ρᵀ
        cols = self.act(group, g, cov.transpose(-1, -2).reshape(b, n * d, d))
        left = cols.reshape(b, n, d, d).transpose(-1, -2)
        return self.act(group, g, left.reshape(b, n * d, d)).reshape(b, n, d, d)

    def action(self, group: Group) -> Callable[[Tensor, Tensor], Tensor]:
        """``ρ`` as a function ``(g, y) -> ρ(g) y``: the ``output_action`` of
        :func:`~approxeq.testing.assert_equivariant`."""
        return lambda g, y: self.act(group, g, y)

    def _check(self, y: Tensor) -> None:
        if y.shape[-1] != self.dim:
            raise ValueError(f"y: expected a last dimension of {self.dim} for y_rep {self.name}, "
                             f"got shape {tuple(y.shape)}")


def _norm(v: Tensor) -> Tensor:
    """``‖v‖`` as ``[..., 1]`` with a zero (not NaN) gradient at 0."""
    sq = (v ** 2).sum(-1, keepdim=True)
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(),
                       torch.zeros_like(sq))


def output_rep(model: object) -> OutputRep:
    """A model's output representation: its ``y_rep`` attribute, else ``dim_y`` scalars."""
    rep = getattr(model, "y_rep", None)
    if isinstance(rep, OutputRep):
        return rep
    return OutputRep.scalar(int(getattr(model, "dim_y", 1)))
