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


class ProbabilisticSymmetrization(Strategy):
    """Learned equivariant distribution ``p(g | x)`` by noise outsourcing (Kim et al., 2023).

    The network ``q`` is called as ``network(*inputs, noise=eps)`` on the (centred, if the group
    has translations) inputs and invariant noise ``eps``; it must be equivariant:
    ``q(g·x, g·eps) = g·q(x, eps)``. It returns a tensor, a ``(scores, vectors)`` tuple, or a
    dict with

    * ``"scores"``: ``[b, n]`` (or ``[b, n, 1]``) S_n-equivariant, otherwise invariant node scores
      (needed if the group has an S_n part);
    * ``"vectors"``: ``[b, d, d]``, ``d`` O(d)-equivariant, S_n-invariant vectors (rows), needed
      if the group has a rotation part.

    A bare tensor is read as ``"scores"`` for pure S_n and as ``"vectors"`` otherwise.
    Ready-made networks: :class:`~approxeq.symmetrize.GraphScoreNetwork` (GIN + virtual node)
    and :class:`~approxeq.symmetrize.PointCloudFrameNetwork` (vector neurons).

    Noise (:meth:`sample_noise`): ``"input"`` is ``[b, n, noise_dim]`` i.i.d. U(0, noise_scale)
    (``noise_kind="nodes"``, default for S_n alone) or ``[b, n, noise_dim, d]`` i.i.d.
    N(0, noise_scale²) (``noise_kind="vectors"``, default when the group has a rotation or
    translation part); ``"tie"`` is ``[b, n]`` U(0, tie_noise) added to the scores; ``"jitter"`` is
    ``[b, d, d]`` N(0, jitter²) added to the vectors. All three have leading dimension ``k·b``.

    Post-processing: S_n: argsort of the scores (descending; masked nodes last) gives the hard
    permutation; a SoftSort relaxation ``log P̂[i, j] = −|s_i − s_(j)| / tau`` with
    ``sinkhorn_iters`` log-domain Sinkhorn iterations gives the straight-through gradient and the
    ``"entropy"`` regulariser (row + column entropy of P̂, averaged). Scores are L2-normalised over
    valid nodes first (changes only the gradient). O(d): Gram–Schmidt of the vectors (SO(d): first
    column times the determinant). Translations: centring.

    Args:
        network: the equivariant network ``q``.
        noise_scale: ``η``; 0 gives a deterministic canonicaliser (up to tie noise).
        noise_dim: channels of input noise.
        noise_kind: ``"nodes"`` or ``"vectors"`` (default chosen from the group).
        tau: Sinkhorn temperature.
        sinkhorn_iters: number of log-domain Sinkhorn iterations.
        tie_noise: scale of the uniform tie-breaking noise on scores.
        jitter: standard deviation of the Gaussian jitter on the vectors.
        hard: straight-through hard permutations (``True``) or soft P̂ (``False``, not a group
            element: for ablations only).
    """

    def __init__(self, network: nn.Module, *, noise_scale: float = 1.0, noise_dim: int = 1,
                 noise_kind: str | None = None, tau: float = 0.01, sinkhorn_iters: int = 20,
                 tie_noise: float = 1e-6, jitter: float = 1e-6, hard: bool = True) -> None:
        super().__init__()
        if noise_kind not in (None, "nodes", "vectors"):
            raise ValueError(f"noise_kind must be 'nodes', 'vectors' or None, got {noise_kind!r}")
        self.network = network
        self.noise_scale = noise_scale
        self.noise_dim = noise_dim
        self.noise_kind = noise_kind
        self.tau = tau
        self.sinkhorn_iters = sinkhorn_iters
        self.tie_noise = tie_noise
        self.jitter = jitter
        self.hard = hard

    def _noise_kind(self, st: ops.Structure) -> str:
        if self.noise_kind is not None:
            return self.noise_kind
        geometric = st.rotation is not None or st.translation is not None
        return "vectors" if geometric else "nodes"

    def sample_noise(self, group: Group, inputs: Sequence[Any], kinds: Sequence[str],
                     n_samples: int, *, generator: torch.Generator | None = None
                     ) -> dict[str, Tensor]:
        """Fresh noise for ``n_samples`` draws per input: a dict with ``"input"`` and, where the
        group has the corresponding part, ``"tie"`` (S_n) and ``"jitter"`` (rotations); see the
        class docstring for shapes."""
        st = ops.structure(group)
        b, n = ops.node_set_size(inputs, kinds)
        kb = n_samples * b
        dtype, device = ops.float_dtype(inputs), _device(inputs)
        noise: dict[str, Tensor] = {}
        if self._noise_kind(st) == "nodes":
            u = torch.rand(kb, n, self.noise_dim, generator=generator, dtype=dtype, device=device)
            noise["input"] = u * self.noise_scale
        else:
            if group.dim is None:
                raise ValueError(f"noise_kind='vectors' needs a group acting on R^d, got {group!r}")
            z = torch.randn(kb, n, self.noise_dim, group.dim, generator=generator, dtype=dtype,
                            device=device)
            noise["input"] = z * self.noise_scale
        if st.permutation is not None:
            noise["tie"] = torch.rand(kb, n, generator=generator, dtype=dtype,
                                      device=device) * self.tie_noise
        if st.rotation is not None:
            d = group.dim
            noise["jitter"] = torch.randn(kb, d, d, generator=generator, dtype=dtype,
                                          device=device) * self.jitter
        return noise

    def act_noise(self, group: Group, g: Tensor, noise: dict[str, Tensor]) -> dict[str, Tensor]:
        """``g · noise`` for ``g`` ``[k·b, *element_shape]``: input noise and tie noise are
        permuted with the nodes, vector noise and jitter rotated."""
        st = ops.structure(group)
        parts = st.split(g)
        out = dict(noise)
        for i, f in enumerate(st.factors):
            part = parts[i]
            if i == st.permutation:
                out = {key: (f.act_nodes(part, v) if key in ("input", "tie") else v)
                       for key, v in out.items()}
            elif i == st.rotation:
                rot = f.rotation(part)
                for key in ("input", "jitter"):
                    if key in out and (key == "jitter" or out[key].dim() == 4):
                        out[key] = torch.einsum("bij,b...j->b...i", rot.to(out[key].dtype),
                                                out[key])
        return out

    def sample(self, group, inputs, kinds, n_samples, *, generator=None, noise=None) -> GroupSample:
        st = ops.structure(group)
        for i, f in enumerate(st.factors):
            if i not in (st.permutation, st.rotation, st.translation):
                raise _unsupported(type(self).__name__, f)
        b, n = ops.node_set_size(inputs, kinds)
        k = n_samples
        dtype, device = ops.float_dtype(inputs), _device(inputs)
        mask = ops.find(inputs, kinds, "mask")
        centroid = self._centroid(st, inputs, kinds)
        if centroid is not None:
            shift = ops.translation_part(st, centroid, b, dtype, device)
            inputs = [ops.act(st, shift, x, kind, inverse=True) for x, kind in zip(inputs, kinds)]
        if noise is None:
            noise = self.sample_noise(group, inputs, kinds, k, generator=generator)
        elif noise["input"].shape[0] != k * b:
            raise ValueError(f"noise['input'] must have leading dim k*b = {k * b}, "
                             f"got {tuple(noise['input'].shape)}")
        out = self.network(*[ops.repeat_batch(x, k) for x in inputs], noise=noise["input"])
        scores, vectors = self._read(st, out)
        rep_mask = ops.repeat_batch(mask, k)
        regularizers: dict[str, Tensor] = {}
        parts: list[Tensor] = []
        perm_matrix = None
        for i, f in enumerate(st.factors):
            if i == st.permutation:
                s = scores + noise["tie"].to(scores.dtype)
                perm = ops.sort_permutation(s.detach(), rep_mask)
                soft, entropy = ops.soft_permutation(s, perm, rep_mask, tau=self.tau,
                                                     n_iters=self.sinkhorn_iters)
                hard = f.matrix(perm, dtype=soft.dtype)
                perm_matrix = hard + soft - soft.detach() if self.hard else soft
                regularizers["entropy"] = entropy.mean()
                parts.append(perm.to(dtype) if not group.integer_elements else perm)
            elif i == st.rotation:
                v = vectors + noise["jitter"].to(vectors.dtype)
                q = ops.gram_schmidt(v, special=st.special)
                if isinstance(f, Euclidean):
                    parts.append(f.from_parts(q, ops.repeat_batch(centroid, k)))
                else:
                    parts.append(q)
            else:
                parts.append(ops.repeat_batch(centroid, k))
        g = st.join(parts)
        if perm_matrix is not None:
            perm_matrix = perm_matrix.reshape(k, b, n, n)
        return GroupSample(g.reshape(k, b, *group.element_shape), perm_matrix, regularizers, noise)

    @staticmethod
    def _read(st: ops.Structure, out: Any) -> tuple[Tensor | None, Tensor | None]:
        if isinstance(out, dict):
            scores, vectors = out.get("scores"), out.get("vectors")
        elif isinstance(out, (tuple, list)):
            scores, vectors = out
        elif st.permutation is not None and st.rotation is None:
            scores, vectors = out, None
        elif st.permutation is None:
            scores, vectors = None, out
        else:
            raise TypeError("the network must return (scores, vectors) or a dict for a group with "
                            "both S_n and rotation parts")
        if st.permutation is not None:
            if scores is None:
                raise ValueError("the network returned no 'scores' for the S_n part")
            if scores.dim() == 3:
                scores = scores.squeeze(-1)
        if st.rotation is not None:
            d = st.group.dim
            if vectors is None or vectors.shape[-2:] != (d, d):
                raise ValueError(f"the network must return 'vectors' of shape [b, {d}, {d}], got "
                                 f"{None if vectors is None else tuple(vectors.shape)}")
        return scores, vectors


