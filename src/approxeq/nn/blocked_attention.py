"""Bounded-memory attention whose logits are a learned function of each (query, key) pair.

The translation-equivariant attentions compute every logit with an MLP of the pair's dot
products and locations, so torch's fused attention kernels do not apply and the plain form
holds ``[batch, heads, n_query, n_key]`` arrays (and the MLP's hidden activations on every
pair). :func:`blocked_pair_attention` computes the same attention in tiles of ``query_chunk``
queries by ``key_block`` keys with an online softmax (a running maximum, normaliser and
weighted sum of values per query, as in FlashAttention), so the memory is that of one tile plus
``O(n_query + n_key)`` per head, whatever the sizes.

The backward pass (:class:`BlockedPairAttention`, a ``torch.autograd.Function``) stores only the
inputs, the output and each query's log-normaliser; it recomputes each tile's logits, with the
pair function's graph, and back-propagates the tile's logit gradient
``dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O))`` through it. Double backward is not supported.

A query without any valid key (empty or fully masked key set) gets output zero and no gradient,
as :func:`approxeq.nn.attention.masked_attention` gives it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

#: ``f(dots [h, b, cq, ck], fq [b, cq, F], fk [b, ck, F]) -> logits [b, cq, ck, h]``: the
#: logits of a tile from its scaled dot products (heads first) and the location features of
#: its queries and keys
PairLogits = Callable[[Tensor, Tensor, Tensor], Tensor]


def _tile_logits(pair_logits: PairLogits, q: Tensor, k: Tensor, fq: Tensor, fk: Tensor,
                 mask: Tensor | None, scale: float) -> Tensor:
    """Logits ``[b, h, cq, ck]`` of one tile, masked keys at ``-inf``; ``q [h, b, cq, d]``,
    ``k [h, b, ck, d]``."""
    dots = (q @ k.transpose(-1, -2)) / scale
    logits = pair_logits(dots, fq, fk).permute(0, 3, 1, 2)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], -math.inf)
    return logits


@contextmanager
def _bound(slots: Sequence[tuple[nn.Module, str]], tensors: Sequence[Tensor]) -> Iterator[None]:
    """The parameter slots ``(module, name)`` hold ``tensors`` inside the block: the backward
    pass recomputes with the tensors the forward pass used, even where they were swapped in
    for the call only (``torch.func.functional_call``)."""
    saved = [module._parameters[name] for module, name in slots]
    try:
        for (module, name), tensor in zip(slots, tensors):
            module._parameters[name] = tensor
        yield
    finally:
        for (module, name), tensor in zip(slots, saved):
            module._parameters[name] = tensor


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def _forward_chunk(pair_logits: PairLogits, q: Tensor, k: Tensor, v: Tensor, fq: Tensor,
                   fk: Tensor, mask: Tensor | None, scale: float,
                   key_block: int) -> tuple[Tensor, Tensor]:
    """Output ``[b, h, cq, dv]`` and log-normaliser ``[b, h, cq]`` (``+inf`` for a query without
    valid keys) of a chunk of queries, over every key block."""
    h, b, cq = q.shape[0], q.shape[1], q.shape[2]
    m = q.new_full((b, h, cq), -math.inf)
    l = q.new_zeros(b, h, cq)  # noqa: E741
    acc = q.new_zeros(b, h, cq, v.shape[-1])
    for k0, k1 in _spans(k.shape[2], key_block):
        s = _tile_logits(pair_logits, q, k[:, :, k0:k1], fq, fk[:, k0:k1],
                         None if mask is None else mask[:, k0:k1], scale)
        m_new = torch.maximum(m, s.amax(-1))
        # a query whose keys so far are all masked keeps m = -inf: subtract 0 instead
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - m_safe[..., None])
        alpha = torch.exp(m - m_safe)
        l = alpha * l + p.sum(-1)  # noqa: E741
        acc = alpha[..., None] * acc + p @ v[:, :, k0:k1]
        m = m_new
    valid = l > 0
    out = torch.where(valid[..., None], acc / torch.where(valid, l, 1.0)[..., None], 0.0)
    lse = torch.where(valid, m + torch.log(torch.where(valid, l, 1.0)), math.inf)
    return out, lse


class BlockedPairAttention(torch.autograd.Function):
    """The autograd function of :func:`blocked_pair_attention` (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, fq, fk, mask, pair_logits, tiles, slots, *params):  # noqa: D102
        query_chunk, key_block = tiles
        scale = math.sqrt(q.shape[-1])
        outs, lses = [], []
        for q0, q1 in _spans(q.shape[2], query_chunk):
            out, lse = _forward_chunk(pair_logits, q[:, :, q0:q1], k, v, fq[:, q0:q1], fk, mask,
                                      scale, key_block)
            outs.append(out)
            lses.append(lse)
        out = torch.cat(outs, dim=2)
        ctx.save_for_backward(q, k, v, fq, fk, mask, out, torch.cat(lses, dim=2))
        # the parameters themselves (leaves), not saved copies: the recomputed tile graph uses
        # them, and gradients are taken with respect to them
        ctx.params, ctx.slots = params, slots
        ctx.pair_logits, ctx.tiles, ctx.scale = pair_logits, tiles, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        q, k, v, fq, fk, mask, out, lse = ctx.saved_tensors
        params = ctx.params
        query_chunk, key_block = ctx.tiles
        wants = ctx.needs_input_grad
        grads = [torch.zeros_like(t) for t in (q, k, v, fq, fk)]
        live = [i for i, p in enumerate(params) if wants[9 + i] and p.requires_grad]
        param_grads: list[Tensor | None] = [None] * len(params)
        for i in live:
            param_grads[i] = torch.zeros_like(params[i])
        # D_n = Σ_j dO_nj O_nj: the softmax's back-projection term, one number per query
        delta = (grad_out * out).sum(-1)
        with _bound(ctx.slots, params):
            for q0, q1 in _spans(q.shape[2], query_chunk):
                for k0, k1 in _spans(k.shape[2], key_block):
                    _backward_tile(ctx, (q0, q1), (k0, k1), q, k, v, fq, fk, mask, lse,
                                   grad_out, delta, params, live, grads, param_grads)
        return (*grads, None, None, None, None, *param_grads)


