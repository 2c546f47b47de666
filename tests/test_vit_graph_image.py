"""Graphs as images and the ViT backbone: exact S_n equivariance of the symmetrised model,
pretrained-weight loading from a local file, and the learning-rate groups."""

from __future__ import annotations

import pytest
import torch

from approxeq.groups import Permutation
from approxeq.nn.vit import (
    VisionTransformer,
    ViTConfig,
    load_vit,
    save_vit,
    vit_param_groups,
)
from approxeq.symmetrize import GroupAveraging, Symmetrized
from approxeq.symmetrize.graph_image import (
    GRAPH_IMAGE_KINDS,
    GraphImageNet,
    graph_image_channels,
    graph_to_image,
    symmetrized_graph_image_model,
)

N, B = 5, 3


def _tiny_vit(channels: int, **overrides) -> VisionTransformer:
    config = ViTConfig(patch_size=2, in_channels=channels, embed_dim=16, depth=2, num_heads=2,
                       mlp_ratio=2.0, grid_size=3)
    return VisionTransformer(config, **overrides)


def _graphs(gen: torch.Generator, edge_channels: int = 0):
    x = torch.randn(B, N, 2, generator=gen, dtype=torch.float64)
    upper = torch.triu(torch.rand(B, N, N, generator=gen) > 0.5, diagonal=1)
    adj = (upper | upper.transpose(1, 2)).to(torch.float64)
    if edge_channels:
        types = torch.randint(edge_channels, (B, N, N), generator=gen)
        types = torch.maximum(types, types.transpose(1, 2))
        adj = torch.nn.functional.one_hot(types, edge_channels).to(torch.float64) * \
            adj.unsqueeze(-1)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, -2:] = False  # a padded graph, its padding last
    return x, adj, mask


def _moved(h, x, adj, mask):
    g = Permutation(N)
    return g.act(h, x, "nodes"), g.act(h, adj, "adjacency"), g.act(h, mask, "mask")


def test_permuting_nodes_permutes_image_rows_and_columns(gen):
    x, adj, mask = _graphs(gen, edge_channels=2)
    image, pixels = graph_to_image(x, adj, mask, patch_size=4)
    assert image.shape == (B, 8, 8, graph_image_channels(2, 2)) and pixels.shape == (B, 8, 8)
    assert not image[:, N:].any() and not image[0, N - 2:].any()   # padding stays zero
    h = Permutation(N).sample(B, generator=gen)
    moved, _ = graph_to_image(*_moved(h, x, adj, mask), patch_size=1)
    unpadded, _ = graph_to_image(x, adj, mask, patch_size=1)
    assert torch.equal(moved, Permutation(N).act(h, unpadded, "adjacency"))


