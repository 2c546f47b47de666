"""Ready-made equivariant networks ``q`` for probabilistic symmetrisation and canonicalisation.

Both are called like the strategies call them, ``network(*inputs, noise=eps)``, with the same
positional inputs as the base model; ``in_kinds`` tells them which input is which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.nn.gin import GIN
from approxeq.nn.vector_neurons import VNNetwork
from approxeq.symmetrize import ops


class GraphScoreNetwork(nn.Module):
    """S_n-equivariant node scores from a GIN (with a virtual node) on node features + noise.

    Args:
        node_dim: channels of the first ``nodes`` input (a ``[b, n]`` input counts as 1).
        in_kinds: the kinds of the base model's inputs (needs ``nodes`` and ``adjacency``;
            an optional ``mask`` is used).
        noise_dim: channels of node noise (``noise`` ``[b, n, noise_dim]``).
        hidden, num_layers, virtual_node, batch_norm, dropout: see :class:`approxeq.nn.GIN`.

    Shapes: ``forward(*inputs, noise [b, n, noise_dim])`` → scores ``[b, n]``.
    """

    def __init__(self, node_dim: int, in_kinds: Sequence[str], *, noise_dim: int = 1,
                 hidden: int = 64, num_layers: int = 3, virtual_node: bool = True,
                 batch_norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_kinds = tuple(in_kinds)
        if "adjacency" not in self.in_kinds:
            raise ValueError(f"in_kinds must contain 'adjacency', got {self.in_kinds}")
        self.noise_dim = noise_dim
        self.gin = GIN(node_dim + noise_dim, 1, hidden, num_layers, virtual_node=virtual_node,
                       batch_norm=batch_norm, dropout=dropout)

    def forward(self, *inputs: Any, noise: Tensor) -> Tensor:
        adjacency = ops.find(inputs, self.in_kinds, "adjacency")
        if adjacency.dim() == 4:
            adjacency = (adjacency != 0).any(-1)
        mask = ops.find(inputs, self.in_kinds, "mask")
        nodes = ops.find(inputs, self.in_kinds, "nodes")
        b, n = adjacency.shape[:2]
        parts = [] if nodes is None else [nodes.unsqueeze(-1) if nodes.dim() == 2 else nodes]
        parts.append(noise)
        h = torch.cat([p.to(noise.dtype) for p in parts], dim=-1)
        return self.gin(h, adjacency.to(noise.dtype), mask).squeeze(-1)


class PointCloudFrameNetwork(nn.Module):
    """Vector-neuron network giving S_n-equivariant, O(d)-invariant node scores and ``d``
    S_n-invariant, O(d)-equivariant vectors, from ``points`` / ``vectors`` inputs (as vector
    channels), optional scalar ``nodes`` inputs, and vector noise.

    Args:
        in_kinds: the kinds of the base model's inputs.
        scalar_dim: total channels of the ``nodes`` inputs (0 to ignore them).
        noise_dim: vector channels of noise (``noise`` ``[b, n, noise_dim, d]``).
        hidden, num_layers: see :class:`approxeq.nn.VNNetwork`. dim: the space dimension d.

    Shapes: ``forward(*inputs, noise)`` → ``{"scores": [b, n], "vectors": [b, d, d]}``.
    """

    def __init__(self, in_kinds: Sequence[str], *, scalar_dim: int = 0, noise_dim: int = 1,
                 hidden: int = 21, num_layers: int = 2, dim: int = 3) -> None:
        super().__init__()
        self.in_kinds = tuple(in_kinds)
        n_vectors = sum(kd in ("points", "vectors") for kd in self.in_kinds)
        if n_vectors == 0:
            raise ValueError(f"in_kinds must contain 'points' or 'vectors', got {self.in_kinds}")
        self.scalar_dim, self.dim = scalar_dim, dim
        self.vn = VNNetwork(n_vectors + noise_dim, scalar_dim, hidden, num_layers,
                            out_scalars=1, out_vectors=dim, dim=dim)

    def forward(self, *inputs: Any, noise: Tensor) -> dict[str, Tensor]:
        vectors = [x for x, kd in zip(inputs, self.in_kinds) if kd in ("points", "vectors")]
        v = torch.cat([x.unsqueeze(-2).to(noise.dtype) for x in vectors] + [noise], dim=-2)
        scalars = None
        if self.scalar_dim > 0:
            nodes = [x if x.dim() == 3 else x.unsqueeze(-1)
                     for x, kd in zip(inputs, self.in_kinds) if kd == "nodes"]
            scalars = torch.cat([x.to(noise.dtype) for x in nodes], dim=-1)
        mask = ops.find(inputs, self.in_kinds, "mask")
        scores, vecs = self.vn(v, scalars, mask)
        return {"scores": scores.squeeze(-1), "vectors": vecs}
