"""Graph and n-body symmetrisation experiments: models, separation counting, end-to-end runs."""

from __future__ import annotations

import json

import pytest
import torch

from approxeq.data.graphs import load_sr25
from approxeq.data.nbody import make_nbody
from approxeq.experiments import CONFIGS_DIR as EXPERIMENTS
from approxeq.experiments.studies.graphs import (
    close_pairs,
    count_indistinguishable,
    graph_experiment_config,
    run_graph_experiment,
)
from approxeq.experiments.studies.nbody import (
    build_nbody_model,
    nbody_experiment_config,
    run_nbody_experiment,
)
from approxeq.groups import DirectProduct, Euclidean, Permutation
from approxeq.nn import GraphGIN, GraphMLP, NBodyTransformer


def test_close_pairs_blocked_matches_brute_force(gen):
    emb = torch.randint(0, 4, (50, 2), generator=gen).float()
    dist = torch.cdist(emb, emb, p=1)
    i, j = torch.nonzero(dist <= 1e-3, as_tuple=True)
    expected = {(a, b) for a, b in zip(i.tolist(), j.tolist()) if a < b}
    found = {tuple(p) for p in close_pairs(emb, block=7).tolist()}
    assert found == expected and len(expected) > 0


def test_count_needs_closeness_under_every_init():
    base = torch.arange(6.0).unsqueeze(-1).repeat(1, 3)
    base[1] = base[0]
    base[3] = base[2]

    def embed(seed):
        emb = base.clone()
        if seed == 1:
            emb[3] += 1.0  # the pair (2, 3) is told apart by the second initialisation
        return emb

    assert count_indistinguishable(embed, 1) == (2, 1)
    assert count_indistinguishable(embed, 3) == (1, 3)


def test_base_models_equivariance(float64, gen):
    data = load_sr25().to(torch.float64)
    x, adj, mask = data.x[:3], data.adj[:3], data.mask[:3]
    perm = Permutation(25).sample(3, generator=gen)
    group = Permutation(25)
    moved = (group.act_nodes(perm, x), group.act_adjacency(perm, adj), group.act_nodes(perm, mask))
    gin, gin_id = GraphGIN(1, 4), GraphGIN(1, 4, position_ids=25)
    mlp = GraphMLP(25, 1, 4)
    assert torch.allclose(gin(x, adj, mask), gin(*moved), atol=1e-10)
    assert (gin_id(x, adj, mask) - gin_id(*moved)).abs().max() > 1e-4
    assert (mlp(x, adj, mask) - mlp(*moved)).abs().max() > 1e-4


def _transported(model, data, gen):
    group = model.group
    out = model(data.loc, data.vel, data.charges, generator=gen)
    b = len(data)
    perm = Permutation(5).sample(b, generator=gen).to(torch.float64)
    rot = Euclidean(3).sample(b, generator=gen, dtype=torch.float64)
    g = group.join(perm, rot)
    moved = model(group.act_points(g, data.loc), group.act_vectors(g, data.vel),
                  group.act_nodes(g, data.charges), noise=model.transform_noise(g, out.noise))
    return (moved.output - group.act_points(g, out.output)).abs().max()


@pytest.mark.parametrize("strategy", ["ps", "canonical"])
def test_symmetrised_transformer_equivariant(float64, gen, strategy):
    data = make_nbody(4, 0).to(torch.float64)
    model = build_nbody_model(strategy, num_layers=1, d_model=16, k_train=3, k_eval=3).eval()
    assert isinstance(model.group, DirectProduct)
    assert _transported(model, data, gen) < 1e-9


def test_bare_transformer_not_equivariant(float64, gen):
    data = make_nbody(4, 0).to(torch.float64)
    model = NBodyTransformer(num_layers=1, d_model=16)
    perm = torch.randperm(5, generator=gen)
    out = model(data.loc, data.vel, data.charges)
    moved = model(data.loc[:, perm], data.vel[:, perm], data.charges[:, perm])
    assert (moved - out[:, perm]).abs().max() > 1e-4


def test_sr25_separation_end_to_end(tmp_path):
    models = [["MLP", "mlp", "ps"], ["GIN", "gin", "none"]]
    metrics = run_graph_experiment("sr25", tmp_path, quick=True, log=None,
                                   overrides=dict(n_inits=2, models=models, device="cpu"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    # SR25 graphs are all 12-regular, so a GIN (1-WL) cannot tell any pair apart
    assert saved["GIN"]["indistinguishable"] == 105
    assert saved["MLP-ps"]["indistinguishable"] == 0
    assert (tmp_path / "results.md").read_text().startswith("# sr25")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "experiment.json", "fingerprint.json", "metrics.json", "results.md"]
    assert json.loads((tmp_path / "experiment.json").read_text())["size"] == "quick"


def test_csl_training_end_to_end(tmp_path):
    metrics = run_graph_experiment("csl", tmp_path, quick=True, log=None,
                                   overrides=dict(epochs=1, models=[["MLP", "mlp", "ps"]],
                                                  k_train=1, k_eval=1, device="cpu"))
    acc = metrics["MLP-ps"]["test_acc"]
    assert 0.0 <= acc <= 1.0 and (tmp_path / "metrics.json").exists()


def test_nbody_end_to_end(tmp_path):
    overrides = dict(n_train=20, n_val=10, n_test=10, epochs=1, batch_size=10, num_layers=1,
                     d_model=16, k_train=2, k_eval=2, k_test=2, eval_every_epochs=1,
                     models=[["Transformer-ps", "transformer", "ps"],
                             ["Transformer-ga", "transformer", "ga"]], device="cpu",
                     simulation=dict(save_every=10, input_frame=3, target_frame=4))
    metrics = run_nbody_experiment(tmp_path, quick=True, overrides=overrides, log=None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("Transformer-ps", "Transformer-ga"):
        assert saved[key]["test_mse"] == pytest.approx(metrics[key]["test_mse"])
        assert torch.isfinite(torch.tensor(saved[key]["test_mse"]))


@pytest.mark.parametrize("name", ["graph8c", "exp-iso", "sr25", "exp-classify", "csl", "nbody"])
def test_yaml_is_the_runner_config(name):
    pytest.importorskip("yaml")
    from approxeq.experiments import experiment_for, load_named_experiment

    for size, quick in (("quick", True), ("paper", False)):
        config = load_named_experiment(EXPERIMENTS / f"{name}.yaml", size)
        assert type(experiment_for(config)).__name__ == (
            "NBodyExperiment" if name == "nbody" else "GraphExperiment")
        code = nbody_experiment_config(quick) if name == "nbody" else \
            graph_experiment_config(name, quick)
        options = dict(config.task.options)
        labels = options.pop("models", [m.label for m in config.models])
        assert {k: v for k, v in code.items() if k != "models"} == options
        assert [m[0] for m in code["models"]] == labels
        assert all(m[2] in ("none", "ga", "fa", "canonical", "ps") for m in code["models"])
