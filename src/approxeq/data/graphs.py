"""Small graph datasets as dense, padded tensors: GRAPH8c, SR25, EXP and CSL.

Every loader returns a :class:`GraphData` with

- ``x``: node features ``[N, n_max, c]`` (zero on padding),
- ``adj``: adjacency ``[N, n_max, n_max]``, symmetric, zero diagonal, zero on padding,
- ``mask``: node mask ``[N, n_max]`` (``True`` on real nodes; real nodes come first),
- ``y``: integer labels ``[N]``, or ``None`` for unlabelled collections (GRAPH8c, SR25),
- ``pairs``: ``[P, 2]`` indices of graph pairs to tell apart, or ``None`` (all pairs).

GRAPH8c, SR25 and EXP are read from files shipped in ``approxeq/datasets/graphs`` (provenance and
licences in ``ATTRIBUTION.md`` there). CSL is built with networkx (the ``graphs`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources

import torch
from torch import Tensor

__all__ = [
    "GraphData",
    "decode_graph6",
    "parse_exp",
    "load_graph8c",
    "load_sr25",
    "load_exp",
    "make_csl",
    "load_graph_dataset",
    "with_degree",
    "GRAPH_DATASETS",
    "CSL_SKIPS",
]

#: the skip lengths R of the ten CSL classes (circulant graphs C41 with skips {1, R})
CSL_SKIPS: tuple[int, ...] = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)


@dataclass(frozen=True)
class GraphData:
    """``N`` graphs padded to ``n_max`` nodes (see the module docstring for the shapes)."""

    name: str
    x: Tensor
    adj: Tensor
    mask: Tensor
    y: Tensor | None = None
    pairs: Tensor | None = None

    def __post_init__(self) -> None:
        n, m = self.mask.shape
        if self.x.dim() != 3 or self.x.shape[:2] != (n, m):
            raise ValueError(f"x: expected [{n}, {m}, c], got {tuple(self.x.shape)}")
        if self.adj.shape != (n, m, m):
            raise ValueError(f"adj: expected [{n}, {m}, {m}], got {tuple(self.adj.shape)}")
        if self.y is not None and self.y.shape != (n,):
            raise ValueError(f"y: expected [{n}], got {tuple(self.y.shape)}")
        if self.pairs is not None and (self.pairs.dim() != 2 or self.pairs.shape[1] != 2):
            raise ValueError(f"pairs: expected [P, 2], got {tuple(self.pairs.shape)}")

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def n_max(self) -> int:
        return self.mask.shape[1]

    @property
    def num_nodes(self) -> Tensor:
        """Nodes per graph, ``[N]``."""
        return self.mask.sum(-1)

    def subset(self, index: Tensor | slice) -> GraphData:
        """The graphs selected by ``index`` (pairs are dropped: they refer to the old indices)."""
        return replace(self, x=self.x[index], adj=self.adj[index], mask=self.mask[index],
                       y=None if self.y is None else self.y[index], pairs=None)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
           ) -> GraphData:
        """Floating tensors cast to ``dtype``; everything moved to ``device``."""
        def move(t: Tensor | None, floating: bool) -> Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if floating and dtype is not None else t.dtype)
        return replace(self, x=move(self.x, True), adj=move(self.adj, True),
                       mask=move(self.mask, False), y=move(self.y, False),
                       pairs=move(self.pairs, False))


def _dense(name: str, edge_lists: list[list[tuple[int, int]]], sizes: list[int],
           features: list[Tensor] | None = None, y: list[int] | None = None,
           pairs: Tensor | None = None) -> GraphData:
    n_graphs, n_max = len(sizes), max(sizes)
    adj = torch.zeros(n_graphs, n_max, n_max)
    mask = torch.zeros(n_graphs, n_max, dtype=torch.bool)
    channels = 1 if features is None else features[0].shape[-1]
    x = torch.zeros(n_graphs, n_max, channels)
    for k, (edges, n) in enumerate(zip(edge_lists, sizes)):
        if edges:
            e = torch.tensor(edges, dtype=torch.long)
            adj[k, e[:, 0], e[:, 1]] = 1.0
            adj[k, e[:, 1], e[:, 0]] = 1.0
        mask[k, :n] = True
        x[k, :n] = 1.0 if features is None else features[k]
    adj.diagonal(dim1=-2, dim2=-1).zero_()
    labels = None if y is None else torch.tensor(y, dtype=torch.long)
    return GraphData(name=name, x=x, adj=adj, mask=mask, y=labels, pairs=pairs)


def decode_graph6(line: str) -> tuple[int, list[tuple[int, int]]]:
    """Decode one graph6 string into ``(n_nodes, edges)`` (edges as ``(i, j)`` with ``i < j``).

    graph6 stores ``n`` and then the upper triangle of the adjacency column by column
    (``(0,1), (0,2), (1,2), (0,3), ...``), six bits per printable character (value + 63).
    """
    line = line.strip()
    if line.startswith(">>graph6<<"):
        line = line[len(">>graph6<<"):]
    if not line:
        raise ValueError("line: empty graph6 string")
    data = [ord(c) - 63 for c in line]
    if any(v < 0 or v > 63 for v in data):
        raise ValueError(f"line: not a graph6 string: {line[:40]!r}")
    if data[0] < 63:
        n, rest = data[0], data[1:]
    elif data[1] < 63:
        n = (data[1] << 12) | (data[2] << 6) | data[3]
        rest = data[4:]
    else:
        n = 0
        for v in data[2:8]:
            n = (n << 6) | v
        rest = data[8:]
    bits = [(v >> (5 - b)) & 1 for v in rest for b in range(6)]
    needed = n * (n - 1) // 2
    if len(bits) < needed:
        raise ValueError(f"line: graph6 string too short for {n} nodes")
    edges, k = [], 0
    for j in range(1, n):
        for i in range(j):
            if bits[k]:
                edges.append((i, j))
            k += 1
    return n, edges


def _read_text(filename: str) -> str:
    return resources.files("approxeq").joinpath("datasets", "graphs", filename).read_text()


def _load_graph6(name: str, filename: str) -> GraphData:
    decoded = [decode_graph6(line) for line in _read_text(filename).splitlines() if line.strip()]
    return _dense(name, [e for _, e in decoded], [n for n, _ in decoded])


def load_graph8c() -> GraphData:
    """All 11,117 connected non-isomorphic graphs on 8 nodes; constant node feature (``c = 1``)."""
    return _load_graph6("graph8c", "graph8c.g6")


def load_sr25() -> GraphData:
    """The 15 strongly regular graphs SR(25, 12, 5, 6); constant node feature (``c = 1``).

    They are pairwise non-isomorphic but indistinguishable by 3-WL."""
    return _load_graph6("sr25", "sr251256.g6")


def parse_exp(text: str) -> tuple[list[int], list[int], list[list[tuple[int, int]]], list[Tensor]]:
    """Parse the EXP text format: a line with the number of graphs, then for each graph a line
    ``n label`` and ``n`` lines ``feature degree neighbour_1 ... neighbour_degree``.

    Returns ``(sizes, labels, edge_lists, features)`` with ``features[k]`` of shape ``[n_k, 1]``.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    n_graphs, pos = int(lines[0].split()[0]), 1
    sizes, labels, edge_lists, features = [], [], [], []
    for k in range(n_graphs):
        n, label = map(int, lines[pos].split()[:2])
        pos += 1
        edges, feat = [], []
        for node in range(n):
            tokens = list(map(int, lines[pos + node].split()))
            degree = tokens[1]
            if len(tokens) != 2 + degree:
                raise ValueError(f"text: graph {k} node {node} lists {len(tokens) - 2} "
                                 f"neighbours but says degree {degree}")
            feat.append(float(tokens[0]))
            edges += [(node, j) for j in tokens[2:]]
        pos += n
        sizes.append(n)
        labels.append(label)
        edge_lists.append(edges)
        features.append(torch.tensor(feat).unsqueeze(-1))
    return sizes, labels, edge_lists, features


