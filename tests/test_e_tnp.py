"""The E(d)-invariant TNP (distance-based TE attention), exact and approximate."""

from __future__ import annotations

import pytest
import torch

from approxeq.approximate import equivariant_component
from approxeq.groups import Euclidean, Orthogonal
from approxeq.np import build_model
from approxeq.np.models.e_tnp import DistanceMultiHeadAttention, pairwise_distance
from approxeq.testing import (
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_not_equivariant,
    random_task,
)

SMALL = dict(width=16, num_layers=2, num_heads=2)


def small_etnp(dim_x=2, **kw):
    return build_model("e-tnp", dim_x, 1, **{**SMALL, **kw})


def reflections_and_rotations(n, gen):
    """``n`` random E(2) elements, half of them with a reflection (det = −1)."""
    g = Euclidean(2).sample(n, generator=gen, scale=5.0)
    flip = torch.diag(torch.tensor([1.0, -1.0]))
    rot = Euclidean(2).rotation(g)
    det = torch.linalg.det(rot)
    wanted = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    rot = torch.where((det * wanted < 0)[:, None, None], rot @ flip, rot)
    return Euclidean(2).from_parts(rot, Euclidean(2).translation(g))


def test_distance_attention_invariant_to_isometries(float64, gen):
    attn = DistanceMultiHeadAttention(8, 2, 2)
    zq, zk = torch.randn(2, 4, 8, generator=gen), torch.randn(2, 6, 8, generator=gen)
    xq, xk = torch.randn(2, 4, 2, generator=gen), torch.randn(2, 6, 2, generator=gen)
    out = attn(zq, zk, xq, xk)
    group = Euclidean(2)
    for g in reflections_and_rotations(4, gen):
        gb = g.expand(2, 3, 3)
        moved = attn(zq, zk, group.act_points(gb, xq), group.act_points(gb, xk))
        assert torch.allclose(moved, out, atol=1e-12)
    # it does read the locations
    assert (attn(zq, zk, 2 * xq, xk) - out).abs().max() > 1e-6


def test_pairwise_distance_gradient_finite_at_zero(float64, gen):
    x = torch.randn(1, 3, 2, generator=gen, requires_grad=True)
    d = pairwise_distance(x, x)
    assert torch.allclose(d[0, :, :, 0], torch.cdist(x[0], x[0]), atol=1e-12)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dim_x", [2, 3])
def test_e_tnp_invariant_to_rotations_reflections_translations(float64, gen, dim_x):
    model = small_etnp(dim_x)
    assert model.symmetry == Euclidean(dim_x)
    task = random_task(2, 8, 6, dim_x, 1, generator=gen)
    pred = model(*task)
    assert pred.mean.std() > 1e-5  # far above the tolerance below: the test is not vacuous
    elements = reflections_and_rotations(6, gen) if dim_x == 2 else None
    assert_equivariant(model, Euclidean(dim_x), task, elements=elements, atol=1e-10)


def test_te_tnp_is_not_rotation_invariant(float64, gen):
    """The distance is what makes E-TNP invariant: the TE-TNP, which reads differences, is not."""
    model = build_model("te-tnp", 2, 1, **SMALL)
    # random initial weights read locations weakly; 1e-5 is still far above rounding (1e-10)
    assert_not_equivariant(model, Orthogonal(2), random_task(2, 8, 6, 2, 1, generator=gen),
                           margin=1e-5)


def test_approximate_e_tnp_invariant_only_in_component(float64, gen):
    model = small_etnp(approximate=True)
    task = random_task(2, 8, 6, 2, 1, generator=gen, scale=1.5)
    elements = reflections_and_rotations(6, gen)
    with equivariant_component(model):
        assert_equivariant(model, Euclidean(2), task, elements=elements, atol=1e-10)
    # rotations about the origin keep the points inside the fixed input's domain
    assert_not_equivariant(model, Orthogonal(2), task, margin=1e-5)
    assert model.approximate


def test_aux_fields_break_invariance_only_outside_component(float64, gen):
    model = small_etnp(dim_aux=2)
    xc, yc, xt = random_task(2, 8, 6, 2, 1, generator=gen)
    aux = {"aux_c": torch.cos(xc), "aux_t": torch.cos(xt)}
    with equivariant_component(model):
        assert_equivariant(model, Euclidean(2), (xc, yc, xt), atol=1e-10, model_kwargs=aux)
        plain = model(xc, yc, xt, **aux).mean
    assert (model(xc, yc, xt, **aux).mean - plain).abs().max() > 1e-6


def test_e_tnp_context_permutation_invariant(float64, gen):
    assert_context_permutation_invariant(small_etnp(), random_task(2, 8, 6, 2, 1, generator=gen))


@pytest.mark.parametrize("approximate", [False, True])
def test_e_tnp_gradients_and_empty_context(gen, approximate):
    opts = dict(approximate=True, fixed_input_dropout=0.0) if approximate else {}
    model = small_etnp(**opts)
    xc, yc, xt = random_task(2, 8, 6, 2, 1, generator=gen, scale=1.5)
    yt = torch.randn(2, 6, 1, generator=gen)
    model(xc, yc, xt).log_prob(yt).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    pred = model(xc[:, :0], yc[:, :0], xt)
    assert pred.mean.shape == (2, 6, 1) and torch.isfinite(pred.log_prob(yt)).all()


def test_e_tnp_rejects_bad_input_and_options():
    model = small_etnp()
    with pytest.raises(ValueError, match="xc"):
        model(torch.zeros(1, 3, 3), torch.zeros(1, 3, 1), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="unknown option"):
        build_model("e-tnp", 2, 1, group="D4")
