"""PATTERN: find the nodes of a planted subgraph in a stochastic-block-model graph.

The node-classification benchmark of Dwivedi et al., "Benchmarking Graph Neural Networks"
(JMLR 2023; arXiv:2003.00982, section on SBM datasets), generated here from a seed instead of
downloaded. Published parameters (paper, and the DGL ``PATTERNDataset`` documentation that
quotes it):

* a background graph ``G`` of 5 communities with sizes drawn uniformly from [5, 35]; an edge
  joins two nodes with probability ``p = 0.5`` inside a community and ``q = 0.35`` between
  communities;
* node features drawn uniformly from a vocabulary of size 3 ({0, 1, 2});
* 100 patterns ``P`` of 20 nodes, each a random graph with edge probability ``p_P = 0.5`` and its
  own random features; each pattern node is joined to each node of ``G`` with probability
  ``q_P = 0.5``;
* label 1 for the nodes of ``P``, 0 for those of ``G``; nodes are shuffled; the published graphs
  have 44-188 nodes; 10,000 / 2,000 / 2,000 graphs for train / validation / test, generated per
  pattern as 100 / 20 / 20 graphs.

The generator notebook of the authors' repository (graphdeeplearning/benchmarking-gnns,
``data/SBMs/generate_SBM_PATTERN.ipynb``) follows this recipe; its last committed cell carries
other values (``q = 0.45``, ``q_P = 0.55``, pattern sizes in [5, 35)) than the paper reports. The
defaults here are the paper's; every value is a field of :class:`PatternConfig`. Community
sizes follow the notebook's ``randint(size_min, size_max)`` (upper bound excluded), so graphs
here have 45-190 nodes.

Features are one-hot (``[N, n_max, 3]``), as PyTorch Geometric's copy of the data set has them.
The benchmark's metric is the class-balanced ("weighted") node accuracy:
:func:`weighted_accuracy`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

__all__ = ["PatternConfig", "PatternData", "make_pattern", "make_pattern_splits",
           "weighted_accuracy"]


@dataclass(frozen=True)
class PatternConfig:
    """Parameters of the PATTERN generator (defaults: Dwivedi et al.'s published values).

    Attributes:
        n_communities: communities of the background graph.
        community_min, community_max: community sizes are uniform in
            ``[community_min, community_max)``.
        p, q: edge probabilities inside and between communities.
        pattern_size: nodes of a planted pattern.
        p_pattern: edge probability inside a pattern.
        q_pattern: probability that a pattern node is joined to a background node.
        vocab_size: node features are uniform in ``{0, ..., vocab_size − 1}`` (one-hot).
    """

    n_communities: int = 5
    community_min: int = 5
    community_max: int = 35
    p: float = 0.5
    q: float = 0.35
    pattern_size: int = 20
    p_pattern: float = 0.5
    q_pattern: float = 0.5
    vocab_size: int = 3

    def __post_init__(self) -> None:
        for name in ("n_communities", "community_min", "pattern_size", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if not isinstance(self.community_max, int) or \
                self.community_max <= self.community_min:
            raise ValueError(f"community_max: community sizes are drawn from [community_min, "
                             f"community_max), so community_max must exceed community_min = "
                             f"{self.community_min}; got {self.community_max!r}")
        for name in ("p", "q", "p_pattern", "q_pattern"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")

    @property
    def max_nodes(self) -> int:
        """The largest possible graph."""
        return self.n_communities * (self.community_max - 1) + self.pattern_size


@dataclass
class PatternData:
    """``N`` PATTERN graphs padded to ``n_max`` nodes.

    Attributes:
        x: ``[N, n_max, vocab]`` one-hot node features (zero at padding).
        adj: ``[N, n_max, n_max]`` symmetric 0/1 adjacency, no self-loops.
        mask: ``[N, n_max]`` boolean, ``True`` for real nodes.
        y: ``[N, n_max]`` long, 1 for pattern nodes, 0 otherwise (and at padding).
    """

    x: Tensor
    adj: Tensor
    mask: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        n, m = self.mask.shape
        for name, t, shape in (("x", self.x, (n, m)), ("adj", self.adj, (n, m, m)),
                               ("y", self.y, (n, m))):
            if tuple(t.shape[:len(shape)]) != shape:
                raise ValueError(f"{name}: expected leading shape {list(shape)}, got "
                                 f"{tuple(t.shape)}")

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def n_max(self) -> int:
        return self.mask.shape[1]

    def subset(self, index: Tensor | slice) -> PatternData:
        """The graphs selected by ``index``."""
        return PatternData(self.x[index], self.adj[index], self.mask[index], self.y[index])

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> PatternData:
        """Features and adjacency cast to ``dtype``; everything moved to ``device``."""
        return replace(self, x=self.x.to(device=device, dtype=dtype or self.x.dtype),
                       adj=self.adj.to(device=device, dtype=dtype or self.adj.dtype),
                       mask=self.mask.to(device), y=self.y.to(device))


def _random_graph(rng: np.random.Generator, prob: np.ndarray) -> np.ndarray:
    upper = np.triu(rng.random(prob.shape) < prob, k=1)
    return (upper | upper.T).astype(np.float32)


def _one_graph(rng: np.random.Generator, cfg: PatternConfig, pattern_adj: np.ndarray,
               pattern_feat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = rng.integers(cfg.community_min, cfg.community_max, size=cfg.n_communities)
    community = np.repeat(np.arange(cfg.n_communities), sizes)
    same = community[:, None] == community[None, :]
    background = _random_graph(rng, np.where(same, cfg.p, cfg.q))
    n_bg, n_p = len(community), cfg.pattern_size
    links = (rng.random((n_p, n_bg)) < cfg.q_pattern).astype(np.float32)
    adj = np.block([[background, links.T], [links, pattern_adj]])
    feat = np.concatenate([rng.integers(cfg.vocab_size, size=n_bg), pattern_feat])
    label = np.concatenate([np.zeros(n_bg, np.int64), np.ones(n_p, np.int64)])
    order = rng.permutation(n_bg + n_p)
    return adj[order][:, order], feat[order], label[order]


def make_pattern(n_patterns: int, per_pattern: tuple[int, ...], *, seed: int = 0,
                 config: PatternConfig | None = None,
                 n_max: int | None = None) -> list[PatternData]:
    """Seeded PATTERN splits: ``n_patterns`` planted patterns, and for each, ``per_pattern[s]``
    graphs in split ``s`` (the benchmark: 100 patterns, ``(100, 20, 20)``).

    Args:
        seed: the whole data set is a function of it.
        config: the generator's parameters (default: the published ones).
        n_max: pad every graph to this many nodes (default: ``config.max_nodes``).
    Returns:
        one :class:`PatternData` per entry of ``per_pattern``.
    """
    cfg = config or PatternConfig()
    n_max = cfg.max_nodes if n_max is None else n_max
    if n_max < cfg.max_nodes:
        raise ValueError(f"n_max: must be at least the largest graph, {cfg.max_nodes}, "
                         f"got {n_max}")
    rng = np.random.default_rng(seed)
    splits: list[list[tuple]] = [[] for _ in per_pattern]
    for _ in range(n_patterns):
        pattern_adj = _random_graph(rng, np.full((cfg.pattern_size,) * 2, cfg.p_pattern))
        pattern_feat = rng.integers(cfg.vocab_size, size=cfg.pattern_size)
        for s, count in enumerate(per_pattern):
            splits[s] += [_one_graph(rng, cfg, pattern_adj, pattern_feat) for _ in range(count)]
    return [_pad(graphs, n_max, cfg.vocab_size) for graphs in splits]


def _pad(graphs: list[tuple], n_max: int, vocab: int) -> PatternData:
    count = len(graphs)
    x = torch.zeros(count, n_max, vocab)
    adj = torch.zeros(count, n_max, n_max)
    mask = torch.zeros(count, n_max, dtype=torch.bool)
    y = torch.zeros(count, n_max, dtype=torch.long)
    for i, (a, feat, label) in enumerate(graphs):
        n = len(feat)
        adj[i, :n, :n] = torch.from_numpy(a)
        x[i, torch.arange(n), torch.from_numpy(feat)] = 1.0
        mask[i, :n] = True
        y[i, :n] = torch.from_numpy(label)
    return PatternData(x, adj, mask, y)


def make_pattern_splits(n_patterns: int = 100, per_pattern: tuple[int, int, int] = (100, 20, 20),
                        *, seed: int = 0, config: PatternConfig | None = None
                        ) -> dict[str, PatternData]:
    """``{"train", "val", "test"}`` splits of :func:`make_pattern` (defaults: the benchmark's
    10,000 / 2,000 / 2,000 graphs)."""
    train, val, test = make_pattern(n_patterns, per_pattern, seed=seed, config=config)
    return {"train": train, "val": val, "test": test}


def weighted_accuracy(pred: Tensor, target: Tensor, mask: Tensor | None = None,
                      n_classes: int = 2) -> float:
    """Class-balanced accuracy: the mean over classes present in ``target`` of the fraction of
    their nodes predicted right, as Benchmarking-GNNs reports PATTERN and CLUSTER.

    Args:
        pred, target: ``[...]`` integer labels; mask: ``[...]`` boolean, nodes to count.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred: expected the shape of target {tuple(target.shape)}, got "
                         f"{tuple(pred.shape)}")
    if mask is not None:
        pred, target = pred[mask.bool()], target[mask.bool()]
    per_class = [(pred[target == c] == c).double().mean() for c in range(n_classes)
                 if bool((target == c).any())]
    if not per_class:
        raise ValueError("target: no node to score")
    return float(torch.stack(per_class).mean())
