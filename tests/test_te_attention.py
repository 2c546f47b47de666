"""MLP, multi-head attention and translation-equivariant attention building blocks."""

from __future__ import annotations

import pytest
import torch

from approxeq.nn import (
    MLP,
    CrossAttentionLayer,
    MultiHeadAttention,
    SelfAttentionLayer,
    TECrossAttentionLayer,
    TEMultiHeadAttention,
    TESelfAttentionLayer,
)


def tokens(b, n, dim, dim_x, gen):
    return torch.randn(b, n, dim, generator=gen), torch.randn(b, n, dim_x, generator=gen) * 3


def test_mlp_shapes_and_depth():
    mlp = MLP(3, 5, hidden=7, num_layers=3)
    assert mlp(torch.randn(2, 4, 3)).shape == (2, 4, 5)
    assert sum(isinstance(m, torch.nn.Linear) for m in mlp.modules()) == 4
    assert sum(isinstance(m, torch.nn.Linear) for m in MLP(3, 5, num_layers=0).modules()) == 1
    with pytest.raises(ValueError, match="x"):
        mlp(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="activation"):
        MLP(3, 5, activation="nope")


@pytest.mark.parametrize("chunk_size", [1, 3, 7])
def test_chunked_te_attention_equals_unchunked(float64, gen, chunk_size):
    attn = TEMultiHeadAttention(8, 2, dim_x=2, chunk_size=None)
    (zq, xq), (zk, xk) = tokens(2, 10, 8, 2, gen), tokens(2, 6, 8, 2, gen)
    mask = torch.rand(2, 6, generator=gen) > 0.3
    zq.requires_grad_(True)
    full = attn(zq, zk, xq, xk, mask)
    grad_full = torch.autograd.grad(full.square().sum(), [zq, *attn.parameters()])
    attn.chunk_size = chunk_size
    assert attn.resolve_chunk_size(2, 10, 6, zq.dtype) == chunk_size
    chunked = attn(zq, zk, xq, xk, mask)
    grad_chunked = torch.autograd.grad(chunked.square().sum(), [zq, *attn.parameters()])
    assert torch.equal(full, chunked)
    for a, b in zip(grad_full, grad_chunked):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_automatic_chunk_size_respects_memory_budget(float64, gen):
    attn = TEMultiHeadAttention(128, 8, dim_x=2, memory_budget_mb=64)
    chunk = attn.resolve_chunk_size(1, 4096, 4096, torch.float32)
    assert 1 <= chunk < 4096
    assert chunk * 4096 * attn.bytes_per_pair(4) <= 64 * 2**20
    # a tiny budget forces the blocked path with many tiles; the result must not change
    small = TEMultiHeadAttention(8, 2, dim_x=1)
    (zq, xq), (zk, xk) = tokens(1, 9, 8, 1, gen), tokens(1, 5, 8, 1, gen)
    reference = small(zq, zk, xq, xk)
    assert small.plan_tiles(1, 9, 5, zq.dtype) is None  # small inputs: the whole path
    # room for two queries' pairs: five query chunks of the whole path
    small.memory_budget_mb = 2 * 5 * small.bytes_per_pair(8) / 2**20
    assert small.resolve_chunk_size(1, 9, 5, zq.dtype) == 2
    # room for six pairs of a tile: tiles of one query by all five keys
    small.memory_budget_mb = 6 * small.tile_bytes_per_pair(8) / 2**20
    assert small.plan_tiles(1, 9, 5, zq.dtype) == (1, 5)
    torch.testing.assert_close(small(zq, zk, xq, xk), reference, rtol=0, atol=1e-12)


def test_attention_that_cannot_fit_names_the_option(float64, gen):
    attn = TEMultiHeadAttention(8, 2, dim_x=1, memory_budget_mb=1e-4)
    (zq, xq), (zk, xk) = tokens(1, 3, 8, 1, gen), tokens(1, 5, 8, 1, gen)
    with pytest.raises(MemoryError, match="memory_budget_mb"):
        attn(zq, zk, xq, xk)
    attn.chunk_size = 1  # an explicit chunk size bypasses the budget
    assert attn(zq, zk, xq, xk).shape == (1, 3, 8)


@pytest.mark.parametrize("dim_x", [1, 2])
def test_te_attention_invariant_to_shifts(float64, gen, dim_x):
    layer = TECrossAttentionLayer(8, 4, dim_x)
    (zq, xq), (zk, xk) = tokens(3, 7, 8, dim_x, gen), tokens(3, 5, 8, dim_x, gen)
    out = layer(zq, zk, xq, xk)
    for _ in range(4):
        shift = (torch.rand(3, 1, dim_x, generator=gen) * 2 - 1) * 50
        torch.testing.assert_close(layer(zq, zk, xq + shift, xk + shift), out, rtol=1e-9, atol=1e-9)
    assert (layer(zq, zk, xq + 1.0, xk) - out).abs().max() > 1e-4  # relative positions matter


def test_te_self_attention_permutation_equivariant(float64, gen):
    layer = TESelfAttentionLayer(8, 2, 2)
    z, x = tokens(2, 6, 8, 2, gen)
    perm = torch.randperm(6, generator=gen)
    torch.testing.assert_close(layer(z[:, perm], x[:, perm]), layer(z, x)[:, perm])


@pytest.mark.parametrize("kind", ["plain", "te"])
def test_empty_and_fully_masked_keys_give_zero_attention(float64, gen, kind):
    attn = MultiHeadAttention(8, 2) if kind == "plain" else TEMultiHeadAttention(8, 2, dim_x=1)
    (zq, xq), (zk, xk) = tokens(2, 4, 8, 1, gen), tokens(2, 3, 8, 1, gen)
    call = (lambda zk_, xk_, m=None: attn(zq, zk_, m)) if kind == "plain" else \
        (lambda zk_, xk_, m=None: attn(zq, zk_, xq, xk_, m))
    assert torch.equal(call(zk[:, :0], xk[:, :0]), torch.zeros_like(zq))
    mask = torch.tensor([[False, False, False], [True, False, True]])
    out = call(zk, xk, mask)
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros_like(out[0]))
    assert out[1].abs().max() > 0
    # masked keys have no influence
    zk2 = zk.clone()
    zk2[1, 1] += 100.0
    torch.testing.assert_close(call(zk2, xk, mask), out, rtol=0, atol=1e-12)


def test_transformer_layers_handle_empty_sets(gen):
    z = torch.randn(2, 5, 8, generator=gen)
    cross, self_layer = CrossAttentionLayer(8, 2), SelfAttentionLayer(8, 2)
    out = cross(z, z[:, :0])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, z + cross.feedforward(cross.norm_ff(z)))
    assert self_layer(z[:, :0]).shape == (2, 0, 8)


def test_attention_input_validation(gen):
    attn = TEMultiHeadAttention(8, 2, dim_x=2)
    (zq, xq), (zk, xk) = tokens(2, 4, 8, 2, gen), tokens(2, 3, 8, 2, gen)
    with pytest.raises(ValueError, match="zq/xq"):
        attn(zq, zk, xq[..., :1], xk)
    with pytest.raises(ValueError, match="zk"):
        attn(zq, zk[:1], xq, xk[:1])
    with pytest.raises(ValueError, match="key_mask"):
        attn(zq, zk, xq, xk, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask"):
        attn(zq, zk, xq, xk, torch.ones(2, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        attn.chunk_size = 0
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(10, 4)
