"""The blocked (online-softmax) path of the TE and E attentions against the whole path."""

from __future__ import annotations

import math

import pytest
import torch

import approxeq.nn.blocked_attention as blocked
from approxeq.nn import TEMultiHeadAttention
from approxeq.nn.attention import dot_product_attention, masked_attention
from approxeq.np import build_model
from approxeq.np.models.e_tnp import DistanceMultiHeadAttention

KINDS = {"te": TEMultiHeadAttention, "e": DistanceMultiHeadAttention}


def _inputs(gen, b, nq, nk, dim=8, dim_x=2):
    return [t.requires_grad_(True) for t in (
        torch.randn(b, nq, dim, generator=gen), torch.randn(b, nk, dim, generator=gen),
        3 * torch.randn(b, nq, dim_x, generator=gen), 3 * torch.randn(b, nk, dim_x, generator=gen))]


def _value_and_grads(attn, inputs, mask):
    out = attn(*inputs, mask)
    wrt = [*inputs, *attn.parameters()]
    if not out.requires_grad:  # no keys: zero, whatever the inputs
        return out, [torch.zeros_like(w) for w in wrt]
    grads = torch.autograd.grad(out.sin().sum(), wrt, allow_unused=True)
    return out, [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]


def _assert_blocked_equals_whole(attn, inputs, mask, tiles):
    attn.key_block, attn.chunk_size = None, None
    b, nq, nk = inputs[0].shape[0], inputs[0].shape[1], inputs[1].shape[1]
    assert attn.plan_tiles(b, nq, nk, torch.float64) is None
    whole, g_whole = _value_and_grads(attn, inputs, mask)
    attn.chunk_size, attn.key_block = tiles
    blocked_out, g_blocked = _value_and_grads(attn, inputs, mask)
    torch.testing.assert_close(blocked_out, whole, rtol=0, atol=1e-10)
    for a, r in zip(g_blocked, g_whole):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("tiles", [(3, 2), (1, 1), (7, 6), (2, 4)])
def test_blocked_equals_whole_values_and_gradients(float64, gen, kind, masked, tiles):
    attn = KINDS[kind](8, 2, 2)
    inputs = _inputs(gen, 3, 7, 6)
    mask = (torch.rand(3, 6, generator=gen) > 0.3) if masked else None
    if mask is not None:
        mask[0] = False  # a task without any valid key
        mask[1, :4] = False  # whole key blocks masked out
    _assert_blocked_equals_whole(attn, inputs, mask, tiles)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("nq,nk", [(1, 1), (1, 5), (5, 1), (4, 0), (0, 3)])
def test_single_point_and_empty_sets(float64, gen, kind, nq, nk):
    attn = KINDS[kind](8, 2, 2)
    inputs = _inputs(gen, 2, nq, nk)
    _assert_blocked_equals_whole(attn, inputs, None, (2, 2))
    if nk == 0:
        assert torch.equal(attn(*inputs), torch.zeros(2, nq, 8))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_blocked_gradcheck(float64, gen, kind):
    attn = KINDS[kind](4, 2, 2, logit_hidden=5, key_block=2, chunk_size=2)
    inputs = _inputs(gen, 2, 3, 5, dim=4)
    mask = torch.tensor([[True, False, True, True, False], [False, False, True, False, True]])
    assert torch.autograd.gradcheck(lambda *t: attn(*t, mask), inputs)
    # the logit MLP's parameters, which reach the kernel as extra inputs
    names = [n for n, _ in attn.named_parameters() if n.startswith("logit_mlp.")]
    values = [p.detach().clone().requires_grad_(True) for n, p in attn.named_parameters()
              if n in names]
    fixed = [t.detach() for t in inputs]

    def of_params(*p):
        return torch.func.functional_call(attn, dict(zip(names, p)), (*fixed, mask))

    assert torch.autograd.gradcheck(of_params, values)


