"""Set convolutions, grids, CNN/UNet and the ConvCNP (exact and approximate)."""

from __future__ import annotations

import pytest
import torch

from approxeq.approximate import equivariance_error, equivariant_component, is_approximate
from approxeq.groups import Translation
from approxeq.nn import CNN, SetConvDecoder, SetConvEncoder, UNet, grid_points, lattice_grid
from approxeq.np import build_model
from approxeq.testing import (
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_not_equivariant,
    random_task,
)

SMALL = dict(points_per_unit=16, channels=8, num_layers=2)


def small_convcnp(dim_x, dim_y=1, **kw):
    return build_model("convcnp", dim_x, dim_y, **{**SMALL, **kw})


# ----------------------------------------------------------------------------- grid / set conv

@pytest.mark.parametrize("dim_x", [1, 2])
def test_lattice_grid_covers_data_on_lattice_and_shifts_with_it(float64, gen, dim_x):
    ppu, margin = 8, 0.3
    xc, _, xt = random_task(3, 5, 7, dim_x, 1, generator=gen)
    axes = lattice_grid([xc, xt], ppu, margin, multiple=4)
    allx = torch.cat([xc, xt], 1).reshape(-1, dim_x)
    for d, a in enumerate(axes):
        assert a.shape[0] % 4 == 0
        assert torch.allclose(a * ppu, torch.round(a * ppu), atol=1e-9)
        assert a[0] <= allx[:, d].min() - margin and a[-1] >= allx[:, d].max() + margin
    k = torch.randint(-50, 50, (dim_x,), generator=gen).to(xc.dtype)
    shifted = lattice_grid([xc + k / ppu, xt + k / ppu], ppu, margin, multiple=4)
    for d in range(dim_x):
        assert shifted[d].shape == axes[d].shape
        assert torch.allclose(shifted[d], axes[d] + k[d] / ppu, atol=1e-12)


def test_setconv_encoder_matches_dense_formula(float64, gen):
    xc, yc, xt = random_task(2, 6, 4, 2, 3, generator=gen)
    ls = 0.3
    enc = SetConvEncoder(2, ls)
    axes = lattice_grid([xc, xt], 8, 0.5)
    pts = grid_points(axes).reshape(-1, 2)
    w = torch.exp(-0.5 * (((xc[:, :, None, :] - pts) / ls) ** 2).sum(-1))  # [b, n, G]
    density = w.sum(1)
    data = torch.einsum("bng,bnc->bgc", w, yc) / (density[..., None] + enc.eps)
    out = enc(xc, yc, axes).reshape(2, -1, 4)
    assert torch.allclose(out[..., :3], data, atol=1e-10)
    assert torch.allclose(out[..., 3], density, atol=1e-10)


def test_setconv_decoder_matches_dense_formula(float64, gen):
    _, _, xt = random_task(2, 1, 5, 2, 1, generator=gen)
    ls = 0.2
    dec = SetConvDecoder(2, ls)
    axes = lattice_grid([xt], 8, 0.5)
    z = torch.randn(2, *(a.shape[0] for a in axes), 3, generator=gen)
    pts = grid_points(axes).reshape(-1, 2)
    w = torch.exp(-0.5 * (((xt[:, :, None, :] - pts) / ls) ** 2).sum(-1))  # [b, m, G]
    expected = torch.einsum("bmg,bgc->bmc", w, z.reshape(2, -1, 3))
    assert torch.allclose(dec(axes, z, xt), expected, atol=1e-10)


@pytest.mark.parametrize("dim_x", [1, 2])
def test_setconv_empty_context_gives_zeros(dim_x):
    axes = lattice_grid([torch.rand(2, 4, dim_x)], 8, 0.2)
    out = SetConvEncoder(dim_x, 0.25)(torch.zeros(2, 0, dim_x), torch.zeros(2, 0, 3), axes)
    assert out.shape == (2, *(a.shape[0] for a in axes), 4)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("net_cls", [CNN, UNet])
def test_cnn_shapes_channels_last(dim, net_cls):
    net = net_cls(dim, 3, 6, num_layers=2, kernel_size=3)
    z = torch.randn(2, *([8] * dim), 3)
    assert net(z).shape == (2, *([8] * dim), 6)


def test_unet_rejects_grid_not_divisible():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(1, 2, 4, num_layers=2, kernel_size=3)(torch.randn(1, 10, 2))


# ----------------------------------------------------------------------------- ConvCNP

@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("dim_y", [1, 2])
@pytest.mark.parametrize("cnn", ["conv", "unet"])
@pytest.mark.parametrize("nc", [0, 7])
def test_convcnp_distribution_and_gradients(dim_x, dim_y, cnn, nc):
    model = small_convcnp(dim_x, dim_y, cnn=cnn)
    xc, yc, xt = random_task(2, nc, 5, dim_x, dim_y)
    pred = model(xc, yc, xt)
    assert pred.batch_shape == (2, 5, dim_y)
    loss = -pred.log_prob(torch.randn(2, 5, dim_y)).mean()
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if nc == 0 and name.startswith("encoder.setconv"):
            continue  # nothing to convolve: the encoder's lengthscale has no influence
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # An empty context feeds zeros to the encoder, whose first weights then get no gradient.
        assert nc == 0 or p.grad.abs().sum() > 0, name


def test_convcnp_defaults_and_symmetry():
    model = build_model("convcnp", 1, 1)
    assert model.symmetry == Translation(1, spacing=1 / 16)
    assert not is_approximate(model)
    assert build_model("convcnp", 2, 1, cnn="unet").symmetry == Translation(2, spacing=1 / 16)