def load_exp() -> GraphData:
    """EXP (Abboud et al., IJCAI 2021): 1,200 graphs from SAT formulas in 600 pairs
    ``(2i, 2i+1)`` that 1-WL cannot tell apart, one satisfiable (label 1) and one not (label 0).

    Node feature ``c = 1`` (the literal/clause bit of the file); add the degree with
    :func:`with_degree`. ``n_max = 73`` for this file.
    """
    sizes, labels, edges, feats = parse_exp(_read_text("EXP_GRAPHSAT.txt"))
    pairs = torch.arange(len(sizes)).view(-1, 2)
    return _dense("exp", edges, sizes, feats, labels, pairs)


def make_csl(per_class: int = 15, n_nodes: int = 41, skips: tuple[int, ...] = CSL_SKIPS,
             seed: int = 0) -> GraphData:
    """Circular skip-link graphs: class ``k`` is the circulant graph ``C_n`` with skips
    ``{1, skips[k]}``; each class has ``per_class`` copies under random node relabellings drawn
    from ``seed``. Constant node feature (``c = 1``); labels ``0 .. len(skips) - 1``.

    Needs networkx (``pip install approxeq[graphs]``).
    """
    try:
        import networkx as nx
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("make_csl needs networkx: pip install 'approxeq[graphs]'") from err
    gen = torch.Generator().manual_seed(seed)
    edge_lists, labels = [], []
    for label, skip in enumerate(skips):
        graph = nx.circulant_graph(n_nodes, [1, skip])
        for _ in range(per_class):
            perm = torch.randperm(n_nodes, generator=gen).tolist()
            edge_lists.append([(perm[i], perm[j]) for i, j in graph.edges()])
            labels.append(label)
    return _dense("csl", edge_lists, [n_nodes] * len(labels), y=labels)


def with_degree(data: GraphData) -> GraphData:
    """``data`` with the node degree appended as a feature channel (``c → c + 1``)."""
    degree = data.adj.sum(-1, keepdim=True)
    return replace(data, x=torch.cat([data.x, degree], dim=-1))


#: name → loader, for the experiment scripts and the CLI
GRAPH_DATASETS = {
    "graph8c": load_graph8c,
    "sr25": load_sr25,
    "exp": load_exp,
    "csl": make_csl,
}


def load_graph_dataset(name: str) -> GraphData:
    """Load one of :data:`GRAPH_DATASETS` by name (``graph8c``, ``sr25``, ``exp``, ``csl``)."""
    if name not in GRAPH_DATASETS:
        raise ValueError(f"name: unknown graph dataset {name!r}; expected one of "
                         f"{sorted(GRAPH_DATASETS)}")
    return GRAPH_DATASETS[name]()