def _backward_tile(ctx, qs: tuple[int, int], ks: tuple[int, int], q, k, v, fq, fk, mask, lse,
                   grad_out, delta, params, live, grads, param_grads) -> None:
    """Accumulate one tile's gradients into ``grads`` (q, k, v, fq, fk) and ``param_grads``."""
    (q0, q1), (k0, k1) = qs, ks
    inputs = [q[:, :, q0:q1], k[:, :, k0:k1], fq[:, q0:q1], fk[:, k0:k1]]
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        s = _tile_logits(ctx.pair_logits, *inputs[:2], *inputs[2:],
                         None if mask is None else mask[:, k0:k1], ctx.scale)
    p = torch.exp(s.detach() - lse[:, :, q0:q1, None])
    go = grad_out[:, :, q0:q1]
    grads[2][:, :, k0:k1] += p.transpose(-1, -2) @ go
    ds = p * (go @ v[:, :, k0:k1].transpose(-1, -2) - delta[:, :, q0:q1, None])
    wrt = inputs + [params[i] for i in live]
    tile_grads = torch.autograd.grad(s, wrt, grad_outputs=ds, allow_unused=True)
    for target, index, g in ((grads[0], (slice(None), slice(None), slice(q0, q1)), tile_grads[0]),
                             (grads[1], (slice(None), slice(None), slice(k0, k1)), tile_grads[1]),
                             (grads[3], (slice(None), slice(q0, q1)), tile_grads[2]),
                             (grads[4], (slice(None), slice(k0, k1)), tile_grads[3])):
        if g is not None:
            target[index] += g
    for i, g in zip(live, tile_grads[4:]):
        if g is not None:
            param_grads[i] += g


@torch.compiler.disable  # runs eagerly inside a compiled model (its tiles loop in Python)
def blocked_pair_attention(q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor,
                           mask: Tensor | None, pair_logits: PairLogits, *, query_chunk: int,
                           key_block: int,
                           params: Sequence[tuple[nn.Module, str]] = ()) -> Tensor:
    """Softmax attention over keys with learned pairwise logits, in bounded memory.

    Args:
        q: queries, heads first, ``[h, b, nq, d]``. k: keys ``[h, b, nk, d]``.
        v: values ``[b, h, nk, dv]``. fq, fk: location features of the queries ``[b, nq, F]``
            and keys ``[b, nk, F']`` that ``pair_logits`` reads.
        mask: ``[b, nk]`` bool (``True`` = attend) or ``None``.
        pair_logits: the logits of a tile (see :data:`PairLogits`); the dot products it gets
            are ``q kᵀ / √d``.
        query_chunk, key_block: tile size; memory is that of one tile plus ``O(nq + nk)``.
        params: the parameter slots ``(module, name)`` that ``pair_logits`` reads besides its
            arguments, so that their tensors receive gradients.

    Returns ``[b, h, nq, dv]``: ``softmax(logits) @ v`` with masked keys at weight zero, and zero
    for a query without a valid key. ``nk`` may be 0.
    """
    if query_chunk < 1 or key_block < 1:
        raise ValueError(f"query_chunk, key_block: expected >= 1, got {query_chunk}, "
                         f"{key_block}")
    if k.shape[2] == 0:
        return v.new_zeros(q.shape[1], q.shape[0], q.shape[2], v.shape[-1])
    slots = tuple(params)
    tensors = [module._parameters[name] for module, name in slots]
    return BlockedPairAttention.apply(q, k, v, fq, fk, mask, pair_logits,
                                      (query_chunk, key_block), slots, *tensors)
