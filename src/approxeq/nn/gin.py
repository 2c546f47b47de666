"""Dense-adjacency graph isomorphism network (GIN), optionally with a virtual node."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _check_graph(h: Tensor, adjacency: Tensor, mask: Tensor | None, in_dim: int) -> Tensor:
    if h.dim() != 3 or h.shape[-1] != in_dim:
        raise ValueError(f"h must have shape [b, n, {in_dim}], got {tuple(h.shape)}")
    b, n, _ = h.shape
    if adjacency.shape != (b, n, n):
        raise ValueError(f"adjacency must have shape [{b}, {n}, {n}], got {tuple(adjacency.shape)}")
    if mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=h.device)
    if mask.shape != (b, n):
        raise ValueError(f"mask must have shape [{b}, {n}], got {tuple(mask.shape)}")
    return mask.bool()


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the valid nodes of ``[b, n, c]`` features (statistics over batch and nodes,
    which is permutation invariant); masked nodes stay 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        out = torch.zeros_like(h)
        out[mask] = self.norm(h[mask])
        return out


class GINLayer(nn.Module):
    """``h_i ← MLP((1 + ε) h_i + Σ_j A_ij h_j)`` with a 2-layer MLP (BatchNorm optional)."""

    def __init__(self, in_dim: int, out_dim: int, *, batch_norm: bool = True,
                 learn_eps: bool = True) -> None:
        super().__init__()
        self.eps = nn.Parameter(torch.zeros(())) if learn_eps else None
        self.lin1 = nn.Linear(in_dim, out_dim)
        self.lin2 = nn.Linear(out_dim, out_dim)
        self.norm = MaskedBatchNorm(out_dim) if batch_norm else None

    def forward(self, h: Tensor, adjacency: Tensor, mask: Tensor) -> Tensor:
        eps = self.eps if self.eps is not None else h.new_zeros(())
        z = (1 + eps) * h + adjacency.to(h.dtype) @ h
        z = self.lin1(z)
        if self.norm is not None:
            z = self.norm(z, mask)
        z = self.lin2(torch.relu(z))
        return z * mask.unsqueeze(-1).to(z.dtype)


class GIN(nn.Module):
    """GIN on dense graphs: S_n-equivariant node embeddings.

    Args:
        in_dim: node feature channels. out_dim: output channels per node.
        hidden: width. num_layers: number of GIN layers.
        virtual_node: add a virtual node linked to every (valid) node: its state is added to all
            nodes before each layer and updated from the sum of node states after it (global
            interaction, which the LPS interface network relies on).
        batch_norm: BatchNorm (over valid nodes) inside each layer's MLP.
        dropout: dropout between layers. learn_eps: learnable ε in each layer.

    Shapes: ``forward(h [b, n, in_dim], adjacency [b, n, n], mask [b, n] | None)`` →
    ``[b, n, out_dim]`` (zero on masked nodes).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, num_layers: int = 3, *,
                 virtual_node: bool = False, batch_norm: bool = True, dropout: float = 0.0,
                 learn_eps: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.embed = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList(
            GINLayer(hidden, hidden, batch_norm=batch_norm, learn_eps=learn_eps)
            for _ in range(num_layers))
        self.virtual = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(num_layers - 1)) if virtual_node else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, h: Tensor, adjacency: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = _check_graph(h, adjacency, mask, self.in_dim)
        m = mask.unsqueeze(-1).to(h.dtype)
        z = self.embed(h) * m
        vn = z.new_zeros(z.shape[0], z.shape[-1])
        for i, layer in enumerate(self.layers):
            if self.virtual is not None:
                z = z + vn.unsqueeze(1) * m
            z_new = layer(z, adjacency, mask)
            if self.virtual is not None and i < len(self.virtual):
                vn = vn + self.virtual[i](vn + z_new.sum(dim=1))
            z = self.dropout(torch.relu(z_new)) if i < len(self.layers) - 1 else z_new
        return self.head(z) * m
