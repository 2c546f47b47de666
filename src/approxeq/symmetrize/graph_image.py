"""Graphs seen as images, so that a patch vision transformer (possibly pretrained on photos) can
be the base model of an S_n symmetriser.

A graph with ``n`` nodes becomes an ``N × N × C`` image (``N`` = ``n`` rounded up to a multiple
of the patch size): pixel ``(i, j)`` holds the adjacency of ``i`` and ``j``, the one-hot edge
features, and on the diagonal the node features of ``i``. Permuting the nodes by ``P``
permutes rows and columns together (``P X Pᵀ`` channel-wise), which is exactly how the
symmetrisers' sampled permutations act on an ``adjacency`` input and a ``nodes`` input; the
symmetrised model is therefore S_n-equivariant whatever the backbone does with the image.

:class:`GraphImageNet` is that base model: ``(nodes, adjacency, mask)`` in, node-, edge- or
graph-level outputs read from the backbone's tokens. :func:`symmetrized_graph_image_model`
wraps it with a strategy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxeq.groups import Permutation
from approxeq.nn.vit import VisionTransformer
from approxeq.symmetrize.base import Symmetrized
from approxeq.symmetrize.factory import symmetrize
from approxeq.symmetrize.networks import GraphScoreNetwork

__all__ = ["GRAPH_IMAGE_KINDS", "GraphImageNet", "graph_image_channels", "graph_to_image",
           "symmetrized_graph_image_model"]

#: the kinds of :class:`GraphImageNet`'s inputs, for :class:`~approxeq.symmetrize.Symmetrized`
GRAPH_IMAGE_KINDS = ("nodes", "adjacency", "mask")

_LEVELS = {"node": "nodes", "edge": "adjacency", "graph": "invariant"}


def graph_image_channels(node_channels: int, edge_channels: int = 0) -> int:
    """Channels ``C`` of :func:`graph_to_image`'s image: adjacency, edge features, node
    features, and a node indicator (1 on the diagonal pixel of every real node)."""
    return 1 + edge_channels + node_channels + 1


def graph_to_image(nodes: Tensor, adjacency: Tensor, mask: Tensor | None = None, *,
                   patch_size: int = 1) -> tuple[Tensor, Tensor]:
    """The image of a batch of graphs.

    Args:
        nodes: ``[b, n, c_node]`` node features (``[b, n]`` counts as one channel).
        adjacency: ``[b, n, n]`` adjacency, or ``[b, n, n, c_edge]`` one-hot edge features (the
            adjacency channel is then "any edge feature non-zero").
        mask: ``[b, n]`` boolean, ``True`` for real nodes (default: all real).
        patch_size: ``N`` is ``n`` rounded up to a multiple of it; padding pixels are zero.
    Returns:
        ``(image [b, N, N, C], pixel_mask [b, N, N])`` with ``C`` from
        :func:`graph_image_channels`; ``pixel_mask[i, j]`` is ``mask[i] and mask[j]``.
    """
    if nodes.dim() == 2:
        nodes = nodes.unsqueeze(-1)
    if nodes.dim() != 3:
        raise ValueError(f"nodes: expected [b, n, c] or [b, n], got {tuple(nodes.shape)}")
    b, n, _ = nodes.shape
    if adjacency.shape[:3] != (b, n, n) or adjacency.dim() not in (3, 4):
        raise ValueError(f"adjacency: expected [{b}, {n}, {n}] or [{b}, {n}, {n}, c_edge], got "
                         f"{tuple(adjacency.shape)}")
    if mask is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=nodes.device)
    elif mask.shape != (b, n):
        raise ValueError(f"mask: expected [{b}, {n}], got {tuple(mask.shape)}")
    dtype = nodes.dtype if nodes.is_floating_point() else torch.get_default_dtype()
    mask = mask.bool()
    pair = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    if adjacency.dim() == 4:
        edges = adjacency.to(dtype)
        adj = (adjacency != 0).any(-1).to(dtype).unsqueeze(-1)
        channels = [adj, edges]
    else:
        channels = [adjacency.to(dtype).unsqueeze(-1)]
    eye = torch.eye(n, dtype=dtype, device=nodes.device)
    diagonal = nodes.to(dtype).unsqueeze(2) * eye[None, :, :, None]  # row i, column i only
    indicator = (mask.to(dtype).unsqueeze(-1) * eye).unsqueeze(-1)
    image = torch.cat([*channels, diagonal, indicator], dim=-1) * pair.unsqueeze(-1).to(dtype)
    size = -(-n // patch_size) * patch_size
    if size != n:
        image = F.pad(image, (0, 0, 0, size - n, 0, size - n))
        pair = F.pad(pair, (0, size - n, 0, size - n))
    return image, pair


class GraphImageNet(nn.Module):
    """A vision transformer on the image of a graph, with a read-out per level.

    The backbone's patch tokens go through a linear layer to ``p × p × out_channels`` values per
    patch, which are laid back on the pixel grid (``[b, N, N, out]``): node outputs are its
    diagonal, edge outputs the ``n × n`` block. Graph outputs come from the class token (or
    the mean of the valid patch tokens when the backbone has none).

    Args:
        backbone: a :class:`~approxeq.nn.vit.VisionTransformer` whose ``in_channels`` equals
            :func:`graph_image_channels` ``(node_channels, edge_channels)``.
        node_channels, edge_channels: of the graphs (``edge_channels = 0``: plain adjacency).
        out_channels: output channels per node / edge / graph.
        level: ``"node"``, ``"edge"`` or ``"graph"``.

    Shapes: ``forward(nodes [b, n, c_node], adjacency [b, n, n] or [b, n, n, c_edge],
    mask [b, n] | None)`` returns ``[b, n, out]`` (node), ``[b, n, n, out]`` (edge) or
    ``[b, out]`` (graph). Outputs at padded nodes are zero.
    """

    def __init__(self, backbone: VisionTransformer, *, node_channels: int, out_channels: int,
                 edge_channels: int = 0, level: str = "node") -> None:
        super().__init__()
        if level not in _LEVELS:
            raise ValueError(f"level: expected one of {list(_LEVELS)}, got {level!r}")
        expected = graph_image_channels(node_channels, edge_channels)
        if backbone.config.in_channels != expected:
            raise ValueError(f"backbone: expected in_channels = {expected} (adjacency, "
                             f"{edge_channels} edge, {node_channels} node channels and the node "
                             f"indicator), got {backbone.config.in_channels}")
        self.backbone = backbone
        self.level = level
        self.out_channels = out_channels
        self.node_channels, self.edge_channels = node_channels, edge_channels
        p, d = backbone.config.patch_size, backbone.config.embed_dim
        if level == "graph":
            self.head = nn.Linear(d, out_channels)
        else:
            self.head = nn.Linear(d, p * p * out_channels)

    @property
    def out_kind(self) -> str:
        """How S_n acts on the output: ``"nodes"``, ``"adjacency"`` or ``"invariant"``."""
        return _LEVELS[self.level]

    def forward(self, nodes: Tensor, adjacency: Tensor, mask: Tensor | None = None) -> Tensor:
        p = self.backbone.config.patch_size
        image, pixel_mask = graph_to_image(nodes, adjacency, mask, patch_size=p)
        tokens = self.backbone(image, pixel_mask)
        t = self.backbone.num_prefix_tokens
        b, size, n = image.shape[0], image.shape[1], adjacency.shape[1]
        valid = (pixel_mask.diagonal(dim1=1, dim2=2)).to(tokens.dtype)  # [b, N]: real nodes
        if self.level == "graph":
            if t:
                return self.head(tokens[:, 0])
            patches = pixel_mask.reshape(b, size // p, p, size // p, p).any(4).any(2)
            weights = patches.flatten(1).to(tokens.dtype).unsqueeze(-1)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1)
            return self.head(pooled)
        g = size // p
        out = self.head(tokens[:, t:]).reshape(b, g, g, p, p, self.out_channels)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, size, size, self.out_channels)
        if self.level == "node":
            diag = out.diagonal(dim1=1, dim2=2).transpose(1, 2)  # [b, N, out]
            return (diag * valid.unsqueeze(-1))[:, :n]
        return (out * pixel_mask.unsqueeze(-1).to(out.dtype))[:, :n, :n]


def symmetrized_graph_image_model(base: GraphImageNet, n_max: int, strategy: str, *,
                                  k_train: int = 1, k_eval: int = 1, q_hidden: int = 32,
                                  q_layers: int = 3, noise_scale: float = 1.0,
                                  tau: float = 0.01, sinkhorn_iters: int = 20) -> Symmetrized:
    """``base`` made S_n-equivariant over graphs padded to ``n_max`` nodes.

    Args:
        strategy: ``"ga"`` (Monte-Carlo Haar samples of S_n: averaging over the whole group is
            out of reach beyond ~8 nodes), ``"fa"`` (Laplacian-eigenvector frames), ``"canonical"``
            (a GIN scores the nodes, one ordering) or ``"ps"`` (the same GIN fed noise: learned
            probabilistic symmetrisation).
        k_train, k_eval: samples per input (``"canonical"`` always uses one).
        q_hidden, q_layers: of the scoring GIN; noise_scale, tau, sinkhorn_iters: of ``"ps"``.
    Returns:
        a :class:`~approxeq.symmetrize.Symmetrized` called as ``model(nodes, adjacency, mask)``.
    """
    kinds = GRAPH_IMAGE_KINDS
    return symmetrize(
        base, Permutation(n_max), strategy, in_kinds=kinds, out_kinds=base.out_kind,
        network=lambda: GraphScoreNetwork(base.node_channels, kinds, hidden=q_hidden,
                                          num_layers=q_layers),
        canonical_options={"tau": tau, "sinkhorn_iters": sinkhorn_iters},
        ps_options={"noise_scale": noise_scale, "tau": tau, "sinkhorn_iters": sinkhorn_iters},
        k_train=k_train, k_eval=k_eval, allowed=("ga", "fa", "canonical", "ps"))