@pytest.mark.parametrize("level", ["node", "edge", "graph"])
def test_whole_group_average_is_exactly_equivariant(level, gen):
    torch.manual_seed(0)
    base = GraphImageNet(_tiny_vit(graph_image_channels(2)), node_channels=2, out_channels=3,
                         level=level).double()
    model = Symmetrized(base, Permutation(N), GroupAveraging(), in_kinds=GRAPH_IMAGE_KINDS,
                        out_kinds=base.out_kind).eval()
    x, adj, mask = _graphs(gen)
    out = model(x, adj, mask).output
    # the base alone sees node order: without symmetrisation the check below would fail
    h = Permutation(N).sample(B, generator=gen)
    assert not torch.allclose(Permutation(N).act(h, base(x, adj, mask), base.out_kind),
                              base(*_moved(h, x, adj, mask)), atol=1e-6)
    moved = model(*_moved(h, x, adj, mask)).output
    torch.testing.assert_close(Permutation(N).act(h, out, base.out_kind), moved,
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("strategy", ["ps", "canonical"])
@pytest.mark.parametrize("level", ["node", "graph"])
def test_transported_samples_give_exact_equivariance(strategy, level, gen):
    """The whole sampled permutation (through its noise) moves with the input."""
    torch.manual_seed(1)
    base = GraphImageNet(_tiny_vit(graph_image_channels(2, 3)), node_channels=2,
                         out_channels=2, edge_channels=3, level=level)
    model = symmetrized_graph_image_model(base, N, strategy, k_eval=4).double().eval()
    x, adj, mask = _graphs(gen, edge_channels=3)
    for _ in range(3):
        h = Permutation(N).sample(B, generator=gen)
        first = model(x, adj, mask, generator=gen)
        second = model(*_moved(h, x, adj, mask), noise=model.transform_noise(h, first.noise))
        torch.testing.assert_close(Permutation(N).act(h, first.output, base.out_kind),
                                   second.output, atol=1e-10, rtol=0)
        # the elements drawn for the moved graph are h times those drawn for the graph (for
        # the unpadded graphs: padding is ranked last in a fixed order whatever h does to it)
        k = first.elements.shape[0]
        drawn = Permutation(N).compose(h.expand(k, -1, -1).reshape(-1, N),
                                       first.elements.reshape(-1, N)).reshape(k, B, N)
        assert torch.equal(drawn[:, 1:], second.elements[:, 1:])


def test_frame_averaging_gives_padded_nodes_zero(gen):
    base = GraphImageNet(_tiny_vit(graph_image_channels(2)), node_channels=2, out_channels=2)
    model = symmetrized_graph_image_model(base, N, "fa", k_eval=2).double().eval()
    x, adj, mask = _graphs(gen)
    out = model(x, adj, mask).output
    assert out.shape == (B, N, 2) and torch.all(out[0, -2:] == 0) and torch.isfinite(out).all()


def test_vit_checkpoint_round_trip(tmp_path, gen):
    torch.manual_seed(2)
    vit = _tiny_vit(3).double().eval()
    path = save_vit(vit, tmp_path / "vit.pt")
    loaded = load_vit(path).double().eval()
    assert set(loaded.pretrained_names) == {n for n, _ in vit.named_parameters()}
    for (name, a), (_, b) in zip(vit.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    image = torch.randn(2, 6, 6, 3, generator=gen, dtype=torch.float64)
    assert torch.equal(vit(image), loaded(image))


def test_pretrained_blocks_with_a_new_patch_embedding(tmp_path, gen):
    torch.manual_seed(3)
    vit = _tiny_vit(1)
    # a plain state dict (as torch.save(timm_model.state_dict()) writes), with a classifier
    state = {**vit.state_dict(), "head.weight": torch.zeros(10, 16)}
    torch.save(state, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="num_heads"):
        load_vit(tmp_path / "plain.pt", in_channels=4)
    graph_vit = load_vit(tmp_path / "plain.pt", in_channels=4, num_heads=2, grid_size=5)
    assert graph_vit.patch_embed.proj.in_channels == 4
    assert not any(n.startswith("patch_embed") for n in graph_vit.pretrained_names)
    for name, value in graph_vit.state_dict().items():
        if name.startswith("blocks.") or name.startswith("norm."):
            assert torch.equal(value, vit.state_dict()[name]), name
    assert graph_vit.pos_embed.shape == (1, 1 + 25, 16)
    assert torch.equal(graph_vit.pos_embed[:, 0], vit.pos_embed[:, 0])
    # the bicubic resampling back to the stored grid is the identity
    assert torch.equal(vit.position_embedding((3, 3)), vit.pos_embed)


def test_param_groups_split_pretrained_from_new(tmp_path):
    vit = _tiny_vit(1)
    save_vit(vit, tmp_path / "v.pt")
    base = GraphImageNet(load_vit(tmp_path / "v.pt", in_channels=graph_image_channels(2)),
                         node_channels=2, out_channels=2)
    groups = vit_param_groups(base, lr=1e-3, pretrained_lr=1e-5)
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in base.parameters())
    new = {id(p) for p in groups[1]["params"]}
    assert id(base.head.weight) in new and id(base.backbone.patch_embed.proj.weight) in new
    scratch = vit_param_groups(GraphImageNet(_tiny_vit(graph_image_channels(2)),
                                             node_channels=2, out_channels=2),
                               lr=1e-3, pretrained_lr=1e-5)
    assert [g["lr"] for g in scratch] == [1e-3]


def test_bad_inputs_name_the_argument():
    vit = _tiny_vit(graph_image_channels(2))
    with pytest.raises(ValueError, match="in_channels = 4"):
        GraphImageNet(_tiny_vit(3), node_channels=2, out_channels=1)
    with pytest.raises(ValueError, match="level"):
        GraphImageNet(vit, node_channels=2, out_channels=1, level="pixel")
    with pytest.raises(ValueError, match="adjacency"):
        graph_to_image(torch.zeros(1, 4, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="patch size"):
        vit(torch.zeros(1, 5, 5, graph_image_channels(2)))


def test_timm_weights_load_unchanged(tmp_path, gen):
    """A randomly initialised timm ViT, saved to a file, gives the same features here."""
    try:
        import timm
    except Exception as err:  # absent, or a torchvision built for another torch
        pytest.skip(f"timm is not importable ({type(err).__name__}); the vision extra is "
                    "optional")
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                               patch_size=8, num_classes=0).eval()
    torch.save(source.state_dict(), tmp_path / "timm.pt")
    vit = load_vit(tmp_path / "timm.pt", num_heads=3).eval()
    image = torch.randn(2, 32, 32, 3, generator=gen)
    torch.testing.assert_close(vit(image), source.forward_features(image.permute(0, 3, 1, 2)))
