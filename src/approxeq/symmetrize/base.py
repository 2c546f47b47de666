"""Symmetrisation of any ``nn.Module``: the wrapper, its return value and the strategy protocol.

``Symmetrized(base, group, strategy, in_kinds=..., out_kinds=...)`` computes

    φ(x) = mean_i  g_i · f(g_i⁻¹ · x),     g_i ~ p(g | x)

where ``p(g | x)`` is chosen by the strategy (Haar measure, a frame, a canonical element, or a
learned equivariant distribution). Because ``p(g | h·x) = h p(g | x)`` for every strategy, φ is
equivariant exactly (finite groups averaged whole, frames, canonicalisation) or in distribution
(Monte Carlo, probabilistic symmetrisation).

*Kinds* declare how the group acts on each positional input and each output of ``base``:

- ``points`` ``[b, n, d]``: ``group.act_points`` (permuted, rotated and translated);
- ``vectors`` ``[b, n, d]``: ``group.act_vectors`` (permuted and rotated; translations act
  trivially), e.g. velocities;
- ``nodes`` ``[b, n, c]`` or ``[b, n]``: ``group.act_nodes`` (permuted by S_n, otherwise fixed:
  scalar node features);
- ``mask`` ``[b, n]``: a boolean node mask (``True`` = real node), acted on as ``nodes``;
- ``adjacency`` ``[b, n, n]`` or edge features ``[b, n, n, c]``: ``group.act_adjacency``
  (``M A Mᵀ`` for a permutation matrix ``M``);
- ``grid`` ``[b, H, W, c]``: ``group.act_grid``;
- ``invariant``: anything, unchanged (also ``None`` inputs).

Sample-level outputs ``g_i · f(g_i⁻¹ x)`` are averaged over ``i``, so integer or categorical
outputs should be returned as logits / probabilities.

Translations (``Translation``, the translation part of ``Euclidean``/``SpecialEuclidean``, or a
``Translation`` factor of a ``DirectProduct``) are never sampled: every strategy handles them by
*centring* on the (masked) centroid of the first ``points`` input, which makes the result exactly
translation-equivariant with the centroid added back by the output action.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.groups import Euclidean, Group
from approxeq.symmetrize import ops

KINDS = ("points", "vectors", "nodes", "mask", "adjacency", "grid", "invariant")


@dataclass
class GroupSample:
    """What a strategy drew for one forward pass.

    Attributes:
        elements: ``[k, b, *group.element_shape]``, the sampled elements ``g_i`` (per input).
        permutation_matrices: ``[k, b, n, n]`` or ``None``. When the group has an S_n part and the
            strategy is differentiable (probabilistic symmetrisation), the permutation matrices of
            the S_n part with a straight-through gradient: their forward value is exactly the
            hard permutation ``Permutation.matrix(g)``; gradients flow through a Sinkhorn
            relaxation. The wrapper then acts on node-indexed tensors by matrix products.
        regularizers: named scalar terms to add to the loss (e.g. ``{"entropy": ...}``).
        noise: the random draws used (``None`` for deterministic strategies), as accepted back by
            ``Symmetrized.forward(..., noise=...)``; see
            ``ProbabilisticSymmetrization.sample_noise``.
    """

    elements: Tensor
    permutation_matrices: Tensor | None = None
    regularizers: dict[str, Tensor] = field(default_factory=dict)
    noise: dict[str, Tensor] | None = None


@dataclass
class SymmetrizedOutput:
    """Return value of :class:`Symmetrized`.

    Attributes:
        output: the averaged output, a tensor (or a tuple of tensors if ``base`` returns a tuple),
            shaped like ``base``'s output for a batch of ``b``.
        samples: the per-element outputs ``g_i · f(g_i⁻¹ x)`` before averaging, ``[k, b, ...]``
            (tuple if ``output`` is a tuple).
        elements: ``[k, b, *group.element_shape]``, the elements used.
        regularizers: dict of scalar regulariser terms (empty for non-learned strategies).
        noise: the noise draws (probabilistic strategies), else ``None``.
    """

    output: Any
    samples: Any
    elements: Tensor
    regularizers: dict[str, Tensor] = field(default_factory=dict)
    noise: dict[str, Tensor] | None = None


class Strategy(nn.Module):
    """How group elements are drawn for an input: subclasses implement :meth:`sample`."""

    #: whether the number of elements is fixed by the strategy (frames) instead of ``n_samples``
    fixed_count: bool = False

    def sample(self, group: Group, inputs: Sequence[Any], kinds: Sequence[str], n_samples: int, *,
               generator: torch.Generator | None = None,
               noise: dict[str, Tensor] | None = None) -> GroupSample:
        """Draw ``k`` elements per input of the batch.

        Args:
            group: the group to symmetrise over.
            inputs: the base model's positional inputs (batch ``b``), described by ``kinds``.
            kinds: one kind per input (see the module docstring).
            n_samples: requested ``k`` (strategies with ``fixed_count`` may use another ``k``).
            generator: randomness source.
            noise: previously returned noise to reuse (probabilistic strategies only).
        Returns:
            a :class:`GroupSample` with ``elements`` of shape ``[k, b, *group.element_shape]``.
        """
        raise NotImplementedError

    @staticmethod
    def _centroid(st: ops.Structure, inputs: Sequence[Any], kinds: Sequence[str]) -> Tensor | None:
        if st.translation is None:
            return None
        points = ops.find(inputs, kinds, "points")
        if points is None:
            raise ValueError(f"{st.group!r} has translations: one input must be of kind 'points' "
                             f"to centre on, got kinds {tuple(kinds)}")
        return ops.masked_centroid(points, ops.find(inputs, kinds, "mask"))


def _unsupported(strategy: str, factor: Group) -> NotImplementedError:
    return NotImplementedError(f"{strategy} does not support the factor {factor!r}")


class GroupAveraging(Strategy):
    """Averaging over the Haar measure: ``k`` i.i.d. Haar samples, or the whole group.

    Args:
        whole_group: for finite groups (``group.finite``) small enough to enumerate (e.g. S_n up
            to n = 8), average over every element (``k = |G|``, ``n_samples`` ignored), which makes
            the output exactly equivariant. Otherwise ``n_samples`` Haar samples.
    Translations are handled by centring (see the module docstring). With a ``mask`` input,
    Monte-Carlo samples of S_n permute the real nodes uniformly and keep the padding last, as
    probabilistic symmetrisation does, so no sample is spent moving padding around.
    """

    def __init__(self, *, whole_group: bool = True) -> None:
        super().__init__()
        self.whole_group = whole_group

    def sample(self, group, inputs, kinds, n_samples, *, generator=None, noise=None) -> GroupSample:
        b = _batch_size(inputs)
        dtype = None if group.integer_elements else ops.float_dtype(inputs)
        device = _device(inputs)
        if group.finite and self.whole_group:
            try:
                elements = group.elements(dtype=dtype, device=device)
            except ValueError:  # too large to enumerate: fall back to Monte Carlo
                elements = None
            if elements is not None:
                return GroupSample(elements.unsqueeze(1).expand(-1, b, *elements.shape[1:]).clone())
        st = ops.structure(group)
        centroid = self._centroid(st, inputs, kinds)
        mask = ops.find(inputs, kinds, "mask")
        k = n_samples
        parts = []
        for i, f in enumerate(st.factors):
            if i == st.permutation and mask is not None:
                # i.i.d. scores sorted with the padding last: uniform over the real nodes' orders
                u = torch.rand(k * b, f.n, generator=generator, device=device)
                rep_mask = ops.repeat_batch(mask, k)
                parts.append(ops.sort_permutation(u, rep_mask).to(dtype or torch.long))
            elif i == st.translation:
                t = ops.repeat_batch(centroid, k)
                if isinstance(f, Euclidean):
                    r = f.rotation(f.sample(k * b, generator=generator, dtype=t.dtype,
                                            device=device))
                    parts.append(f.from_parts(r, t))
                else:
                    parts.append(t)
            else:
                parts.append(f.sample(k * b, generator=generator, dtype=dtype, device=device))
        g = st.join(parts)
        return GroupSample(g.reshape(k, b, *group.element_shape))


class FrameAveraging(Strategy):
    """Averaging over an equivariant frame ``F(x)`` (Puny et al., 2022).

    * O(d)/SO(d)/E(d)/SE(d): PCA frames of the centred (masked) first ``points`` input, with all
      ``2^d`` sign choices of the eigenvectors (``2^(d-1)`` with det = +1 for SO/SE); translations
      by centring. ``k = 2^d`` (or ``2^(d-1)``) regardless of ``n_samples``, unless
      ``n_frames`` is given, which draws that many frame elements uniformly (stochastic FA).
    * S_n: nodes sorted lexicographically by the absolute values of the Laplacian eigenvectors
      of the first ``adjacency`` input (rounded to ``decimals``), eigenvectors in increasing
      eigenvalue order, ties broken uniformly at random (``k = n_samples`` draws from the frame).
    * Direct products: one frame per factor, combined element-wise.

    The frame is exactly equivariant when the covariance (Laplacian) eigenvalues are distinct;
    with repeated eigenvalues the result stays finite but only approximately equivariant.
    """

    fixed_count = True

    def __init__(self, *, n_frames: int | None = None, decimals: int = 6,
                 n_eigenvectors: int | None = None) -> None:
        super().__init__()
        self.n_frames = n_frames
        self.decimals = decimals
        self.n_eigenvectors = n_eigenvectors

    def sample(self, group, inputs, kinds, n_samples, *, generator=None, noise=None) -> GroupSample:
        st = ops.structure(group)
        b = _batch_size(inputs)
        dtype = ops.float_dtype(inputs)
        mask = ops.find(inputs, kinds, "mask")
        centroid = self._centroid(st, inputs, kinds)
        rotations = None
        k = self.n_frames or n_samples
        if st.rotation is not None:
            points = ops.find(inputs, kinds, "points")
            if points is None:
                raise ValueError("FrameAveraging over rotations needs an input of kind 'points'")
            rotations = ops.pca_frames(points, mask, special=st.special)  # [m, b, d, d]
            if self.n_frames is None:
                k = rotations.shape[0]
            else:
                pick = torch.randint(rotations.shape[0], (self.n_frames, b), generator=generator)
                rotations = torch.gather(rotations, 0, pick.to(points.device)[..., None, None]
                                         .expand(-1, -1, *rotations.shape[2:]))
        parts = []
        for i, f in enumerate(st.factors):
            if i == st.permutation:
                adjacency = ops.find(inputs, kinds, "adjacency")
                if adjacency is None:
                    raise NotImplementedError("FrameAveraging over S_n needs an 'adjacency' input "
                                              "(Laplacian frames); use ProbabilisticSymmetrization")
                keys = ops.laplacian_sort_keys(adjacency, mask, decimals=self.decimals,
                                               n_eigenvectors=self.n_eigenvectors)
                perms = ops.lexsort_frames(keys, mask, k, generator)
                parts.append(perms.reshape(k * b, -1).to(
                    torch.long if group.integer_elements else dtype))
            elif i == st.rotation:
                r = rotations.reshape(k * b, *rotations.shape[2:])
                if isinstance(f, Euclidean):
                    parts.append(f.from_parts(r, ops.repeat_batch(centroid, k)))
                else:
                    parts.append(r)
            elif i == st.translation:
                parts.append(ops.repeat_batch(centroid, k))
            else:
                raise _unsupported("FrameAveraging", f)
        g = st.join(parts)
        return GroupSample(g.reshape(k, b, *group.element_shape))


def _batch_size(inputs: Sequence[Any]) -> int:
    for x in inputs:
        if isinstance(x, Tensor) and x.dim() > 0:
            return x.shape[0]
    raise ValueError("inputs: need at least one tensor input with a batch dimension")


def _device(inputs: Sequence[Any]):
    for x in inputs:
        if isinstance(x, Tensor):
            return x.device
    return None


class Symmetrized(nn.Module):
    """Any ``nn.Module`` made equivariant to ``group`` by averaging over elements from ``strategy``.

    Args:
        base: the model ``f``; called as ``base(*inputs, **kwargs)`` on a batch of ``k·b``
            transformed inputs (sample-major: sample ``i`` of batch item ``j`` is row ``i·b + j``).
        group: e.g. ``Permutation(n)``, ``Orthogonal(3)``,
            ``DirectProduct(Permutation(n), Euclidean(3))``.
        strategy: ``GroupAveraging()``, ``FrameAveraging()``, ``Canonicalization(net)`` or
            ``ProbabilisticSymmetrization(net)``.
        in_kinds: one kind per positional input of ``base`` (e.g. ``("nodes", "adjacency")`` or
            ``("points", "vectors", "nodes")``).
        out_kinds: the kind of ``base``'s output, or one kind per element of a tuple output
            (e.g. ``"invariant"``, ``"nodes"``, ``"points"``).
        n_samples_train: ``k`` in training mode.
        n_samples_eval: ``k`` in evaluation mode.

    Keyword arguments of ``forward`` other than ``generator``/``noise``/``n_samples`` are passed to
    ``base`` (tensors repeated ``k`` times along the batch) and must be invariant.
    """

    def __init__(self, base: nn.Module, group: Group, strategy: Strategy, *,
                 in_kinds: Sequence[str], out_kinds: str | Sequence[str],
                 n_samples_train: int = 1, n_samples_eval: int = 1) -> None:
        super().__init__()
        in_kinds = tuple(in_kinds)
        out_tuple = not isinstance(out_kinds, str)
        out_list = tuple(out_kinds) if out_tuple else (out_kinds,)
        for name, kinds in (("in_kinds", in_kinds), ("out_kinds", out_list)):
            bad = [kd for kd in kinds if kd not in KINDS]
            if bad:
                raise ValueError(f"{name}: unknown kinds {bad}; expected some of {KINDS}")
        for name, value in (("n_samples_train", n_samples_train),
                            ("n_samples_eval", n_samples_eval)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        self.base = base
        self.group = group
        #: the group the symmetrised model is equivariant to (exactly, or in distribution)
        self.symmetry = group
        self.strategy = strategy
        self.in_kinds = in_kinds
        self.out_kinds = out_list
        self._out_tuple = out_tuple
        self.n_samples_train = n_samples_train
        self.n_samples_eval = n_samples_eval
        self._structure = ops.structure(group)

    def forward(self, *inputs: Any, generator: torch.Generator | None = None,
                noise: dict[str, Tensor] | None = None, n_samples: int | None = None,
                **kwargs: Any) -> SymmetrizedOutput:
        """Symmetrised forward pass on inputs of batch ``b`` (shapes per ``in_kinds``)."""
        if len(inputs) != len(self.in_kinds):
            raise ValueError(f"inputs: expected {len(self.in_kinds)} positional inputs "
                             f"(in_kinds={self.in_kinds}), got {len(inputs)}")
        if n_samples is None:
            n_samples = self.n_samples_train if self.training else self.n_samples_eval
        b = _batch_size(inputs)
        drawn = self.strategy.sample(self.group, inputs, self.in_kinds, n_samples,
                                     generator=generator, noise=noise)
        k = drawn.elements.shape[0]
        st = self._structure
        g = drawn.elements.reshape(k * b, *self.group.element_shape)
        matrix = None if drawn.permutation_matrices is None else \
            drawn.permutation_matrices.reshape(k * b, *drawn.permutation_matrices.shape[2:])
        moved = [ops.act(st, g, ops.repeat_batch(x, k), kind, inverse=True, perm_matrix=matrix)
                 for x, kind in zip(inputs, self.in_kinds)]
        kw = {key: (ops.repeat_batch(v, k) if isinstance(v, Tensor) and v.dim() > 0
                    and v.shape[0] == b else v) for key, v in kwargs.items()}
        raw = self.base(*moved, **kw)
        if self._out_tuple and isinstance(raw, Tensor):
            raise ValueError(f"out_kinds: given as a sequence {self.out_kinds}, so base must "
                             f"return a tuple of outputs, but it returned one tensor of shape "
                             f"{list(raw.shape)}; for a single output pass out_kinds as a string, "
                             f"e.g. out_kinds={self.out_kinds[0]!r}")
        raw_list = tuple(raw) if self._out_tuple else (raw,)
        if len(raw_list) != len(self.out_kinds):
            raise ValueError(f"base returned {len(raw_list)} outputs, out_kinds has "
                             f"{len(self.out_kinds)}: {self.out_kinds}")
        samples = []
        for y, kind in zip(raw_list, self.out_kinds):
            y = ops.act(st, g, y, kind, inverse=False, perm_matrix=matrix)
            samples.append(y.reshape(k, b, *y.shape[1:]))
        means = [s.mean(dim=0) if s.is_floating_point() else s.float().mean(dim=0) for s in samples]
        if self._out_tuple:
            return SymmetrizedOutput(tuple(means), tuple(samples), drawn.elements,
                                     drawn.regularizers, drawn.noise)
        return SymmetrizedOutput(means[0], samples[0], drawn.elements, drawn.regularizers,
                                 drawn.noise)

    def transform_noise(self, g: Tensor, noise: dict[str, Tensor]) -> dict[str, Tensor]:
        """The noise draw ``noise`` (from a :class:`SymmetrizedOutput` of batch ``b``) acted on by
        ``g`` (``[b, *element_shape]``), so that with ``noise=transform_noise(g, noise)`` the
        forward pass at ``g·x`` equals ``g`` applied to the forward pass at ``x`` exactly
        (noise outsourcing)."""
        act_noise = getattr(self.strategy, "act_noise", None)
        if act_noise is None:  # only probabilistic strategies draw noise
            raise TypeError(f"{type(self.strategy).__name__} draws no noise to transform")
        kb, b = noise["input"].shape[0], g.shape[0]
        return act_noise(self.group, ops.repeat_batch(g, kb // b), noise)


gram_schmidt = ops.gram_schmidt
sinkhorn = ops.sinkhorn
