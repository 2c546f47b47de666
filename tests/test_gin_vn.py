"""GIN is S_n-equivariant; vector-neuron layers are O(3)-equivariant (and S_n where stated)."""

from __future__ import annotations

import pytest
import torch

from approxeq.groups import O, Permutation
from approxeq.nn import GIN, VNInvariant, VNLeakyReLU, VNLinear, VNMaxPool, VNNetwork, vn_mean_pool


def _graph(b=3, n=6, c=2):
    h = torch.randn(b, n, c)
    a = torch.triu((torch.rand(b, n, n) < 0.5).double(), 1)
    return h, a + a.transpose(1, 2)


def _rotate(r, v):
    """Rotate vector features ``[b, ..., d]`` by ``r`` ``[b, d, d]``."""
    return torch.einsum("bij,b...j->b...i", r, v)


@pytest.mark.parametrize("virtual_node", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_gin_is_permutation_equivariant(virtual_node, train, float64, gen):
    gin = GIN(2, 3, hidden=16, num_layers=3, virtual_node=virtual_node, batch_norm=True)
    gin.train(train)
    h, a = _graph()
    group = Permutation(6)
    g = group.sample(3, generator=gen)
    out = gin(group.act_nodes(g, h), group.act_adjacency(g, a))
    assert out.shape == (3, 6, 3)
    assert torch.allclose(out, group.act_nodes(g, gin(h, a)), atol=1e-10)


def test_gin_depends_on_structure_and_ignores_padding(float64):
    gin = GIN(2, 3, hidden=16, virtual_node=True).eval()
    h, a = _graph(b=1)
    assert not torch.allclose(gin(h, a), gin(h, torch.zeros_like(a)))
    # padding two extra nodes (with junk features and edges) changes nothing on the real nodes
    h_pad = torch.cat([h, torch.randn(1, 2, 2)], 1)
    a_pad = torch.nn.functional.pad(a, (0, 2, 0, 2), value=1.0)
    mask = torch.tensor([[True] * 6 + [False] * 2])
    out = gin(h_pad, a_pad * mask.unsqueeze(-1) * mask.unsqueeze(-2), mask)
    assert torch.allclose(out[:, :6], gin(h, a), atol=1e-10)
    assert torch.equal(out[:, 6:], torch.zeros(1, 2, 3))


def test_gin_rejects_bad_shapes():
    gin = GIN(2, 1)
    with pytest.raises(ValueError, match="adjacency must have shape"):
        gin(torch.zeros(1, 4, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"h must have shape \[b, n, 2\]"):
        gin(torch.zeros(1, 4, 3), torch.zeros(1, 4, 4))


@pytest.mark.parametrize("layer", [VNLinear(4, 5), VNLeakyReLU(4), VNLeakyReLU(4, 0.0, True)],
                         ids=["linear", "leaky_relu", "relu_shared"])
def test_vn_layers_are_rotation_equivariant(layer, float64, gen):
    layer = layer.double()
    x = torch.randn(3, 7, 4, 3)
    r = O(3).sample(3, generator=gen)
    assert torch.allclose(layer(_rotate(r, x)), _rotate(r, layer(x)), atol=1e-10)


def test_vn_nonlinearity_is_not_linear(float64):
    layer = VNLeakyReLU(4).double()
    x, y = torch.randn(2, 2, 7, 4, 3)
    assert not torch.allclose(layer(x + y), layer(x) + layer(y))


def test_vn_invariant_and_pooling(float64, gen):
    x = torch.randn(3, 7, 4, 3)
    r = O(3).sample(3, generator=gen)
    inv = VNInvariant(4).double()
    assert inv(x).shape == (3, 7, 12)
    assert torch.allclose(inv(_rotate(r, x)), inv(x), atol=1e-10)
    pool = VNMaxPool(4).double()
    assert torch.allclose(pool(_rotate(r, x)), _rotate(r, pool(x)), atol=1e-10)
    assert torch.allclose(vn_mean_pool(_rotate(r, x)), _rotate(r, vn_mean_pool(x)), atol=1e-10)
    p = Permutation(7).sample(3, generator=gen)
    assert torch.allclose(pool(Permutation(7).act_nodes(p, x)), pool(x))


def test_vn_network_symmetries(float64, gen):
    net = VNNetwork(2, in_scalars=1, hidden=8, out_scalars=2, out_vectors=3).double()
    v, s = torch.randn(3, 5, 2, 3), torch.randn(3, 5, 1)
    scalars, vectors = net(v, s)
    assert scalars.shape == (3, 5, 2) and vectors.shape == (3, 3, 3)
    r = O(3).sample(3, generator=gen)
    scalars_r, vectors_r = net(_rotate(r, v), s)
    assert torch.allclose(scalars_r, scalars, atol=1e-10)
    assert torch.allclose(vectors_r, _rotate(r, vectors), atol=1e-10)
    group = Permutation(5)
    p = group.sample(3, generator=gen)
    scalars_p, vectors_p = net(group.act_nodes(p, v), group.act_nodes(p, s))
    assert torch.allclose(scalars_p, group.act_nodes(p, scalars), atol=1e-10)
    assert torch.allclose(vectors_p, vectors, atol=1e-10)


def test_vn_network_rejects_bad_shapes():
    net = VNNetwork(2, in_scalars=1)
    with pytest.raises(ValueError, match="vectors must have shape"):
        net(torch.zeros(1, 5, 3, 3), torch.zeros(1, 5, 1))
    with pytest.raises(ValueError, match="scalars must have shape"):
        net(torch.zeros(1, 5, 2, 3), None)
