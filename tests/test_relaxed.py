"""Relaxed convolutions and the relaxed ConvCNP."""

from __future__ import annotations

import pytest
import torch

from approxeq.approximate import RelaxedCNN, RelaxedConvBlock, equivariant_component, is_approximate
from approxeq.groups import Translation
from approxeq.nn import grid_points
from approxeq.np import build_model
from approxeq.testing import (
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_not_equivariant,
    random_task,
)

SMALL = dict(points_per_unit=16, channels=8, num_layers=2)


def relaxed_convcnp(dim_x, dim_y=1, **kw):
    return build_model("relaxed-convcnp", dim_x, dim_y, **{**SMALL, **kw})


def grid_coords(dim, n=16, lo=-4.0, hi=4.0):
    return grid_points([torch.linspace(lo, hi, n)] * dim)


@pytest.mark.parametrize("dim", [1, 2])
def test_relaxed_weights_zero_outside_domain(dim):
    block = RelaxedConvBlock(dim, 2, 3, 3, num_basis=4, domain=(-1.0, 1.0)).eval()
    coords = grid_coords(dim)
    w = block.weights(coords, 1)
    assert w.shape == (1, *coords.shape[:-1], 4)
    inside = ((coords > -1) & (coords < 1)).all(-1)
    assert torch.equal(w[0][~inside], torch.zeros_like(w[0][~inside]))
    assert (w[0][inside].abs() > 0).any()


@pytest.mark.parametrize("dim", [1, 2])
def test_relaxed_block_is_mean_of_convolutions_when_zeroed(float64, dim):
    block = RelaxedConvBlock(dim, 2, 3, 3, num_basis=4, domain=(-5.0, 5.0)).eval()
    h = torch.randn(2, 2, *([16] * dim))
    coords = grid_coords(dim)
    banks = block.conv(torch.relu(h)).reshape(2, 4, 3, *([16] * dim))
    with equivariant_component(block):
        assert torch.allclose(block(h, coords), banks.mean(1), atol=1e-12)
    w = block.weights(coords, 2).movedim(-1, 1).unsqueeze(2)
    assert torch.allclose(block(h, coords), (banks * (1 + w)).mean(1), atol=1e-12)
    assert not torch.allclose(block(h, coords), banks.mean(1), atol=1e-6)


def test_relaxed_block_dropout_per_task_all_or_nothing(float64):
    block = RelaxedConvBlock(1, 2, 3, 3, num_basis=3, domain=(-5.0, 5.0), p=0.5)
    h = torch.randn(1, 2, 16).expand(32, -1, -1)
    coords = grid_coords(1)
    full = block.eval()(h, coords)
    with equivariant_component(block):
        comp = block(h, coords)
    mixed = block.train()(h, coords)
    is_full = (mixed - full).flatten(1).abs().amax(1) < 1e-12
    is_comp = (mixed - comp).flatten(1).abs().amax(1) < 1e-12
    assert (is_full | is_comp).all() and is_full.any() and is_comp.any()


def test_relaxed_block_validation():
    block = RelaxedConvBlock(1, 2, 3, 3)
    h = torch.randn(2, 2, 16)
    with pytest.raises(ValueError, match="coords"):
        block(h)
    with pytest.raises(ValueError, match="coords"):
        block(h, grid_coords(1, n=15))
    with pytest.raises(ValueError, match="keep"):
        block(h, grid_coords(1), keep=torch.ones(3, 1, 1))
    with pytest.raises(ValueError, match="num_basis"):
        RelaxedConvBlock(1, 2, 3, 3, num_basis=0)


@pytest.mark.parametrize("kind", ["conv", "unet"])
def test_relaxed_cnn_shapes(kind):
    net = RelaxedCNN(kind, 2, 3, 5, num_layers=2, kernel_size=3)
    z = torch.randn(2, 8, 8, 3)
    assert net(z, grid_coords(2, n=8)).shape == (2, 8, 8, 5)


# ----------------------------------------------------------------------------- relaxed ConvCNP

@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("dim_y", [1, 2])
@pytest.mark.parametrize("nc", [0, 6])
def test_relaxed_convcnp_distribution_and_gradients(dim_x, dim_y, nc):
    model = relaxed_convcnp(dim_x, dim_y, cnn="unet" if dim_y == 2 else "conv").eval()
    xc, yc, xt = random_task(2, nc, 5, dim_x, dim_y, scale=1.5)
    pred = model(xc, yc, xt)
    assert pred.batch_shape == (2, 5, dim_y)
    loss = -pred.log_prob(torch.randn(2, 5, dim_y)).mean()
    assert torch.isfinite(loss)
    loss.backward()
    relaxed = [p for n, p in model.named_parameters() if "relaxed_weights" in n]
    assert relaxed and all(p.grad is not None and torch.isfinite(p.grad).all() for p in relaxed)
    assert sum(float(p.grad.abs().sum()) for p in relaxed) > 0


@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("cnn", ["conv", "unet"])
def test_relaxed_convcnp_equivariant_only_inside_component(float64, dim_x, cnn):
    model = relaxed_convcnp(dim_x, cnn=cnn)
    assert is_approximate(model) and model.symmetry == Translation(dim_x, spacing=1 / 16)
    task = random_task(2, 8, 6, dim_x, scale=1.5)  # inside the relaxed weights' domain (-2, 2)
    with equivariant_component(model):
        assert_equivariant(model, model.symmetry, task, atol=1e-8)
    assert_not_equivariant(model, model.symmetry, task, margin=1e-4)


def test_relaxed_convcnp_context_order_invariant(float64):
    assert_context_permutation_invariant(relaxed_convcnp(1), random_task(2, 9, 4, 1))


def test_relaxed_convcnp_dropout_shared_by_all_layers(float64):
    # A per-layer mask would mix full and zeroed layers within a task, matching neither.
    model = relaxed_convcnp(1, num_layers=3)
    xc, yc, xt = random_task(1, 6, 5, 1, scale=1.5)
    task = tuple(t.expand(16, -1, -1) for t in (xc, yc, xt))
    full = model.eval()(*task).mean
    with equivariant_component(model):
        comp = model(*task).mean
    mixed = model.train()(*task).mean
    is_full = (mixed - full).flatten(1).abs().amax(1) < 1e-10
    is_comp = (mixed - comp).flatten(1).abs().amax(1) < 1e-10
    assert (is_full | is_comp).all() and is_full.any() and is_comp.any()


def test_relaxed_convcnp_validation():
    with pytest.raises(ValueError, match="dim_x = 1 or 2.*got dim_x = 3"):
        build_model("relaxed-convcnp", 3, 1)
    with pytest.raises(ValueError, match="approximate"):
        build_model("relaxed-convcnp", 1, 1, approximate=False)
    with pytest.raises(ValueError, match="num_basis"):
        relaxed_convcnp(1, num_basis=0)
    model = relaxed_convcnp(1)
    xc, yc, xt = random_task(2, 4, 3, 1, 1)
    with pytest.raises(ValueError, match="yc"):
        model(xc, torch.randn(2, 4, 2), xt)
