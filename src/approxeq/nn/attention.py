"""Multi-head attention and pre-LayerNorm transformer layers (self- and cross-attention).

Every attention here accepts an optional key mask and an empty key set: a query with no
(valid) key receives exactly zero from the attention, so that a transformer layer reduces to its
feed-forward block and an empty context set is well-defined (no NaN from a softmax over
nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxeq.nn.mlp import make_activation


def check_key_mask(key_mask: Tensor | None, batch: int, n_keys: int) -> Tensor | None:
    """Validate a key mask ``[batch, n_keys]`` (bool, ``True`` = attend)."""
    if key_mask is None:
        return None
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask: expected a bool tensor, got "
                        f"{getattr(key_mask, 'dtype', type(key_mask).__name__)}")
    if tuple(key_mask.shape) != (batch, n_keys):
        raise ValueError(f"key_mask: expected shape [batch, n_keys] = [{batch}, {n_keys}], "
                         f"got {list(key_mask.shape)}")
    return key_mask


def masked_attention(logits: Tensor, values: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Softmax over keys of ``logits`` ``[b, h, nq, nk]`` applied to ``values`` ``[b, h, nk, dv]``.

    Masked keys (``key_mask [b, nk]`` false) get weight exactly zero, and a query without any
    valid key gets output zero (instead of the NaN of a softmax over ``-inf`` only).
    Returns ``[b, h, nq, dv]``.
    """
    if logits.shape[-1] == 0:
        return values.new_zeros(*logits.shape[:-1], values.shape[-1])
    if key_mask is None:
        return torch.softmax(logits, dim=-1) @ values
    valid = key_mask[:, None, None, :]
    # The finite fill keeps fully masked rows NaN-free; the product with `valid` zeroes them.
    logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    weights = torch.softmax(logits, dim=-1) * valid.to(logits.dtype)
    return weights @ values


def dot_product_attention(q: Tensor, k: Tensor, v: Tensor,
                          key_mask: Tensor | None = None) -> Tensor:
    """``masked_attention(q kᵀ / √d, v, key_mask)`` through torch's fused
    ``scaled_dot_product_attention``, which on the CPU and on GPUs holds no
    ``[b, h, nq, nk]`` array (memory linear in the number of keys).

    ``q [b, h, nq, d]``, ``k [b, h, nk, d]``, ``v [b, h, nk, dv]``, ``key_mask [b, nk]`` (bool,
    ``True`` = attend). A query without a valid key gets output zero. Returns ``[b, h, nq, dv]``.
    """
    if k.shape[-2] == 0:
        return v.new_zeros(*q.shape[:-1], v.shape[-1])
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    # A task without any valid key attends to every key instead (no NaN in the values or the
    # gradients on any backend), and its output is then zeroed.
    empty = ~key_mask.any(-1)
    mask = key_mask | empty[:, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    return out.masked_fill(empty[:, None, None, None], 0.0)


class AttentionHeads(nn.Module):
    """The learned parts every multi-head attention here shares: query, key and value
    projections to ``num_heads`` heads of width ``dim_head`` and the output projection. It has
    no ``forward``: each attention defines its own, with the inputs it needs (plain attention
    reads tokens only, translation-equivariant attention their locations too).

    Args:
        dim: token width (queries and keys/values). num_heads: number of heads.
        dim_head: width of each head (default ``dim // num_heads``).
    """

    def __init__(self, dim: int, num_heads: int, dim_head: int | None = None) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads: expected >= 1, got {num_heads}")
        if dim_head is None:
            if dim % num_heads:
                raise ValueError(f"num_heads: {num_heads} does not divide the token width {dim}")
            dim_head = dim // num_heads
        self.dim, self.num_heads, self.dim_head = dim, num_heads, dim_head
        inner = num_heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def split_heads(self, z: Tensor) -> Tensor:
        """``[b, n, h * d_h]`` -> ``[b, h, n, d_h]``."""
        return z.unflatten(-1, (self.num_heads, self.dim_head)).transpose(1, 2)

    def merge_heads(self, z: Tensor) -> Tensor:
        """``[b, h, n, d_h]`` -> ``[b, n, h * d_h]``."""
        return z.transpose(1, 2).flatten(-2)

    def output(self, attended: Tensor, key_mask: Tensor | None, n_keys: int) -> Tensor:
        """Project merged heads, keeping queries without valid keys at exactly zero."""
        out = self.to_out(self.merge_heads(attended))
        if n_keys == 0:
            return torch.zeros_like(out)
        if key_mask is not None:
            out = out * key_mask.any(-1)[:, None, None].to(out.dtype)
        return out


class MultiHeadAttention(AttentionHeads):
    """Multi-head dot-product attention from query tokens to key/value tokens.

    Args:
        dim: token width (queries and keys/values). num_heads: number of heads.
        dim_head: width of each head (default ``dim // num_heads``).

    Shapes: ``forward(zq [b, nq, dim], zk [b, nk, dim], key_mask [b, nk] | None)`` returns
    ``[b, nq, dim]``; ``nk`` may be 0. The attention runs through
    :func:`dot_product_attention` (torch's fused kernel), so its memory is linear in ``nk``.
    """

    #: run through torch's fused kernel; False computes the ``[b, h, nq, nk]`` logits and
    #: :func:`masked_attention` (the kernel as it was, for benchmarks)
    fused = True

    def forward(self, zq: Tensor, zk: Tensor, key_mask: Tensor | None = None) -> Tensor:
        if zq.dim() != 3 or zk.dim() != 3 or zq.shape[0] != zk.shape[0]:
            raise ValueError(f"zq, zk: expected [batch, n, {self.dim}] with equal batch sizes, "
                             f"got {list(zq.shape)} and {list(zk.shape)}")
        key_mask = check_key_mask(key_mask, zk.shape[0], zk.shape[1])
        q, k, v = self.split_heads(self.to_q(zq)), self.split_heads(self.to_k(zk)), \
            self.split_heads(self.to_v(zk))
        if self.fused:
            attended = dot_product_attention(q, k, v, key_mask)
        else:
            logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.dim_head)
            attended = masked_attention(logits, v, key_mask)
        return self.output(attended, key_mask, zk.shape[1])


