"""PATTERN: the seeded SBM generator, the weighted accuracy, and the experiment end to end."""

from __future__ import annotations

import json

import pytest
import torch

from approxeq.data.pattern import (
    PatternConfig,
    make_pattern,
    make_pattern_splits,
    weighted_accuracy,
)
from approxeq.experiments.studies.pattern.study import (
    _vit_config,
    pattern_experiment_config,
    run_pattern_experiment,
)
from approxeq.nn.vit import VisionTransformer, save_vit

SMALL = PatternConfig(n_communities=2, community_min=3, community_max=6, pattern_size=4)


def test_published_parameters_are_the_defaults():
    cfg = PatternConfig()
    assert (cfg.n_communities, cfg.community_min, cfg.community_max) == (5, 5, 35)
    assert (cfg.p, cfg.q, cfg.p_pattern, cfg.q_pattern) == (0.5, 0.35, 0.5, 0.5)
    assert (cfg.pattern_size, cfg.vocab_size) == (20, 3)


def test_generator_is_seeded_and_well_formed():
    a = make_pattern(3, (4, 2), seed=5, config=SMALL)
    b = make_pattern(3, (4, 2), seed=5, config=SMALL)
    c = make_pattern(3, (4, 2), seed=6, config=SMALL)
    assert [len(s) for s in a] == [12, 6]
    assert all(torch.equal(x.adj, y.adj) and torch.equal(x.y, y.y) for x, y in zip(a, b))
    assert not torch.equal(a[0].adj, c[0].adj)
    train = a[0]
    assert torch.equal(train.adj, train.adj.transpose(1, 2))
    assert not train.adj.diagonal(dim1=1, dim2=2).any()
    n = train.mask.sum(-1)
    assert bool(((n >= 2 * 3 + 4) & (n <= 2 * 5 + 4)).all())
    # exactly pattern_size labelled nodes, one-hot features on real nodes only
    assert torch.equal(train.y.sum(-1), torch.full((12,), 4))
    assert torch.equal(train.x.sum(-1), train.mask.float())
    assert not (train.adj.sum(-1)[~train.mask]).any()


def test_pattern_nodes_share_their_pattern_within_a_split_block():
    # graphs of one pattern carry the same pattern subgraph (features and edges), shuffled
    train, = make_pattern(1, (3,), seed=0, config=SMALL)
    blocks = []
    for i in range(3):
        idx = torch.nonzero(train.y[i]).squeeze(-1)
        feats = train.x[i, idx].argmax(-1)
        degree = train.adj[i][idx][:, idx].sum()
        blocks.append((sorted(feats.tolist()), float(degree)))
    assert blocks[0] == blocks[1] == blocks[2]


def test_full_size_split_counts():
    splits = make_pattern_splits(2, (3, 1, 1), seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "val": 2, "test": 2}
    assert splits["train"].n_max == PatternConfig().max_nodes


def test_weighted_accuracy_balances_classes():
    target = torch.tensor([0, 0, 0, 1, 0])
    pred = torch.tensor([0, 0, 0, 0, 1])
    mask = torch.tensor([True, True, True, True, False])
    assert weighted_accuracy(pred, target, mask) == pytest.approx(0.5)  # (1 + 0) / 2
    assert weighted_accuracy(target, target) == 1.0
    with pytest.raises(ValueError, match="pred"):
        weighted_accuracy(pred[:2], target)


def test_pattern_experiment_end_to_end(tmp_path):
    cfg = pattern_experiment_config(True)
    overrides = dict(generator=dict(n_communities=2, community_min=3, community_max=5,
                                    pattern_size=3),
                     n_patterns=2, per_pattern=[4, 2, 2], epochs=1, seeds=2, batch_size=4,
                     k_train=1, k_eval=2, device="cpu",
                     vit=dict(patch_size=4, embed_dim=8, depth=1, num_heads=2, mlp_ratio=1.0),
                     models=[["ViT-ps", "vit", "ps"], ["ViT-pretrained-fa", "vit-pretrained",
                                                       "fa"]])
    merged = {**cfg, **overrides}
    weights = save_vit(VisionTransformer(_vit_config(merged, 11), in_channels=1),
                       tmp_path / "weights.pt")
    metrics = run_pattern_experiment(tmp_path / "run", overrides={**overrides,
                                                                  "pretrained": str(weights)},
                                     log=None)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved) == {"ViT-ps", "ViT-pretrained-fa"}
    for entry in saved.values():
        assert 0.0 <= entry["test_acc"] <= 1.0 and entry["test_acc_se"] >= 0.0
        assert len(entry["test_acc_seeds"]) == 2
    assert saved["ViT-ps"]["test_acc"] == pytest.approx(metrics["ViT-ps"]["test_acc"])
    assert "local checkpoint" in (tmp_path / "run" / "results.md").read_text()


def test_yaml_runs_through_the_registry():
    pytest.importorskip("yaml")
    from approxeq.experiments import experiment_for, load_named_experiment

    for size in ("quick", "paper"):
        config = load_named_experiment("pattern", size)
        assert type(experiment_for(config)).__name__ == "PatternExperiment"
    labels = [m[0] for m in pattern_experiment_config(True)["models"]]
    assert len(labels) == 8 and {"ViT-ps", "ViT-pretrained-ga"} <= set(labels)


def test_digits_pretraining_stand_in(tmp_path):
    pytest.importorskip("sklearn")
    from approxeq.experiments.studies.pattern import digits_pretrained_vit
    from approxeq.nn.vit import ViTConfig, load_vit

    config = ViTConfig(patch_size=4, in_channels=5, embed_dim=8, depth=1, num_heads=2,
                       grid_size=2)
    path = digits_pretrained_vit(config, tmp_path / "digits.pt", epochs=1, lr=1e-3,
                                 max_images=64, log=None)
    again = digits_pretrained_vit(config, path, epochs=1, lr=1e-3, max_images=64,
                                  log=None)  # the same settings: reused
    assert again == path
    vit = load_vit(path, in_channels=5, grid_size=3)
    assert vit.config.in_channels == 5 and "blocks.0.attn.qkv.weight" in vit.pretrained_names