class Canonicalization(ProbabilisticSymmetrization):
    """Learned canonicalisation (Kaba et al., 2023): one element ``g = post(q(x))`` per input.

    The same network protocol and post-processing as :class:`ProbabilisticSymmetrization`, with
    zero input noise and ``k = 1`` always. The tiny tie-breaking noise (S_n) and jitter (O(d)) are
    kept, so inputs with automorphisms or symmetric point clouds get a random valid canonical
    element instead of one chosen by node index (or a rank-deficient matrix).
    """

    fixed_count = True

    def __init__(self, network: nn.Module, *, noise_dim: int = 1, noise_kind: str | None = None,
                 tau: float = 0.01, sinkhorn_iters: int = 20, tie_noise: float = 1e-6,
                 jitter: float = 1e-6, hard: bool = True) -> None:
        super().__init__(network, noise_scale=0.0, noise_dim=noise_dim, noise_kind=noise_kind,
                         tau=tau, sinkhorn_iters=sinkhorn_iters, tie_noise=tie_noise,
                         jitter=jitter, hard=hard)

    def sample(self, group, inputs, kinds, n_samples, *, generator=None, noise=None) -> GroupSample:
        return super().sample(group, inputs, kinds, 1, generator=generator, noise=noise)


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
        if not isinstance(self.strategy, ProbabilisticSymmetrization):
            raise TypeError(f"{type(self.strategy).__name__} draws no noise to transform")
        kb, b = noise["input"].shape[0], g.shape[0]
        return self.strategy.act_noise(self.group, ops.repeat_batch(g, kb // b), noise)


gram_schmidt = ops.gram_schmidt
sinkhorn = ops.sinkhorn
