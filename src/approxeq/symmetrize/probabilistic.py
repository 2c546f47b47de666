"""Learned equivariant distributions over group elements: probabilistic symmetrisation (Kim et
al., NeurIPS 2023) and canonicalisation, its deterministic limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.groups import Euclidean, Group
from approxeq.symmetrize import ops
from approxeq.symmetrize.base import GroupSample, Strategy, _device, _unsupported


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
