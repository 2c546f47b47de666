"""Graph loaders: counts, shapes, symmetric adjacency, balanced labels, graph6 decoding."""

from __future__ import annotations

import pytest
import torch

from approxeq.data.graphs import (
    decode_graph6,
    load_exp,
    load_graph8c,
    load_sr25,
    make_csl,
    parse_exp,
    with_degree,
)


def _assert_valid(data, n_graphs, n_max):
    assert len(data) == n_graphs and data.n_max == n_max
    assert data.x.shape[:2] == data.mask.shape == (n_graphs, n_max)
    assert data.adj.shape == (n_graphs, n_max, n_max)
    assert torch.equal(data.adj, data.adj.transpose(1, 2))
    assert data.adj.diagonal(dim1=1, dim2=2).abs().sum() == 0
    pad = ~data.mask
    assert data.adj[pad.unsqueeze(-1).expand_as(data.adj)].abs().sum() == 0
    assert data.x[pad].abs().sum() == 0


def test_graph8c_counts_and_connectivity():
    data = load_graph8c()
    _assert_valid(data, 11117, 8)
    assert data.mask.all() and data.y is None
    # every graph is connected: (I + A)^7 has no zero entry
    reach = torch.linalg.matrix_power(torch.eye(8) + data.adj, 7)
    assert (reach > 0).all()


def test_sr25_strongly_regular():
    data = load_sr25()
    _assert_valid(data, 15, 25)
    a = data.adj
    # SR(25, 12, 5, 6): A² = k I + λ A + μ (J − I − A)
    expected = 12 * torch.eye(25) + 5 * a + 6 * (torch.ones(25, 25) - torch.eye(25) - a)
    assert torch.equal(a @ a, expected.expand_as(a))


def test_exp_pairs_and_labels():
    data = load_exp()
    _assert_valid(data, 1200, int(data.num_nodes.max()))
    assert data.n_max <= 80 and data.pairs.shape == (600, 2)
    assert data.y.sum() == 600
    # each pair holds one satisfiable and one unsatisfiable formula, of equal size
    assert torch.equal(data.y[data.pairs].sum(1), torch.ones(600, dtype=torch.long))
    sizes = data.num_nodes[data.pairs]
    assert torch.equal(sizes[:, 0], sizes[:, 1])
    assert torch.equal(with_degree(data).x[..., 1], data.adj.sum(-1))


def test_exp_parser_rejects_wrong_degree():
    with pytest.raises(ValueError, match="degree"):
        parse_exp("1\n2 0\n0 2 1\n0 1 0\n")


def test_csl_classes_are_circulant():
    pytest.importorskip("networkx")
    data = make_csl(seed=0)
    _assert_valid(data, 150, 41)
    assert torch.equal(torch.bincount(data.y), torch.full((10,), 15))
    assert (data.adj.sum(-1) == 4).all()
    other = make_csl(seed=1)
    assert torch.equal(data.y, other.y) and not torch.equal(data.adj, other.adj)


def test_decode_graph6_matches_networkx():
    nx = pytest.importorskip("networkx")
    graph = nx.gnp_random_graph(70, 0.3, seed=3)
    line = nx.to_graph6_bytes(graph, header=False).decode().strip()
    n, edges = decode_graph6(line)
    assert n == 70 and sorted(edges) == sorted(tuple(sorted(e)) for e in graph.edges())