class FeedForward(nn.Module):
    """Point-wise two-layer feed-forward block ``[..., dim] -> [..., dim]``."""

    def __init__(self, dim: int, hidden: int, activation: str | Callable[[], nn.Module] = "relu"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), make_activation(activation),
                                 nn.Linear(hidden, dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class CrossAttentionLayer(nn.Module):
    """Pre-LayerNorm transformer layer in which queries attend to a separate token set:
    ``zq ← zq + MHA(LN(zq), LN(zk)); zq ← zq + FF(LN(zq))``.

    Args:
        dim: token width. num_heads: heads. feedforward_dim: hidden width of the feed-forward
        block (default ``dim``). activation: feed-forward activation.

    Shapes: ``forward(zq [b, nq, dim], zk [b, nk, dim], key_mask [b, nk] | None)`` returns
    ``[b, nq, dim]``.
    """

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int | None = None,
                 activation: str | Callable[[], nn.Module] = "relu") -> None:
        super().__init__()
        self.attention = MultiHeadAttention(dim, num_heads)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.feedforward = FeedForward(dim, feedforward_dim or dim, activation)

    def forward(self, zq: Tensor, zk: Tensor, key_mask: Tensor | None = None) -> Tensor:
        zq = zq + self.attention(self.norm_q(zq), self.norm_k(zk), key_mask)
        return zq + self.feedforward(self.norm_ff(zq))


class SelfAttentionLayer(nn.Module):
    """Pre-LayerNorm transformer layer with self-attention:
    ``z ← z + MHA(LN(z), LN(z)); z ← z + FF(LN(z))``. Masked tokens still get updated (from the
    valid ones) but are never attended to.

    Shapes: ``forward(z [b, n, dim], mask [b, n] | None)`` returns ``[b, n, dim]``.
    """

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int | None = None,
                 activation: str | Callable[[], nn.Module] = "relu") -> None:
        super().__init__()
        self.attention = MultiHeadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.feedforward = FeedForward(dim, feedforward_dim or dim, activation)

    def forward(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        zn = self.norm(z)
        z = z + self.attention(zn, zn, mask)
        return z + self.feedforward(self.norm_ff(z))