def test_the_blocked_path_is_taken_tile_by_tile(float64, gen, monkeypatch):
    calls = []
    tile_logits = blocked._tile_logits

    def counting(pair_logits, q, k, *rest):
        calls.append((q.shape[2], k.shape[2]))
        return tile_logits(pair_logits, q, k, *rest)

    monkeypatch.setattr(blocked, "_tile_logits", counting)
    attn = TEMultiHeadAttention(8, 2, 1)
    inputs = _inputs(gen, 1, 9, 5, dim_x=1)
    attn(*inputs)
    assert calls == []  # small inputs: the whole path
    calls.clear()
    attn.memory_budget_mb = 6 * attn.tile_bytes_per_pair(8) / 2**20  # six pairs per tile
    assert attn.plan_tiles(1, 9, 5, torch.float64) == (1, 5)
    out = attn(*inputs)
    assert calls == [(1, 5)] * 9
    calls.clear()
    out.sum().backward()
    assert calls == [(1, 5)] * 9  # recomputed tile by tile in the backward pass


def test_default_budget_blocks_large_sets_and_bounds_the_tile():
    attn = TEMultiHeadAttention(128, 8, 2)
    # the benchmark's training sizes (1-D and 2-D tasks) keep the whole path, the faster there
    assert attn.plan_tiles(16, 128, 64, torch.float32) is None
    assert attn.plan_tiles(16, 256, 128, torch.float32) is None
    for n in (4096, 7500, 30000):
        cq, kb = attn.plan_tiles(4, n, n, torch.float32)
        assert 4 * cq * kb * attn.tile_bytes_per_pair(4) <= attn.memory_budget_mb * 2**20
        assert kb >= min(n, 256)


def test_kernel_matches_softmax_attention_directly(float64, gen):
    h, b, nq, nk, d = 2, 2, 5, 7, 3
    q, k = torch.randn(h, b, nq, d, generator=gen), torch.randn(h, b, nk, d, generator=gen)
    v = torch.randn(b, h, nk, 4, generator=gen)
    fq, fk = torch.randn(b, nq, 1, generator=gen), torch.randn(b, nk, 1, generator=gen)
    mask = torch.rand(b, nk, generator=gen) > 0.4

    def pair_logits(dots, a, c):
        return (dots + torch.tanh(a[:, None, :, :] - c[:, :, None, :]).movedim(-1, 0)
                .transpose(-1, -2)).permute(1, 2, 3, 0)

    dots = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    reference = masked_attention(pair_logits(dots, fq, fk).permute(0, 3, 1, 2), v, mask)
    out = blocked.blocked_pair_attention(q, k, v, fq, fk, mask, pair_logits, query_chunk=2,
                                         key_block=3)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="key_block"):
        blocked.blocked_pair_attention(q, k, v, fq, fk, mask, pair_logits, query_chunk=2,
                                       key_block=0)


@pytest.mark.parametrize("name", ["te-tnp", "e-tnp", "te-pt-tnp"])
def test_models_are_unchanged_on_the_blocked_path(float64, gen, name):
    model = build_model(name, 2, 1, width=8, num_layers=2, num_heads=2).eval()
    xc, yc = torch.randn(2, 6, 2, generator=gen), torch.randn(2, 6, 1, generator=gen)
    xt = torch.randn(2, 5, 2, generator=gen)
    whole = model(xc, yc, xt).mean
    attentions = [m for m in model.modules() if isinstance(m, TEMultiHeadAttention)]
    for m in attentions:
        m.key_block, m.chunk_size = 2, 3
    torch.testing.assert_close(model(xc, yc, xt).mean, whole, rtol=0, atol=1e-10)


@pytest.mark.parametrize("nq,nk", [(5, 6), (1, 1), (3, 0), (0, 4)])
def test_fused_dot_product_attention_equals_masked_attention(float64, gen, nq, nk):
    q = torch.randn(2, 2, nq, 4, generator=gen, requires_grad=True)
    k = torch.randn(2, 2, nk, 4, generator=gen, requires_grad=True)
    v = torch.randn(2, 2, nk, 3, generator=gen, requires_grad=True)
    for mask in (None, torch.rand(2, nk, generator=gen) > 0.4):
        if mask is not None and nk:
            mask[0] = False  # no valid key: zero, no NaN
        fused = dot_product_attention(q, k, v, mask)
        plain = masked_attention((q @ k.transpose(-1, -2)) / 2, v, mask)
        torch.testing.assert_close(fused, plain, rtol=0, atol=1e-12)
        if fused.requires_grad and fused.numel():
            for a, r in zip(torch.autograd.grad(fused.sin().sum(), [q, k, v]),
                            torch.autograd.grad(plain.sin().sum(), [q, k, v])):
                assert torch.isfinite(a).all()
                torch.testing.assert_close(a, r, rtol=0, atol=1e-12)
