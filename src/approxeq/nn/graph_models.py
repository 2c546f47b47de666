"""Graph and particle models of the symmetrisation experiments: an MLP on flattened graphs, a
GIN with optional position ids, and the LPS n-body transformer and message-passing GNN. None of
them is equivariant to every symmetry of its task by itself; :mod:`approxeq.symmetrize` makes
them so."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from approxeq.nn.gin import GIN


class GraphMLP(nn.Module):
    """MLP on the concatenation of the flattened node features ``[b, n_max, c]`` and adjacency
    ``[b, n_max, n_max]``; it sees node order, so it is not equivariant by itself.

    Shapes: ``forward(x, adj, mask)`` returns ``[b, out_dim]``.
    """

    def __init__(self, n_max: int, in_channels: int, out_dim: int,
                 hidden: Sequence[int] = (128, 64), activation: str = "tanh") -> None:
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        widths = [n_max * in_channels + n_max * n_max, *hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), act()]
        layers.append(nn.Linear(widths[-1], out_dim))
        self.net = nn.Sequential(*layers)
        self.n_max = n_max

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None = None) -> Tensor:
        if adj.shape[-1] != self.n_max:
            raise ValueError(f"adj: expected [b, {self.n_max}, {self.n_max}], "
                             f"got {tuple(adj.shape)}")
        return self.net(torch.cat([x.flatten(1), adj.flatten(1)], dim=-1))


class GraphGIN(nn.Module):
    """:class:`approxeq.nn.GIN` node embeddings, sum pooling and a linear readout; optionally
    with one-hot position ids appended to the node features (``position_ids=n_max``: GIN-ID,
    which under symmetrisation becomes relational pooling over the sampled orderings).

    Shapes: ``forward(x [b, n, c], adj [b, n, n], mask [b, n])`` returns ``[b, out_dim]``.
    Without position ids it is S_n-invariant and no stronger than 1-WL.
    """

    def __init__(self, in_channels: int, out_dim: int, hidden: int = 64, num_layers: int = 3,
                 position_ids: int = 0) -> None:
        super().__init__()
        self.position_ids = position_ids
        self.gin = GIN(in_channels + position_ids, hidden, hidden, num_layers, batch_norm=False)
        self.readout = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor) -> Tensor:
        if self.position_ids:
            ids = torch.eye(x.shape[1], self.position_ids, dtype=x.dtype, device=x.device)
            x = torch.cat([x, ids.expand(x.shape[0], -1, -1)], dim=-1)
        h = self.gin(x * mask.unsqueeze(-1).to(x.dtype), adj, mask)
        return self.readout(h.sum(1))


class NBodyTransformer(nn.Module):
    """The LPS n-body transformer: one token per ordered particle pair ``(i, j)`` (``n²`` tokens).

    Every token carries the charge product ``q_i q_j`` and squared distance ``|x_i − x_j|²``;
    diagonal tokens also carry position and velocity of particle ``i`` (6 channels; zero off the
    diagonal). Linear embedding, learnable positional embedding, pre-norm encoder (GELU), and a
    linear readout of a displacement from the diagonal tokens, added to the input positions.

    Shapes: ``forward(loc [b, n, 3], vel [b, n, 3], charges [b, n, 1])`` returns ``[b, n, 3]``.
    """

    def __init__(self, n_particles: int = 5, dim: int = 3, d_model: int = 64, n_heads: int = 4,
                 d_ff: int = 64, num_layers: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.n = n_particles
        self.embed = nn.Linear(2 * dim + 2, d_model)
        self.position = nn.Parameter(torch.randn(n_particles * n_particles, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.readout = nn.Linear(d_model, dim)

    def forward(self, loc: Tensor, vel: Tensor, charges: Tensor) -> Tensor:
        b, n, d = loc.shape
        if n != self.n:
            raise ValueError(f"loc: expected [b, {self.n}, {d}], got {tuple(loc.shape)}")
        diff = loc.unsqueeze(2) - loc.unsqueeze(1)
        dist2 = (diff * diff).sum(-1, keepdim=True)
        qq = (charges.unsqueeze(2) * charges.unsqueeze(1)).reshape(b, n, n, 1)
        eye = torch.eye(n, dtype=loc.dtype, device=loc.device).view(1, n, n, 1)
        state = torch.cat([loc, vel], dim=-1).unsqueeze(2) * eye       # only on the diagonal
        tokens = torch.cat([state, qq, dist2], dim=-1).reshape(b, n * n, -1)
        h = self.encoder(self.embed(tokens) + self.position)
        diag = self.norm(h).view(b, n, n, -1).diagonal(dim1=1, dim2=2).transpose(1, 2)
        return loc + self.readout(diag)


class NBodyGNN(nn.Module):
    """A message-passing GNN over the fully connected particle graph, the GNN base of the LPS
    n-body experiment.

    Node inputs are position, velocity and charge; the message from ``j`` to ``i`` is an MLP of
    both nodes' states, ``q_i q_j``, ``|x_i − x_j|²`` and ``x_i − x_j``, summed over ``j ≠ i``;
    a residual MLP updates each node. A linear readout gives a displacement added to the input
    positions. Sums over neighbours make it S_n-equivariant, but raw coordinates enter the
    node states, so it is not E(3)-equivariant: symmetrisation supplies that.

    Shapes: ``forward(loc [b, n, 3], vel [b, n, 3], charges [b, n, 1])`` returns ``[b, n, 3]``.
    """

    def __init__(self, dim: int = 3, hidden: int = 64, num_layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(2 * dim + 1, hidden)
        edge_in = 2 * hidden + 2 + dim
        self.messages = nn.ModuleList(
            nn.Sequential(nn.Linear(edge_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                          nn.SiLU()) for _ in range(num_layers))
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(num_layers))
        self.readout = nn.Linear(hidden, dim)

    def forward(self, loc: Tensor, vel: Tensor, charges: Tensor) -> Tensor:
        if loc.dim() != 3 or vel.shape != loc.shape or charges.shape != (*loc.shape[:2], 1):
            raise ValueError(f"loc, vel, charges: expected [b, n, d], [b, n, d], [b, n, 1], got "
                             f"{tuple(loc.shape)}, {tuple(vel.shape)}, {tuple(charges.shape)}")
        b, n, _ = loc.shape
        diff = loc.unsqueeze(2) - loc.unsqueeze(1)                       # x_i - x_j
        dist2 = (diff * diff).sum(-1, keepdim=True)
        qq = charges.unsqueeze(2) * charges.unsqueeze(1)
        edge = torch.cat([qq.reshape(b, n, n, 1), dist2, diff], dim=-1)
        off_diagonal = (1 - torch.eye(n, dtype=loc.dtype, device=loc.device)).view(1, n, n, 1)
        h = self.embed(torch.cat([loc, vel, charges], dim=-1))
        for message, update in zip(self.messages, self.updates):
            pair = torch.cat([h.unsqueeze(2).expand(-1, -1, n, -1),
                              h.unsqueeze(1).expand(-1, n, -1, -1), edge], dim=-1)
            m = (message(pair) * off_diagonal).sum(2)
            h = h + update(torch.cat([h, m], dim=-1))
        return loc + self.readout(h)


__all__ = ["GraphGIN", "GraphMLP", "NBodyGNN", "NBodyTransformer"]