@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("cnn", ["conv", "unet"])
def test_convcnp_exactly_equivariant_to_lattice_shifts(float64, dim_x, cnn):
    model = small_convcnp(dim_x, 2, cnn=cnn)
    assert model.symmetry == Translation(dim_x, spacing=1 / 16)
    assert_equivariant(model, model.symmetry, random_task(2, 8, 6, dim_x, 2), atol=1e-8)


@pytest.mark.parametrize("dim_x", [1, 2])
def test_convcnp_off_lattice_shift_error_is_reported(float64, dim_x):
    model = small_convcnp(dim_x)
    report = equivariance_error(model, Translation(dim_x), *random_task(2, 8, 6, dim_x),
                                generator=torch.Generator().manual_seed(5))
    print(f"\nconvcnp dim_x={dim_x}: off-lattice shift error {report.max_error:.3e} "
          f"(|mean| scale {report.scale:.3g})")
    # The grid cannot follow a shift by a fraction of its spacing, so the model is not exact.
    assert 0 < report.max_error < float("inf")


@pytest.mark.parametrize("dim_x", [1, 2])
def test_convcnp_context_order_invariant(float64, dim_x):
    assert_context_permutation_invariant(small_convcnp(dim_x), random_task(2, 9, 4, dim_x))


def test_convcnp_input_validation():
    with pytest.raises(ValueError, match="dim_x = 1 or 2.*got dim_x = 3"):
        build_model("convcnp", 3, 1)
    with pytest.raises(ValueError, match="cnn"):
        build_model("convcnp", 1, 1, cnn="resnet")
    with pytest.raises(ValueError, match="kernel_size"):
        small_convcnp(1, kernel_size=4)
    model = small_convcnp(1, 1)
    xc, yc, xt = random_task(2, 4, 3, 1, 1)
    with pytest.raises(ValueError, match="yc.*dim_y = 1"):
        model(xc, torch.randn(2, 4, 2), xt)
    with pytest.raises(ValueError, match="xc.*dim_x = 1"):
        model(torch.randn(2, 4, 2), yc, torch.randn(2, 3, 2))
    with pytest.raises(ValueError, match="xt"):
        model(xc, yc, torch.randn(2, 3, 2))


# ----------------------------------------------------------------------------- approximate

def approximate_convcnp(dim_x, **kw):
    return small_convcnp(dim_x, 1, approximate=True, **kw)


@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("mode", ["sum", "concat"])
def test_approximate_convcnp_equivariant_only_inside_component(float64, dim_x, mode):
    model = approximate_convcnp(dim_x, fixed_input_mode=mode, cnn="unet" if dim_x == 2 else "conv")
    assert is_approximate(model) and model.symmetry == Translation(dim_x, spacing=1 / 16)
    task = random_task(2, 8, 6, dim_x, scale=1.5)  # inside the fixed-input domain (-2, 2)
    with equivariant_component(model):
        assert_equivariant(model, model.symmetry, task, atol=1e-8)
    assert_not_equivariant(model, model.symmetry, task, margin=1e-4)


def test_approximate_convcnp_component_is_the_exact_convcnp(float64):
    approx = approximate_convcnp(1).eval()
    exact = small_convcnp(1).eval()
    state = {k: v for k, v in approx.state_dict().items() if "fixed_input" not in k}
    exact.load_state_dict(state)
    task = random_task(2, 8, 6, 1, scale=1.5)
    with equivariant_component(approx):
        comp = approx(*task)
    ref = exact(*task)
    assert torch.allclose(comp.mean, ref.mean, atol=1e-12)
    assert torch.allclose(comp.stddev, ref.stddev, atol=1e-12)
    assert not torch.allclose(approx(*task).mean, ref.mean, atol=1e-4)


def test_approximate_convcnp_fixed_input_is_zero_outside_domain(float64):
    model = approximate_convcnp(1, fixed_input_domain=[(-1.0, 1.0)]).eval()
    task = random_task(2, 8, 6, 1, scale=1.0)
    far = tuple(t + 40.0 if i != 1 else t for i, t in enumerate(task))  # shift x only
    with equivariant_component(model):
        comp = model(*far)
    assert torch.allclose(model(*far).mean, comp.mean, atol=1e-12)


def test_approximate_convcnp_projects_fewer_fixed_inputs(float64):
    model = approximate_convcnp(1, num_fixed_inputs=3)
    assert model.encoder.fixed_input.num_channels == 3
    assert model(*random_task(2, 4, 5, 1)).batch_shape == (2, 5, 1)


def _each_task_is_full_or_component(model, dim_x):
    """In training, every task must see either all of its fixed inputs or none of them."""
    xc, yc, xt = random_task(1, 6, 5, dim_x, scale=1.5)
    task = tuple(t.expand(16, -1, -1) for t in (xc, yc, xt))
    model.eval()
    full = model(*task).mean
    with equivariant_component(model):
        comp = model(*task).mean
    model.train()
    mixed = model(*task).mean
    is_full = (mixed - full).flatten(1).abs().amax(1) < 1e-10
    is_comp = (mixed - comp).flatten(1).abs().amax(1) < 1e-10
    assert (is_full | is_comp).all()
    assert is_full.any() and is_comp.any()


def test_approximate_convcnp_dropout_per_task_all_or_nothing(float64):
    _each_task_is_full_or_component(approximate_convcnp(1, fixed_input_dropout=0.5), 1)


def test_approximate_convcnp_validation():
    with pytest.raises(ValueError, match="num_fixed_inputs"):
        approximate_convcnp(1, num_fixed_inputs=0)
    with pytest.raises(ValueError, match="fixed_input_mode"):
        approximate_convcnp(1, fixed_input_mode="product")
