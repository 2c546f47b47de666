"""Graph separation controls: a graph against permuted copies of itself; the unsymmetrised base."""

from __future__ import annotations

import pytest
import torch

from approxeq.data.graphs import GraphData, load_sr25
from approxeq.experiments.studies.graphs import run_graph_experiment
from approxeq.experiments.studies.graphs.separation import (
    SeparationEmbeddings,
    judge_separation,
    permuted_copy,
)
from approxeq.nn import GraphGIN


def _star_and_path() -> GraphData:
    """A 4-node star (padded to 5) and a 5-node path: graphs with and without padding."""
    adj = torch.zeros(2, 5, 5)
    for i, j in [(0, 1), (0, 2), (0, 3)]:
        adj[0, i, j] = adj[0, j, i] = 1
    for i in range(4):
        adj[1, i, i + 1] = adj[1, i + 1, i] = 1
    mask = torch.tensor([[True] * 4 + [False], [True] * 5])
    return GraphData("toy", mask[..., None].float(), adj, mask)


def test_permuted_copy_is_a_relabelling_with_padding_last(float64, gen):
    data = load_sr25().to(torch.float64)
    copy, identical = permuted_copy(data, gen)
    gin, gin_id = GraphGIN(1, 4), GraphGIN(1, 4, position_ids=25)
    # same graphs: a permutation-invariant model agrees, a position-aware one does not
    assert torch.allclose(gin(data.x, data.adj, data.mask), gin(copy.x, copy.adj, copy.mask),
                          atol=1e-10)
    assert (gin_id(data.x, data.adj, data.mask) - gin_id(copy.x, copy.adj, copy.mask)
            ).abs().amax(-1).min() > 1e-4
    assert not identical.any()
    toy = _star_and_path().to(torch.float64)
    moved, _ = permuted_copy(toy, gen)
    assert torch.equal(moved.mask, toy.mask)  # real nodes stay first
    assert torch.equal(moved.adj.sum((-1, -2)), toy.adj.sum((-1, -2)))
    assert torch.equal(moved.adj.sum(-1).sort(-1).values, toy.adj.sum(-1).sort(-1).values)


def test_permuted_copy_flags_copies_equal_to_their_graph(gen):
    complete = torch.ones(1, 4, 4) - torch.eye(4)  # every relabelling is an automorphism
    data = GraphData("k4", torch.ones(1, 4, 1), complete, torch.ones(1, 4, dtype=torch.bool))
    assert permuted_copy(data, gen)[1].tolist() == [True]


def _judge(embed_fn, n_graphs=6, pairs=None, n_inits=3, identical=None):
    index = torch.arange(n_graphs)
    return judge_separation(embed_fn, n_inits, n_graphs=n_graphs, control_index=index,
                            identical=torch.zeros(n_graphs, dtype=torch.bool)
                            if identical is None else identical, pairs=pairs)


def _noisy(values: torch.Tensor, seed: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return values + scale * torch.rand(values.shape, generator=g, dtype=values.dtype)


def test_random_outputs_separate_own_copies_and_the_verdict_says_so():
    # graphs 0-2 and 3-5 have two true embeddings 0 and 10; every call adds noise of size 1
    truth = torch.tensor([0.0, 0.0, 0.0, 10.0, 10.0, 10.0]).unsqueeze(-1)
    calls = iter(range(1000))

    def embed_fn(seed):
        draw = [_noisy(truth, next(calls), 1.0) for _ in range(3)]
        return SeparationEmbeddings(draw[0], draw[1], draw[2], truth, truth + 1)

    r = _judge(embed_fn)
    # at 1e-3 every pair and every graph's own copy is "separated": the count shows nothing
    assert r["indistinguishable"] == 0 and r["controls"]["separated"] == 6
    assert r["verdict"].startswith("threshold problem")
    # at the control threshold the 9 pairs across the two groups (of 15) stay separated, the
    # held-out copies are judged at the same threshold
    k = r["calibrated"]
    assert all(1.0 > t > 1e-3 for t in k["thresholds"]) and k["inits_used"] == 3
    assert k["indistinguishable"] <= 6 and k["separated_fraction"] >= 9 / 15
    assert r["controls"]["base_separated"] == 6


def test_invariant_model_keeps_its_count_and_base_without_power_is_flagged():
    emb = torch.tensor([0.0, 0.0, 1.0, 2.0]).unsqueeze(-1)

    def embed_fn(seed):  # deterministic and invariant: copies embed like their graph
        return SeparationEmbeddings(emb, emb.clone(), emb.clone(), emb, emb.clone())

    r = _judge(embed_fn, n_graphs=4)
    assert r["indistinguishable"] == 1 and r["controls"]["separated"] == 0
    assert r["calibrated"]["indistinguishable"] == 1 and r["calibrated"]["thresholds"] == [1e-3] * 3
    assert r["verdict"].startswith("invariant") and "WITHOUT POWER" in r["verdict"]
    # a copy equal to its graph as tensors is not required of the base
    identical = torch.ones(4, dtype=torch.bool)
    assert "WITHOUT POWER" not in _judge(embed_fn, n_graphs=4, identical=identical)["verdict"]


def test_listed_pairs_are_judged_alone():
    emb = torch.tensor([0.0, 0.0, 5.0, 5.0]).unsqueeze(-1)

    def embed_fn(seed):
        return SeparationEmbeddings(emb, emb.clone(), emb.clone())

    r = _judge(embed_fn, n_graphs=4, pairs=torch.tensor([[0, 1], [1, 2]]))
    assert (r["indistinguishable"], r["pairs"], r["controls"]["base_separated"]) == (1, 2, None)


@pytest.mark.parametrize("strategy", ["ps", "ga"])
def test_sr25_randomised_models_fail_the_control_base_passes(tmp_path, strategy):
    models = [["MLP", "mlp", strategy], ["GIN", "gin", "none"]]
    metrics = run_graph_experiment("sr25", tmp_path, quick=True, log=None,
                                   overrides=dict(n_inits=2, models=models, device="cpu",
                                                  n_controls=15, k_eval=2))
    sym, gin = metrics[f"MLP-{strategy}"], metrics["GIN"]
    # the randomised model "separates" all 105 pairs at 1e-3, and so its own permuted copies
    assert sym["indistinguishable"] == 0 and sym["controls"]["separated"] == 15
    assert sym["controls"]["base_separated"] == 15  # the base is not invariant: power
    assert sym["verdict"].startswith("threshold problem")
    assert gin["controls"]["separated"] == 0 and gin["verdict"].startswith("invariant")
    table = (tmp_path / "results.md").read_text()
    assert "own permuted copies separated" in table and "threshold problem" in table


def test_control_threshold_count_on_a_sample_when_pairs_are_many():
    emb = torch.arange(40.0).unsqueeze(-1)

    def embed_fn(seed):
        return SeparationEmbeddings(emb, emb.clone(), emb.clone())

    index = torch.arange(40)
    r = judge_separation(embed_fn, 1, n_graphs=40, control_index=index,
                         identical=torch.zeros(40, dtype=torch.bool), max_calibrated_pairs=100)
    assert r["pairs"] == 780 and r["calibrated"]["pairs_judged"] == 100
    assert r["indistinguishable"] == 0 and r["calibrated"]["separated_fraction"] == 1.0
