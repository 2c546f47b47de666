"""Translation-equivariant multi-head attention (TE-TNP, Ashman et al., ICML 2024).

The attention logits of every head are a learned function of the dot products of *all* heads
and of the difference of the token locations,

    logit[h, n, m] = MLP([q_n·k_m / √d_h for every head, x_n − x_m])[h],

so that shifting every location by the same vector changes nothing: no absolute position enters
anywhere. Values are the usual linear maps of the key tokens.

The logit MLP runs on every (query, key) pair, so its hidden activations have shape
``[batch, n_query, n_key, hidden]``. Two paths keep memory bounded:

* **whole** (when its ``[batch, heads, n_query, n_key]`` arrays and one query's MLP pairs fit in
  ``memory_budget_mb``: the faster path there, which covers training at the usual sizes; or an
  explicit ``chunk_size`` without ``key_block``, or ``allow_blocked = False``): the
  ``[batch, heads, n_query, n_key]`` dot products, logits and softmax weights are held whole
  and the MLP runs on one chunk of queries at a time. The chunks share every other operation,
  so the result is bitwise the same for every chunk size; with gradients enabled and more than
  one chunk, each chunk's MLP is recomputed in the backward pass (activation checkpointing).
* **blocked** (otherwise, or whenever ``key_block`` is set): the online-softmax kernel of
  :mod:`approxeq.nn.blocked_attention` over tiles of queries by keys, forward and backward
  (each tile's logits are recomputed in the backward pass). Memory is one tile, sized from
  ``memory_budget_mb``, plus ``O(n_query + n_key)`` per head: nothing is quadratic in the
  number of points. It equals the whole path up to rounding (about 1e-15 in float64).

The MLP's first layer is linear in its input ``[dots, x_n − x_m]``, so its location part splits
into a per-query term minus a per-key term: ``W_x (x_n − x_m) + b = (W_x x_n + b) − W_x x_m``.
Those are computed once, on ``[n_query]`` and ``[n_key]``, and broadcast-added to the pairs; no
``[n_query, n_key, dim_x]`` differences or concatenated inputs are built. The dot products come
out of ``q kᵀ`` heads first, ``[heads, batch, n_query, n_key]``, which the first layer reads as
a transposed ``[pairs, heads]`` matrix (no copy); every hidden pair tensor is a
``[pairs, hidden]`` matrix, the layout the next linear layer reads directly. (Channels-first
hidden tensors, ``[hidden, pairs]``, were tried: a matrix product's rounding then depends on the
number of pairs, and so the result on the chunk size.) The function, and
the parameters (names and shapes), are those of the plain MLP on the concatenated input; that
form is still used for a logit MLP with layers other than linear maps and element-wise
activations, and by subclasses that override ``_chunk_logits``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from approxeq.nn.attention import AttentionHeads, FeedForward, check_key_mask, masked_attention
from approxeq.nn.blocked_attention import blocked_pair_attention
from approxeq.nn.mlp import MLP

#: default memory budget of the pairwise logit MLP, per attention call
DEFAULT_MEMORY_BUDGET_MB = 256.0
#: values per (query, key) pair and head that the whole path holds: dot products, logits and
#: their permuted copy, softmax weights, and their gradients in training
WHOLE_VALUES_PER_PAIR = 6
#: the fewest keys per tile the blocked path picks from the budget (unless the budget is
#: smaller): fewer, longer tiles keep the per-tile overhead small
MIN_KEY_BLOCK = 256

# Activations that act on each value alone, so they work on any layout of the pair tensor.
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.Sigmoid,
                nn.Softplus, nn.Identity, nn.Mish, nn.CELU, nn.SELU, nn.ReLU6, nn.Hardtanh,
                nn.Hardswish, nn.Hardsigmoid)


class TEMultiHeadAttention(AttentionHeads):
    """Translation-equivariant multi-head attention from query tokens at ``xq`` to key/value
    tokens at ``xk``.

    Args:
        dim: token width. num_heads: number of heads. dim_x: dimension of the locations.
        logit_hidden: width of the logit MLP (default ``dim``). logit_layers: its hidden layers.
        activation: activation of the logit MLP.
        chunk_size: queries per chunk of the pairwise MLP (per tile, on the blocked path);
            ``None`` picks the largest chunk whose activations fit in ``memory_budget_mb``.
        memory_budget_mb: memory allowed for one chunk's (tile's) pairwise activations (MiB).
        key_block: keys per tile; setting it forces the blocked path (see the module
            docstring). ``None`` takes the whole path where it fits the budget and otherwise
            picks the tiles from the budget.
        split_first_layer: run the logit MLP's first layer split into per-query and per-key
            terms (the default) or on the concatenated pairs. The same function, rounded
            differently in float32; which is faster depends on the CPU
            (``benchmarks/README.md``).

    Shapes: ``forward(zq [b, nq, dim], zk [b, nk, dim], xq [b, nq, dim_x], xk [b, nk, dim_x],
    key_mask [b, nk] | None)`` returns ``[b, nq, dim]``; ``nk`` may be 0 (output zero).

    Subclasses that feed the logit MLP another function of the two locations override
    :meth:`location_features` (its width) and ``_chunk_logits``.
    """

    def __init__(self, dim: int, num_heads: int, dim_x: int, *, logit_hidden: int | None = None,
                 logit_layers: int = 2, activation: str | Callable[[], nn.Module] = "relu",
                 chunk_size: int | None = None,
                 memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                 key_block: int | None = None, split_first_layer: bool = True) -> None:
        super().__init__(dim, num_heads)
        if dim_x < 1:
            raise ValueError(f"dim_x: expected >= 1, got {dim_x}")
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb: expected > 0, got {memory_budget_mb}")
        if not isinstance(split_first_layer, bool):
            raise ValueError(f"split_first_layer: expected True or False, got "
                             f"{split_first_layer!r}")
        self.dim_x = dim_x
        self.logit_hidden = logit_hidden or dim
        self.logit_layers = logit_layers
        self.logit_mlp = MLP(num_heads + self.location_features(dim_x), num_heads,
                             self.logit_hidden, logit_layers, activation)
        self.chunk_size = chunk_size
        self.key_block = key_block
        self.memory_budget_mb = memory_budget_mb
        #: run the pairwise MLP with its first layer split (see the module docstring); False
        #: runs the plain MLP on concatenated pairs: the same function, rounded differently,
        #: and which of the two is faster depends on the CPU
        self.split_first_layer = split_first_layer
        #: take the blocked path where the whole one does not fit the budget; False keeps the
        #: whole path (the kernel as it was before the blocked one, for benchmarks)
        self.allow_blocked = True

    @staticmethod
    def location_features(dim_x: int) -> int:
        """Width of the location part of the logit MLP's input: the difference
        ``x_n − x_m`` has ``dim_x`` entries."""
        return dim_x

    @property
    def chunk_size(self) -> int | None:
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"chunk_size: expected a positive int or None, got {value!r}")
        self._chunk_size = value

    @property
    def key_block(self) -> int | None:
        return self._key_block

    @key_block.setter
    def key_block(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"key_block: expected a positive int or None, got {value!r}")
        self._key_block = value

    def bytes_per_pair(self, itemsize: int) -> int:
        """Upper estimate of the memory one (query, key) pair needs in the logit MLP."""
        h, dx = self.num_heads, self.dim_x
        # two live hidden activations (linear output and activation), the location
        # differences, the MLP input and its output
        return itemsize * (2 * self.logit_hidden + 2 * h + 2 * dx + 8)

    def tile_bytes_per_pair(self, itemsize: int) -> int:
        """Upper estimate of the memory one (query, key) pair of a tile needs on the blocked
        path: the MLP's activations kept for the backward pass and the tile's logits, softmax
        weights and their gradients."""
        h, hidden = self.num_heads, self.logit_hidden
        return itemsize * ((2 * self.logit_layers + 2) * hidden + 8 * h + 8)

    def plan_tiles(self, batch: int, n_query: int, n_key: int,
                   dtype: torch.dtype) -> tuple[int, int] | None:
        """``(queries, keys)`` per tile of the blocked path, or ``None`` for the whole path
        (see the module docstring).

        Raises ``MemoryError`` naming ``memory_budget_mb`` when the budget cannot hold even one
        pair per task."""
        itemsize = torch.finfo(dtype).bits // 8
        budget = int(self.memory_budget_mb * 2**20)
        # The whole path where its [b, h, nq, nk] arrays and one query's MLP pairs fit the
        # budget: it is the faster one there (one softmax, autograd's backward).
        whole = batch * n_query * n_key * itemsize * WHOLE_VALUES_PER_PAIR * self.num_heads
        fits = whole <= budget and batch * n_key * self.bytes_per_pair(itemsize) <= budget
        if self.key_block is None and (not self.allow_blocked or self.chunk_size is not None
                                       or fits):
            return None
        pairs = budget // (batch * self.tile_bytes_per_pair(itemsize))
        if pairs < 1:
            need = batch * self.tile_bytes_per_pair(itemsize) / 2**20
            raise MemoryError(
                f"memory_budget_mb: the TE attention needs {need:.3g} MiB for one (query, key) "
                f"pair in a batch of {batch}, over memory_budget_mb = "
                f"{self.memory_budget_mb:g}; build the model with memory_budget_mb >= "
                f"{need:.3g} (or set chunk_size to bypass the budget)")
        # Keys per tile: all of them when every query fits, else as many as the budget allows
        # with all queries, but at least MIN_KEY_BLOCK (then fewer queries per tile).
        key_block = self.key_block or min(n_key, max(pairs // max(1, n_query),
                                                     min(MIN_KEY_BLOCK, pairs)))
        key_block = min(key_block, n_key)
        query_chunk = self.chunk_size or max(1, min(n_query, pairs // key_block))
        return min(query_chunk, n_query), key_block

    def resolve_chunk_size(self, batch: int, n_query: int, n_key: int, dtype: torch.dtype) -> int:
        """Queries per chunk of the whole path: ``chunk_size`` if set, else the largest chunk
        within the budget.

        Raises ``MemoryError`` when even one query's pairs over every key exceed
        ``memory_budget_mb`` (only reachable with ``allow_blocked = False``: otherwise such
        inputs take the blocked path, whose tiles split the keys too)."""
        if self.chunk_size is not None:
            return max(1, min(self.chunk_size, n_query))
        per_query = max(1, batch * n_key * self.bytes_per_pair(torch.finfo(dtype).bits // 8))
        budget = int(self.memory_budget_mb * 2**20)
        if per_query > budget:
            raise MemoryError(
                f"memory_budget_mb: the TE attention's pairwise logit MLP needs "
                f"{per_query / 2**20:.3g} MiB for a single query over {n_key} keys in a batch of "
                f"{batch}, over memory_budget_mb = {self.memory_budget_mb:g}; build the model "
                f"with memory_budget_mb >= {math.ceil(per_query / 2**20)} (or set chunk_size to "
                "bypass the budget), or pass fewer context points or tasks per call")
        return max(1, min(n_query, budget // per_query))

    def _chunk_logits(self, dots: Tensor, xq: Tensor, xk: Tensor) -> Tensor:
        """Logits ``[b, c, nk, h]`` of a chunk of ``c`` queries from their dot products
        ``[b, c, nk, h]`` and locations ``xq [b, c, dx]``, ``xk [b, nk, dx]``."""
        diff = xq[:, :, None, :] - xk[:, None, :, :]
        return self.logit_mlp(torch.cat([dots, diff], dim=-1))

    def _splits_first_layer(self) -> bool:
        """Whether the pairwise MLP can run as split first layer + channels-first layers."""
        if not self.split_first_layer \
                or type(self)._chunk_logits is not TEMultiHeadAttention._chunk_logits:
            return False
        layers = list(self.logit_mlp.net)
        return all(isinstance(m, nn.Linear) if i % 2 == 0 else isinstance(m, _ELEMENTWISE)
                   for i, m in enumerate(layers)) and len(layers) % 2 == 1

    def _split_chunk_logits(self, dots: Tensor, query_term: Tensor, key_term: Tensor) -> Tensor:
        """Logits ``[b, c, nk, h]`` of a chunk of ``c`` queries from their dot products
        ``dots [h, b, c, nk]``, the first layer's per-query term ``[b, c, 1, hidden]`` (bias
        included) and its per-key term, negated, ``[b, 1, nk, hidden]``."""
        h, b, c, nk = dots.shape
        layers = list(self.logit_mlp.net)
        # Pairs are rows, channels-last, as in the plain MLP: a matrix product's rounding then
        # does not depend on the number of rows, so neither does the result on the chunk size.
        # The first layer reads the heads-first dot products transposed, without a copy, and
        # adds them in place to the broadcast sum of the two location terms (a fresh tensor).
        pairs = dots.reshape(h, b * c * nk).t()
        x = (query_term + key_term).view(b * c * nk, -1)
        # in place, so autocast does not cast its operands: they take x's dtype (a no-op
        # outside autocast)
        x = x.addmm_(pairs.to(x.dtype), layers[0].weight[:, :h].t().to(x.dtype))
        for module in layers[1:]:
            x = module(x)
        return x.view(b, c, nk, h)

    def _blocked_attention(self, q: Tensor, k: Tensor, v: Tensor, xq: Tensor, xk: Tensor,
                           key_mask: Tensor | None, tiles: tuple[int, int]) -> Tensor:
        """The blocked path: ``q, k, v [b, h, n, d_h]`` -> ``[b, h, nq, d_h]``."""
        b, nq, nk = q.shape[0], q.shape[2], k.shape[2]
        if self._splits_first_layer():
            first = self.logit_mlp.net[0]
            w_x = first.weight[:, self.num_heads:].t()
            fq = torch.addmm(first.bias, xq.reshape(-1, self.dim_x), w_x).view(b, nq, -1)
            fk = (xk.reshape(-1, self.dim_x) @ -w_x).view(b, nk, -1)

            def pair_logits(dots: Tensor, fq_: Tensor, fk_: Tensor) -> Tensor:
                return self._split_chunk_logits(dots, fq_[:, :, None], fk_[:, None])
        else:
            fq, fk = xq, xk

            def pair_logits(dots: Tensor, fq_: Tensor, fk_: Tensor) -> Tensor:
                return self._chunk_logits(dots.permute(1, 2, 3, 0), fq_, fk_)
        projections = {self.to_q, self.to_k, self.to_v, self.to_out}
        params = [(m, name) for m in self.modules() if m not in projections
                  for name, p in m._parameters.items() if p is not None]
        return blocked_pair_attention(q.transpose(0, 1), k.transpose(0, 1), v, fq, fk, key_mask,
                                      pair_logits, query_chunk=tiles[0], key_block=tiles[1],
                                      params=params)

    def forward(self, zq: Tensor, zk: Tensor, xq: Tensor, xk: Tensor,
                key_mask: Tensor | None = None) -> Tensor:
        for name, z, x in (("zq/xq", zq, xq), ("zk/xk", zk, xk)):
            if z.dim() != 3 or x.dim() != 3 or z.shape[:2] != x.shape[:2] \
                    or x.shape[-1] != self.dim_x or z.shape[-1] != self.dim:
                raise ValueError(f"{name}: expected tokens [batch, n, {self.dim}] and locations "
                                 f"[batch, n, {self.dim_x}], got {list(z.shape)} and "
                                 f"{list(x.shape)}")
        if zq.shape[0] != zk.shape[0]:
            raise ValueError(f"zk: batch size {zk.shape[0]} does not match zq's {zq.shape[0]}")
        b, nq, nk = zq.shape[0], zq.shape[1], zk.shape[1]
        key_mask = check_key_mask(key_mask, b, nk)
        if nk == 0 or nq == 0:
            return zq.new_zeros(b, nq, self.dim)
        q = self.split_heads(self.to_q(zq))
        k = self.split_heads(self.to_k(zk))
        v = self.split_heads(self.to_v(zk))
        xq, xk = xq.to(q.dtype), xk.to(q.dtype)
        tiles = self.plan_tiles(b, nq, nk, q.dtype)
        if tiles is not None:
            attended = self._blocked_attention(q, k, v, xq, xk, key_mask, tiles)
            return self.output(attended, key_mask, nk)
        # Dot products, logits and weights are [b, h, nq, nk] (no hidden width); only the logit
        # MLP's hidden activations are chunked. Everything outside the MLP is computed on whole
        # tensors, so the chunk size cannot change the rounding of the result.
        chunk = self.resolve_chunk_size(b, nq, nk, q.dtype)
        recompute = chunk < nq and torch.is_grad_enabled()
        if self._splits_first_layer():
            # heads first, [h, b, nq, nk], so that a chunk's dot products are [h, pairs]
            dots = (q.transpose(0, 1) @ k.transpose(0, 1).transpose(-1, -2)) \
                / math.sqrt(self.dim_head)
            first = self.logit_mlp.net[0]
            w_x = first.weight[:, self.num_heads:].t()
            query_term = torch.addmm(first.bias, xq.reshape(-1, self.dim_x), w_x)
            query_term = query_term.view(b, nq, 1, -1)
            key_term = (xk.reshape(-1, self.dim_x) @ -w_x).view(b, 1, nk, -1)
            parts = []
            for start in range(0, nq, chunk):
                args = (dots[:, :, start:start + chunk], query_term[:, start:start + chunk],
                        key_term)
                parts.append(checkpoint(self._split_chunk_logits, *args, use_reentrant=False)
                             if recompute else self._split_chunk_logits(*args))
        else:
            dots = ((q @ k.transpose(-1, -2)) / math.sqrt(self.dim_head)).permute(0, 2, 3, 1)
            parts = []
            for start in range(0, nq, chunk):
                args = (dots[:, start:start + chunk], xq[:, start:start + chunk], xk)
                parts.append(checkpoint(self._chunk_logits, *args, use_reentrant=False)
                             if recompute else self._chunk_logits(*args))
        logits = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        attended = masked_attention(logits.permute(0, 3, 1, 2), v, key_mask)
        return self.output(attended, key_mask, nk)


#: ``f(dim, num_heads, dim_x, **options)`` -> a :class:`TEMultiHeadAttention` (or a subclass):
#: the attention a TE layer builds (default :class:`TEMultiHeadAttention`)
AttentionFactory = Callable[..., TEMultiHeadAttention]


class TECrossAttentionLayer(nn.Module):
    """Pre-LayerNorm TE transformer layer; queries attend to a separate token set:
    ``zq ← zq + TEMHA(LN(zq), LN(zk), xq, xk); zq ← zq + FF(LN(zq))``. Locations are not updated.
    ``attention`` (a factory, see :data:`AttentionFactory`) chooses the attention; the other
    keywords go to it.

    Shapes: ``forward(zq [b, nq, dim], zk [b, nk, dim], xq [b, nq, dim_x], xk [b, nk, dim_x],
    key_mask [b, nk] | None)`` returns ``[b, nq, dim]``.
    """

    def __init__(self, dim: int, num_heads: int, dim_x: int, feedforward_dim: int | None = None,
                 activation: str | Callable[[], nn.Module] = "relu", *,
                 attention: AttentionFactory | None = None, **attention_options) -> None:
        super().__init__()
        make = attention or TEMultiHeadAttention
        self.attention = make(dim, num_heads, dim_x, **attention_options)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.feedforward = FeedForward(dim, feedforward_dim or dim, activation)

    def forward(self, zq: Tensor, zk: Tensor, xq: Tensor, xk: Tensor,
                key_mask: Tensor | None = None) -> Tensor:
        zq = zq + self.attention(self.norm_q(zq), self.norm_k(zk), xq, xk, key_mask)
        return zq + self.feedforward(self.norm_ff(zq))


class TESelfAttentionLayer(nn.Module):
    """Pre-LayerNorm TE transformer layer with self-attention among tokens at ``x``.

    Shapes: ``forward(z [b, n, dim], x [b, n, dim_x], mask [b, n] | None)`` returns
    ``[b, n, dim]``.
    """

    def __init__(self, dim: int, num_heads: int, dim_x: int, feedforward_dim: int | None = None,
                 activation: str | Callable[[], nn.Module] = "relu", *,
                 attention: AttentionFactory | None = None, **attention_options) -> None:
        super().__init__()
        make = attention or TEMultiHeadAttention
        self.attention = make(dim, num_heads, dim_x, **attention_options)
        self.norm = nn.LayerNorm(dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.feedforward = FeedForward(dim, feedforward_dim or dim, activation)

    def forward(self, z: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
        zn = self.norm(z)
        z = z + self.attention(zn, zn, x, x, mask)
        return z + self.feedforward(self.norm_ff(z))


def set_chunk_size(module: nn.Module, chunk_size: int | None) -> None:
    """Set ``chunk_size`` of every :class:`TEMultiHeadAttention` inside ``module``."""
    for m in module.modules():
        if isinstance(m, TEMultiHeadAttention):
            m.chunk_size = chunk_size
