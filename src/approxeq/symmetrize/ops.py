"""Numerical building blocks of the symmetrisers: Gram–Schmidt, Sinkhorn, frames, centring,
and how a group splits into permutation / rotation / translation parts."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from approxeq.groups import DirectProduct, Euclidean, Group, Orthogonal, Permutation, Translation

# ---------------------------------------------------------------------------------------------
# Group structure


@dataclass
class Structure:
    """A group seen as factors; indices of its S_n, rotation and translation parts."""

    group: Group
    factors: tuple[Group, ...]
    permutation: int | None
    rotation: int | None
    translation: int | None

    @property
    def special(self) -> bool:
        return bool(getattr(self.factors[self.rotation], "special", False))

    def split(self, g: Tensor) -> list[Tensor]:
        if isinstance(self.group, DirectProduct):
            return self.group.split(g)
        return [g]

    def join(self, parts: Sequence[Tensor]) -> Tensor:
        if isinstance(self.group, DirectProduct):
            return self.group.join(*parts)
        return parts[0]


def structure(group: Group) -> Structure:
    factors = tuple(group.factors) if isinstance(group, DirectProduct) else (group,)
    perm = rot = trans = None
    for i, f in enumerate(factors):
        if isinstance(f, Permutation):
            perm = _only(perm, i, group, "S_n")
        elif isinstance(f, Euclidean):
            rot = _only(rot, i, group, "rotation")
            trans = _only(trans, i, group, "translation")
        elif isinstance(f, Orthogonal):
            rot = _only(rot, i, group, "rotation")
        elif isinstance(f, Translation):
            trans = _only(trans, i, group, "translation")
    if rot is not None and trans is not None and rot != trans:
        raise ValueError(f"{group!r}: rotations and translations do not form a direct product; "
                         "use Euclidean(d) / SpecialEuclidean(d) as one factor")
    return Structure(group, factors, perm, rot, trans)


def _only(current: int | None, i: int, group: Group, what: str) -> int:
    if current is not None:
        raise ValueError(f"{group!r} has more than one {what} factor")
    return i


# ---------------------------------------------------------------------------------------------
# Inputs


def find(inputs: Sequence[Any], kinds: Sequence[str], *wanted: str) -> Tensor | None:
    """The first input whose kind is in ``wanted`` (``None`` if absent)."""
    for x, kind in zip(inputs, kinds):
        if kind in wanted and isinstance(x, Tensor):
            return x
    return None


def node_set_size(inputs: Sequence[Any], kinds: Sequence[str]) -> tuple[int, int]:
    """``(batch, n)`` from the first node-indexed input."""
    ref = find(inputs, kinds, "nodes", "points", "vectors", "mask", "adjacency")
    if ref is None:
        raise ValueError("in_kinds: need at least one node-indexed input (points, vectors, nodes, "
                         f"mask or adjacency), got {tuple(kinds)}")
    return ref.shape[0], ref.shape[1]


def float_dtype(inputs: Sequence[Any]) -> torch.dtype:
    for x in inputs:
        if isinstance(x, Tensor) and x.is_floating_point():
            return x.dtype
    return torch.get_default_dtype()


def masked_centroid(points: Tensor, mask: Tensor | None) -> Tensor:
    """``[b, d]`` mean of ``points`` ``[b, n, d]`` over valid nodes."""
    if mask is None:
        return points.mean(dim=1)
    m = mask.to(points.dtype).unsqueeze(-1)
    return (points * m).sum(1) / m.sum(1).clamp_min(1)


def repeat_batch(x: Any, k: int) -> Any:
    """Tensor ``[b, ...]`` → ``[k·b, ...]`` (sample-major); anything else unchanged."""
    if not isinstance(x, Tensor) or x.dim() == 0:
        return x
    return x.unsqueeze(0).expand(k, *x.shape).reshape(k * x.shape[0], *x.shape[1:])


# ---------------------------------------------------------------------------------------------
# O(d)


def gram_schmidt(vectors: Tensor, *, special: bool = False) -> Tensor:
    """Orthonormalise ``d`` vectors (rows of ``vectors``, ``[..., d, d]``) by classical
    Gram–Schmidt; returns ``Q`` ``[..., d, d]`` whose *columns* are the orthonormal vectors, so
    ``Q(v Rᵀ) = R Q(v)``. ``special=True`` multiplies the first column by ``det Q`` (Q ∈ SO(d))."""
    if vectors.dim() < 2 or vectors.shape[-1] != vectors.shape[-2]:
        raise ValueError(f"vectors must have shape [..., d, d], got {tuple(vectors.shape)}")
    columns: list[Tensor] = []
    for i in range(vectors.shape[-1]):
        u = vectors[..., i, :]
        for q in columns:
            u = u - (u * q).sum(-1, keepdim=True) * q
        columns.append(u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    q = torch.stack(columns, dim=-1)
    if special:
        det = torch.linalg.det(q).sign().detach()
        det = torch.where(det == 0, torch.ones_like(det), det)
        q = torch.cat([q[..., :, :1] * det[..., None, None], q[..., :, 1:]], dim=-1)
    return q


def pca_frames(points: Tensor, mask: Tensor | None, *, special: bool) -> Tensor:
    """``[m, b, d, d]`` frame rotations from the principal axes of centred ``points``
    ``[b, n, d]``: every sign choice of the eigenvectors (``m = 2^d``; det = +1 only if
    ``special``, ``m = 2^(d-1)``)."""
    b, _, d = points.shape
    centred = points - masked_centroid(points, mask).unsqueeze(1)
    if mask is not None:
        centred = centred * mask.to(points.dtype).unsqueeze(-1)
    cov = centred.transpose(1, 2) @ centred
    _, vecs = torch.linalg.eigh(cov)
    signs = torch.tensor(list(itertools.product([1.0, -1.0], repeat=d)), dtype=points.dtype,
                         device=points.device)  # [2^d, d]
    frames = vecs.unsqueeze(0) * signs[:, None, None, :]
    if special:
        keep = torch.linalg.det(frames) > 0  # [2^d, b]
        frames = torch.stack([frames[:, j][keep[:, j]] for j in range(b)], dim=1)
    return frames


# ---------------------------------------------------------------------------------------------
# S_n


def sort_permutation(scores: Tensor, mask: Tensor | None) -> Tensor:
    """``[b, n]`` elements ``g`` with ``g[r]`` = the node of rank ``r`` (scores descending,
    masked nodes last). ``g⁻¹`` puts nodes into that order; ``g(h·x) = h g(x)``."""
    if mask is not None:
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
    return torch.argsort(scores, dim=-1, descending=True, stable=True)


def sinkhorn(log_alpha: Tensor, n_iters: int = 20, mask: Tensor | None = None) -> Tensor:
    """Log-domain Sinkhorn normalisation of ``[..., n, n]`` logits into a doubly stochastic
    matrix (rows then columns, ``n_iters`` times); ``mask`` ``[..., n, n]`` (bool) marks the
    entries allowed to be non-zero (entries outside it are 0); every row and column needs one."""
    if mask is not None:
        log_alpha = log_alpha.masked_fill(~mask, float("-inf"))
    for _ in range(n_iters):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)
    return log_alpha.exp()


def soft_permutation(scores: Tensor, g: Tensor, mask: Tensor | None, *, tau: float,
                     n_iters: int) -> tuple[Tensor, Tensor]:
    """SoftSort + Sinkhorn relaxation ``P̂`` ``[b, n, n]`` (``P̂[node, rank]``) of the hard
    permutation matrix of ``g`` (from :func:`sort_permutation`), and its row + column entropy
    ``[b]`` over valid nodes. Outside the valid block ``P̂`` equals the hard matrix."""
    b, n = scores.shape
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
    safe = torch.where(valid, scores, torch.zeros_like(scores))
    norm = (safe * safe).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
    safe = safe / norm
    sorted_scores = torch.gather(safe, 1, g)
    logits = -(safe.unsqueeze(-1) - sorted_scores.unsqueeze(-2)).abs() / tau
    hard = Permutation(n).matrix(g, dtype=scores.dtype)
    n_valid = valid.sum(-1, keepdim=True)
    valid_rank = torch.arange(n, device=scores.device).unsqueeze(0) < n_valid
    block = valid.unsqueeze(-1) & valid_rank.unsqueeze(-2)
    allowed = block | (hard > 0)
    logits = torch.where(block, logits, torch.zeros_like(logits))
    soft = sinkhorn(logits, n_iters, allowed)
    soft = torch.where(block, soft, hard)
    # Sinkhorn entries can underflow to exactly 0 in float32; log(0) would make the gradient
    # of xlogy NaN there, so the logarithm's argument is kept at the smallest normal number.
    plogp = torch.special.xlogy(soft, soft.clamp_min(torch.finfo(soft.dtype).tiny))
    plogp = plogp * block.to(soft.dtype)
    count = n_valid.squeeze(-1).clamp_min(1).to(soft.dtype)
    entropy = -(plogp.sum(-1).sum(-1) / count) * 2  # rows and columns sum to the same total
    return soft, entropy


def laplacian_sort_keys(adjacency: Tensor, mask: Tensor | None, *, decimals: int,
                        n_eigenvectors: int | None) -> Tensor:
    """``[b, n, m]`` node keys: absolute values of the graph Laplacian's eigenvectors
    (increasing eigenvalue), rounded to ``decimals``. Padded nodes get decoupled, large
    eigenvalues so they do not mix with the graph's own eigenvectors."""
    a = adjacency.to(torch.float64)
    if a.dim() == 4:
        a = (a != 0).any(-1).to(torch.float64)
    lap = torch.diag_embed(a.sum(-1)) - a
    if mask is not None:
        invalid = ~mask.bool()
        pair = invalid.unsqueeze(-1) | invalid.unsqueeze(-2)
        lap = lap.masked_fill(pair, 0.0) + torch.diag_embed(invalid.to(torch.float64)) * (
            1e3 * (1 + a.shape[-1]))
    _, vecs = torch.linalg.eigh(lap)
    if n_eigenvectors is not None:
        vecs = vecs[..., :n_eigenvectors]
    scale = 10.0 ** decimals
    return torch.round(vecs.abs() * scale) / scale


