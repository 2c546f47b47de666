"""Banded 1-D set convolutions equal the dense ones (values and gradients, float64 to rounding),
on their own and inside a ConvCNP built with ``banded_setconv=True``."""

from __future__ import annotations

import pytest
import torch

from approxeq.nn.setconv import SetConvDecoder, SetConvEncoder, lattice_grid
from approxeq.np import build_model


def _pair(cls, ls: float, dtype=torch.float64):
    dense, banded = cls(1, ls), cls(1, ls, banded=True)
    banded.load_state_dict(dense.state_dict())
    return dense.to(dtype), banded.to(dtype)


@pytest.mark.parametrize("n", [0, 1, 9])
@pytest.mark.parametrize("ls", [0.05, 0.3])
def test_banded_encoder_and_decoder_equal_dense_values_and_gradients(n, ls, float64, gen):
    xc = (torch.rand(3, n, 1, generator=gen) * 4 - 2).requires_grad_()
    yc = torch.randn(3, n, 2, generator=gen).requires_grad_()
    xt = (torch.rand(3, 7, 1, generator=gen) * 5 - 2.5).requires_grad_()  # some off the grid
    axes = lattice_grid([xc, xt[:, :4]], 16, 0.1)
    z = torch.randn(3, axes[0].shape[0], 4, generator=gen).requires_grad_()
    for cls, args in ((SetConvEncoder, lambda m: m(xc, yc, axes)),
                      (SetConvDecoder, lambda m: m(axes, z, xt))):
        dense, banded = _pair(cls, ls)
        a, b = args(dense), args(banded)
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
        grad = torch.randn(a.shape, generator=gen)
        inputs = [t for t in (xc, yc, xt, z) if t.numel()]
        ga = torch.autograd.grad(a, [*inputs, *dense.parameters()], grad, allow_unused=True)
        gb = torch.autograd.grad(b, [*inputs, *banded.parameters()], grad, allow_unused=True)
        for u, v in zip(ga, gb):
            assert (u is None) == (v is None)
            if u is not None:
                torch.testing.assert_close(v, u, rtol=1e-9, atol=1e-11)


def test_banded_needs_one_dimension():
    with pytest.raises(ValueError, match="banded: needs dim_x = 1"):
        SetConvEncoder(2, 0.1, banded=True)
    with pytest.raises(ValueError, match="banded_setconv: supported for dim_x = 1 only"):
        build_model("convcnp", 2, 1, banded_setconv=True)


@pytest.mark.parametrize("options", [{}, {"cnn": "unet", "layout": "neuralprocesses"}])
def test_convcnp_with_banded_setconv_is_the_same_model(options, float64, gen):
    common = dict(channels=8, num_layers=2, points_per_unit=32, **options)
    dense = build_model("convcnp", 1, 1, **common).double()
    banded = build_model("convcnp", 1, 1, banded_setconv=True, **common).double()
    banded.load_state_dict(dense.state_dict())
    xc, yc = torch.rand(4, 10, 1, generator=gen) * 4 - 2, torch.randn(4, 10, 1, generator=gen)
    xt = torch.rand(4, 15, 1, generator=gen) * 4 - 2
    a, b = dense(xc, yc, xt), banded(xc, yc, xt)
    torch.testing.assert_close(b.mean, a.mean, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(b.stddev, a.stddev, rtol=1e-9, atol=1e-11)
