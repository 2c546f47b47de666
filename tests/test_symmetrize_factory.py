"""The one strategy factory: a strategy name to the symmetrised model the graph, n-body and
graph-image models are built with."""

from __future__ import annotations

import pytest
import torch

from approxeq.groups import Permutation
from approxeq.nn import GraphMLP
from approxeq.symmetrize import (
    Canonicalization,
    GraphScoreNetwork,
    ProbabilisticSymmetrization,
    Symmetrized,
)
from approxeq.symmetrize.factory import Unsymmetrized, symmetrize

KINDS = ("nodes", "adjacency", "mask")


def _graphs(b: int = 3, n: int = 5, c: int = 2):
    x = torch.randn(b, n, c)
    adj = (torch.rand(b, n, n) > 0.5).to(x.dtype)
    adj = ((adj + adj.transpose(1, 2)) > 0).to(x.dtype)
    return x, adj, torch.ones(b, n, dtype=torch.bool)


def _built(strategy: str, **kwargs):
    torch.manual_seed(0)
    base = GraphMLP(5, 2, 3, (8,), "tanh")
    return symmetrize(base, Permutation(5), strategy, in_kinds=KINDS, out_kinds="invariant",
                      network=lambda: GraphScoreNetwork(2, KINDS, hidden=8, num_layers=1),
                      **kwargs)


@pytest.mark.parametrize(("strategy", "cls"), [("ps", ProbabilisticSymmetrization),
                                               ("canonical", Canonicalization)])
def test_a_strategy_builds_what_one_would_by_hand(float64, strategy, cls):
    model = _built(strategy, ps_options={"tau": 0.05}, canonical_options={"tau": 0.05},
                   k_train=3, k_eval=4)
    torch.manual_seed(0)
    base = GraphMLP(5, 2, 3, (8,), "tanh")
    by_hand = Symmetrized(base, Permutation(5),
                          cls(GraphScoreNetwork(2, KINDS, hidden=8, num_layers=1), tau=0.05),
                          in_kinds=KINDS, out_kinds="invariant",
                          n_samples_train=1 if strategy == "canonical" else 3,
                          n_samples_eval=1 if strategy == "canonical" else 4)
    assert type(model.strategy) is cls
    assert (model.n_samples_train, model.n_samples_eval) == (
        by_hand.n_samples_train, by_hand.n_samples_eval)
    x, adj, mask = _graphs()
    model.eval(), by_hand.eval()
    out = model(x, adj, mask, generator=torch.Generator().manual_seed(1)).output
    ref = by_hand(x, adj, mask, generator=torch.Generator().manual_seed(1)).output
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_none_is_the_bare_base_behind_the_symmetrised_call(float64):
    model = _built("none")
    assert isinstance(model, Unsymmetrized)
    x, adj, mask = _graphs()
    torch.testing.assert_close(model(x, adj, mask, generator=torch.Generator(), n_samples=3),
                               model.base(x, adj, mask), rtol=0, atol=0)


def test_an_unsupported_strategy_names_the_ones_the_caller_supports():
    with pytest.raises(ValueError, match=r"^strategy: expected 'none', 'ps', 'canonical' or "
                                         r"'ga', got 'fa'$"):
        _built("fa", allowed=("none", "ps", "canonical", "ga"))
    with pytest.raises(ValueError, match="network: strategy 'ps' needs the network"):
        symmetrize(GraphMLP(5, 2, 3, (8,), "tanh"), Permutation(5), "ps", in_kinds=KINDS,
                   out_kinds="invariant")