def lexsort_frames(keys: Tensor, mask: Tensor | None, k: int,
                   generator: torch.Generator | None) -> Tensor:
    """``[k, b, n]`` elements ordering nodes lexicographically by ``keys`` ``[b, n, m]`` (first
    column most significant; valid nodes first), ties broken uniformly at random."""
    b, n, m = keys.shape
    out = []
    for _ in range(k):
        order = torch.argsort(torch.rand(b, n, generator=generator), dim=-1).to(keys.device)
        for j in reversed(range(m)):
            key = torch.gather(keys[..., j], 1, order)
            order = torch.gather(order, 1, torch.argsort(key, dim=-1, stable=True))
        if mask is not None:
            invalid = torch.gather((~mask.bool()).to(torch.int64), 1, order)
            order = torch.gather(order, 1, torch.argsort(invalid, dim=-1, stable=True))
        out.append(order)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# Actions with straight-through permutation matrices


def act(st: Structure, g: Tensor, x: Any, kind: str, *, inverse: bool,
        perm_matrix: Tensor | None = None) -> Any:
    """``g · x`` (or ``g⁻¹ · x`` if ``inverse``) for data of the given kind; the S_n part acts by
    ``perm_matrix`` ``[b, n, n]`` (``M`` with ``g·X = M X``) when given, so gradients flow
    through a straight-through matrix."""
    if kind == "invariant" or not isinstance(x, Tensor):
        return x
    group = st.group
    if perm_matrix is None or kind == "mask":
        return group.act(group.inverse(g) if inverse else g, x, kind)
    parts = st.split(g)
    for i in reversed(range(len(st.factors))):
        f, part = st.factors[i], parts[i]
        if i == st.permutation:
            x = _matrix_act(perm_matrix, x, kind, inverse)
        else:
            x = f.act(f.inverse(part) if inverse else part, x, kind)
    return x


def _matrix_act(m: Tensor, x: Tensor, kind: str, inverse: bool) -> Tensor:
    m = m.to(x.dtype)
    if inverse:
        m = m.transpose(-1, -2)
    if kind == "adjacency":
        if x.dim() == 4:
            return torch.einsum("bij,bjkc,blk->bilc", m, x, m)
        return m @ x @ m.transpose(-1, -2)
    if kind == "grid":
        raise ValueError("S_n does not act on grids")
    if x.dim() == 2:
        return (m @ x.unsqueeze(-1)).squeeze(-1)
    return torch.einsum("bij,bj...->bi...", m, x)


def translation_part(st: Structure, centroid: Tensor, batch: int, dtype, device) -> Tensor:
    """Element of the whole group that is the identity except for translation ``centroid``."""
    parts = []
    for i, f in enumerate(st.factors):
        if i == st.translation and isinstance(f, Euclidean):
            eye = torch.eye(f.dim, dtype=dtype, device=device).expand(batch, -1, -1)
            parts.append(f.from_parts(eye, centroid))
        elif i == st.translation:
            parts.append(centroid)
        else:
            parts.append(f.identity(batch, dtype=dtype, device=device))
    return st.join(parts)

