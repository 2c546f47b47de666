"""The TE attention's split-first-layer kernel against the plain pairwise MLP it replaces."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from approxeq.nn import TEMultiHeadAttention
from approxeq.nn.attention import check_key_mask, masked_attention


def reference_te_attention(attn: TEMultiHeadAttention, zq, zk, xq, xk, key_mask=None):
    """The kernel as it was: the logit MLP on the concatenated ``[dots, x_n − x_m]`` of every
    pair, built whole (no chunks)."""
    b, nk = zq.shape[0], zk.shape[1]
    key_mask = check_key_mask(key_mask, b, nk)
    q = attn.split_heads(attn.to_q(zq))
    k = attn.split_heads(attn.to_k(zk))
    v = attn.split_heads(attn.to_v(zk))
    dots = ((q @ k.transpose(-1, -2)) / math.sqrt(attn.dim_head)).permute(0, 2, 3, 1)
    diff = xq[:, :, None, :] - xk[:, None, :, :]
    logits = attn.logit_mlp(torch.cat([dots, diff], dim=-1))
    return attn.output(masked_attention(logits.permute(0, 3, 1, 2), v, key_mask), key_mask, nk)


def _inputs(gen, b, nq, nk, dim, dim_x):
    return (torch.randn(b, nq, dim, generator=gen), torch.randn(b, nk, dim, generator=gen),
            3 * torch.randn(b, nq, dim_x, generator=gen),
            3 * torch.randn(b, nk, dim_x, generator=gen))


CASES = [
    # dim, heads, dim_x, logit_layers, activation, chunk_size, masked
    (8, 2, 1, 2, "relu", None, False),
    (8, 2, 2, 2, "relu", 3, True),
    (12, 3, 3, 1, "gelu", 1, True),
    (8, 4, 2, 0, "relu", None, True),
    (16, 4, 1, 3, "tanh", 5, False),
    (8, 1, 2, 2, "silu", 2, True),
]


@pytest.mark.parametrize("dim,heads,dim_x,layers,activation,chunk,masked", CASES)
def test_split_kernel_equals_the_plain_mlp(float64, gen, dim, heads, dim_x, layers, activation,
                                           chunk, masked):
    attn = TEMultiHeadAttention(dim, heads, dim_x, logit_layers=layers, activation=activation,
                                chunk_size=chunk)
    assert attn._splits_first_layer()
    zq, zk, xq, xk = _inputs(gen, 3, 7, 6, dim, dim_x)
    mask = (torch.rand(3, 6, generator=gen) > 0.3) if masked else None
    if mask is not None:
        mask[0] = False  # a task without any valid key
    zq.requires_grad_(True)
    xq.requires_grad_(True)
    new = attn(zq, zk, xq, xk, mask)
    ref = reference_te_attention(attn, zq, zk, xq, xk, mask)
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-12)
    params = list(attn.parameters())
    g_new = torch.autograd.grad(new.sin().sum(), [zq, xq, *params])
    g_ref = torch.autograd.grad(ref.sin().sum(), [zq, xq, *params])
    for (name, _), a, r in zip([("zq", 0), ("xq", 0), *attn.named_parameters()], g_new, g_ref):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-11, msg=name)


def test_split_kernel_is_invariant_to_random_shifts(float64, gen):
    attn = TEMultiHeadAttention(8, 2, 2, chunk_size=3)
    zq, zk, xq, xk = _inputs(gen, 2, 9, 5, 8, 2)
    for _ in range(3):
        shift = 10 * torch.randn(2, 1, 2, generator=gen)
        torch.testing.assert_close(attn(zq, zk, xq + shift, xk + shift), attn(zq, zk, xq, xk),
                                   rtol=0, atol=1e-10)


def test_old_state_dicts_load_strictly_and_give_the_same_outputs(float64, gen):
    torch.manual_seed(0)
    old = TEMultiHeadAttention(8, 2, 1)
    keys = set(old.state_dict())
    assert keys == {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight", "to_out.bias",
                    "logit_mlp.net.0.weight", "logit_mlp.net.0.bias", "logit_mlp.net.2.weight",
                    "logit_mlp.net.2.bias", "logit_mlp.net.4.weight", "logit_mlp.net.4.bias"}
    fresh = TEMultiHeadAttention(8, 2, 1)
    fresh.load_state_dict(old.state_dict(), strict=True)
    zq, zk, xq, xk = _inputs(gen, 2, 5, 4, 8, 1)
    torch.testing.assert_close(fresh(zq, zk, xq, xk), reference_te_attention(old, zq, zk, xq, xk),
                               rtol=0, atol=1e-12)


def test_other_logit_mlps_and_subclasses_keep_the_plain_path(float64, gen):
    # a layer that mixes channels is not element-wise: the split layout would change it
    attn = TEMultiHeadAttention(8, 2, 1, activation=lambda: nn.Softmax(dim=-1))
    assert not attn._splits_first_layer()
    zq, zk, xq, xk = _inputs(gen, 2, 5, 4, 8, 1)
    torch.testing.assert_close(attn(zq, zk, xq, xk), reference_te_attention(attn, zq, zk, xq, xk),
                               rtol=0, atol=1e-12)
    from approxeq.np.models.e_tnp import DistanceMultiHeadAttention

    assert not DistanceMultiHeadAttention(8, 2, 2)._splits_first_layer()
    plain = TEMultiHeadAttention(8, 2, 1)
    plain.split_first_layer = False
    assert not plain._splits_first_layer()


def test_split_kernel_in_float32_stays_close(gen):
    attn = TEMultiHeadAttention(16, 4, 2, chunk_size=4)
    zq, zk, xq, xk = _inputs(gen, 2, 11, 9, 16, 2)
    torch.testing.assert_close(attn(zq, zk, xq, xk), reference_te_attention(attn, zq, zk, xq, xk),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["te-tnp", "te-pt-tnp"])
def test_split_first_layer_option_reaches_every_attention_and_keeps_the_function(float64, name):
    from approxeq.np import build_model

    options = dict(width=8, num_layers=1, num_heads=2)
    split = build_model(name, 1, 1, **options)
    plain = build_model(name, 1, 1, split_first_layer=False, **options)
    plain.load_state_dict(split.state_dict(), strict=True)
    attentions = [m for m in plain.modules() if isinstance(m, TEMultiHeadAttention)]
    assert attentions and not any(m._splits_first_layer() for m in attentions)
    assert all(m._splits_first_layer() for m in split.modules()
               if isinstance(m, TEMultiHeadAttention))
    torch.manual_seed(0)
    xc, yc, xt = torch.randn(2, 7, 1), torch.randn(2, 7, 1), torch.randn(2, 5, 1)
    a, b = split.eval()(xc, yc, xt), plain.eval()(xc, yc, xt)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.stddev, b.stddev, rtol=0, atol=1e-12)


def test_split_first_layer_must_be_a_bool():
    with pytest.raises(ValueError, match="split_first_layer: expected True or False, got 'no'"):
        TEMultiHeadAttention(8, 2, 1, split_first_layer="no")
