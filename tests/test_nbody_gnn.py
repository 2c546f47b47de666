"""The n-body GNN base: S_n-equivariant alone, S_n x E(3)-equivariant once symmetrised."""

from __future__ import annotations

import json

import pytest
import torch

from approxeq.experiments.studies.nbody import build_nbody_model, run_nbody_experiment
from approxeq.groups import DirectProduct, Euclidean, Permutation
from approxeq.nn.graph_models import NBodyGNN

GROUP = DirectProduct(Permutation(5), Euclidean(3))


def _system(gen):
    loc = torch.randn(3, 5, 3, generator=gen, dtype=torch.float64)
    vel = torch.randn(3, 5, 3, generator=gen, dtype=torch.float64)
    charges = torch.randint(0, 2, (3, 5, 1), generator=gen).double() * 2 - 1
    return loc, vel, charges


def _act(g, loc, vel, charges):
    return GROUP.act(g, loc, "points"), GROUP.act(g, vel, "vectors"), GROUP.act(g, charges, "nodes")


def test_gnn_is_permutation_but_not_rotation_equivariant(gen):
    torch.manual_seed(0)
    gnn = NBodyGNN(hidden=16, num_layers=2).double()
    loc, vel, charges = _system(gen)
    perm = Permutation(5).sample(3, generator=gen)
    s5 = Permutation(5)
    torch.testing.assert_close(s5.act(perm, gnn(loc, vel, charges), "nodes"),
                               gnn(*(s5.act(perm, t, "nodes") for t in (loc, vel, charges))),
                               atol=1e-10, rtol=0)
    g = GROUP.sample(3, generator=gen, dtype=torch.float64)
    assert not torch.allclose(GROUP.act(g, gnn(loc, vel, charges), "points"),
                              gnn(*_act(g, loc, vel, charges)), atol=1e-4)
    with pytest.raises(ValueError, match="charges"):
        gnn(loc, vel, charges[..., 0])


@pytest.mark.parametrize("strategy", ["ps", "canonical"])
def test_symmetrised_gnn_is_exactly_equivariant(strategy, gen):
    torch.manual_seed(1)
    model = build_nbody_model(strategy, base="gnn", gnn_hidden=16, gnn_layers=2, vn_hidden=8,
                              k_eval=3).double().eval()
    loc, vel, charges = _system(gen)
    for _ in range(3):
        g = GROUP.sample(3, generator=gen, dtype=torch.float64)
        first = model(loc, vel, charges, generator=gen)
        second = model(*_act(g, loc, vel, charges), noise=model.transform_noise(g, first.noise))
        torch.testing.assert_close(GROUP.act(g, first.output, "points"), second.output,
                                   atol=1e-9, rtol=0)


def test_unknown_base_is_refused():
    with pytest.raises(ValueError, match="base"):
        build_nbody_model("ps", base="mlp")


def test_nbody_gnn_rows_end_to_end(tmp_path):
    overrides = dict(n_train=20, n_val=10, n_test=10, epochs=1, batch_size=10, num_layers=1,
                     d_model=16, gnn_hidden=16, gnn_layers=1, k_train=2, k_eval=2, k_test=2,
                     eval_every_epochs=1, device="cpu",
                     models=[["GNN-ps", "gnn", "ps"], ["GNN-none", "gnn", "none"],
                             ["Transformer-ga", "transformer", "ga"]],
                     simulation=dict(save_every=10, input_frame=3, target_frame=4))
    run_nbody_experiment(tmp_path, quick=True, overrides=overrides, log=None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) == {"GNN-ps", "GNN-none", "Transformer-ga"}
    assert all(torch.isfinite(torch.tensor(v["test_mse"])) for v in saved.values())
