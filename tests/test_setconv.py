"""The fast set-convolution kernels equal the plain formulas they replace, to float64 precision,
values and gradients; the neuralprocesses layout of the ConvCNP builds the network it claims."""

from __future__ import annotations

import pytest
import torch

from approxeq.nn.cnn import UNet
from approxeq.nn.setconv import SetConvDecoder, SetConvEncoder, lattice_grid, rbf_weights
from approxeq.np import build_model


def _rbf_reference(x, axis, lengthscale):
    """The plain RBF weights the set convolutions used before :func:`rbf_weights`."""
    return torch.exp(-0.5 * ((x[..., None] - axis) / lengthscale) ** 2)


def test_rbf_weights_equal_plain_formula_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    for ls_value in (0.01, 0.3, 2.0):
        x = (torch.rand(3, 7, generator=g, dtype=torch.float64) * 8 - 4).requires_grad_()
        axis = torch.linspace(-5, 5, 41, dtype=torch.float64).requires_grad_()
        ls = torch.tensor(ls_value, dtype=torch.float64, requires_grad=True)
        grad_out = torch.randn(3, 7, 41, generator=g, dtype=torch.float64)
        new = rbf_weights(x, axis, ls)
        old = _rbf_reference(x, axis, ls)
        # weights below 1.5e-154 are exactly 0 in float64
        torch.testing.assert_close(new, old, rtol=1e-12, atol=1e-150)
        g_new = torch.autograd.grad(new, (x, axis, ls), grad_out)
        g_old = torch.autograd.grad(old, (x, axis, ls), grad_out)
        for a, b in zip(g_new, g_old):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_rbf_weights_gradcheck():
    x = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    axis = torch.linspace(-1, 2, 9, dtype=torch.float64, requires_grad=True)
    ls = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rbf_weights, (x, axis, ls))


def test_rbf_weights_flush_weights_below_sqrt_tiny_in_float32():
    x = torch.zeros(1, 1)
    axis = torch.tensor([0.0, 1.0, 9.0, 10.0, 14.0])
    w = rbf_weights(x, axis, torch.tensor(1.0))
    assert w[0, 0, 0] == 1.0 and w[0, 0, 1] > 0.6 and w[0, 0, 2] > 0
    floor = torch.finfo(torch.float32).tiny ** 0.5
    assert ((w == 0) | (w >= floor)).all()  # no weight whose products could be subnormal
    assert w[0, 0, 3] == 0.0 and w[0, 0, 4] == 0.0


def _setconv_reference(xc, yc, axes, ls):
    """Encoder set convolution with the dense weight tensor [b, n, n_1, ..., n_d]."""
    w = torch.ones(xc.shape[:2], dtype=xc.dtype)
    for d, a in enumerate(axes):
        wd = _rbf_reference(xc[..., d], a, ls[d])
        w = w[..., None] * wd.reshape(*wd.shape[:2], *([1] * d), -1)
    feats = torch.cat([yc, torch.ones_like(yc[..., :1])], -1)
    h = torch.einsum("bn...,bnc->b...c", w, feats)
    density = h[..., -1:]
    return torch.cat([h[..., :-1] / (density + 1e-8), density], -1)


def test_setconv_encoder_decoder_equal_dense_reference_float64():
    g = torch.Generator().manual_seed(1)
    for dim_x in (1, 2):
        enc = SetConvEncoder(dim_x, 0.3).double()
        dec = SetConvDecoder(dim_x, 0.3).double()
        with torch.no_grad():
            enc.weights.log_lengthscale.copy_(torch.randn(dim_x, generator=g) * 0.3 - 1.0)
            dec.weights.log_lengthscale.copy_(torch.randn(dim_x, generator=g) * 0.3 - 1.0)
        xc = torch.rand(2, 5, dim_x, generator=g, dtype=torch.float64) * 4 - 2
        yc = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
        xt = torch.rand(2, 4, dim_x, generator=g, dtype=torch.float64) * 4 - 2
        axes = lattice_grid([xc, xt], 8.0, 0.3)
        torch.testing.assert_close(enc(xc, yc, axes),
                                   _setconv_reference(xc, yc, axes, enc.weights.lengthscale),
                                   rtol=1e-12, atol=1e-12)
        z = torch.randn(2, *(len(a) for a in axes), 3, generator=g, dtype=torch.float64)
        w = torch.ones(xt.shape[:2], dtype=torch.float64)
        for d, a in enumerate(axes):
            wd = _rbf_reference(xt[..., d], a, dec.weights.lengthscale[d])
            w = w[..., None] * wd.reshape(*wd.shape[:2], *([1] * d), -1)
        ref = torch.einsum("bt...,b...c->btc", w, z)
        torch.testing.assert_close(dec(axes, z, xt), ref, rtol=1e-12, atol=1e-12)


def test_neuralprocesses_layout_parameter_count():
    # neuralprocesses' construct_convgnp(dim_x=1, unet_channels=(64,) * 6, unet_kernels=5,
    # points_per_unit=64, likelihood="het") has 329,220 parameters
    model = build_model("convcnp", 1, 1, cnn="unet", layout="neuralprocesses", channels=64,
                        num_layers=6, kernel_size=5, points_per_unit=64, margin=0.1)
    assert sum(p.numel() for p in model.parameters()) == 329_220
    pred = model(torch.rand(2, 4, 1), torch.randn(2, 4, 1), torch.rand(2, 6, 1))
    assert pred.mean.shape == (2, 6, 1)


def test_unet_without_io_blocks_passes_signed_input():
    net = UNet(1, 2, 4, 2, 3, io_blocks=False).double()
    z = torch.randn(1, 8, 2, dtype=torch.float64)
    out = net(z)
    assert out.shape == (1, 8, 4) and (out >= 0).all()
    # the first layer sees the signed input: flipping its sign changes the output
    assert not torch.allclose(net(-z), out)


def test_conv_blocks_in_channels_last_equal_plain_convolutions_float64():
    from approxeq.nn.cnn import ConvBlock

    g = torch.Generator().manual_seed(2)
    for dim in (1, 2):
        grid = (12,) * dim
        for kwargs in ({}, {"stride": 2}, {"transpose": True}):
            block = ConvBlock(dim, 3, 5, 5, **kwargs).double()
            h = torch.randn(2, *grid, 3, generator=g, dtype=torch.float64).movedim(-1, 1)
            h.requires_grad_()
            new = block(h)
            old = block.conv(torch.relu(h))  # the module's own (channels-first) forward
            torch.testing.assert_close(new, old, rtol=1e-12, atol=1e-12)
            grad = torch.randn(old.shape, generator=g, dtype=torch.float64)
            for a, b in zip(torch.autograd.grad(new, [h, block.conv.weight], grad),
                            torch.autograd.grad(old, [h, block.conv.weight], grad)):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_unet_equals_channels_first_reference_float64():
    g = torch.Generator().manual_seed(3)
    for io_blocks in (True, False):
        net = UNet(1, 3, 4, 3, 5, io_blocks=io_blocks).double()
        z = torch.randn(2, 16, 3, generator=g, dtype=torch.float64)

        def reference(z, net=net, io_blocks=io_blocks):
            h = z.movedim(-1, 1)
            if net.inp is not None:
                h = net.inp.conv(torch.relu(h))
            skips = [h if io_blocks else None]
            for i, blk in enumerate(net.down):
                h = blk.conv(h if i == 0 and not io_blocks else torch.relu(h))
                skips.append(h)
            u = skips.pop()
            for level, blk in zip(reversed(range(net.num_layers)), net.up):
                u = blk.conv(torch.relu(u))
                if skips[level] is not None:
                    u = torch.cat([u, skips[level]], 1)
            out = net.out.conv(torch.relu(u)) if io_blocks else torch.relu(u)
            return out.movedim(1, -1)

        torch.testing.assert_close(net(z), reference(z), rtol=1e-12, atol=1e-12)


def test_unet_activates_each_skip_once_bit_for_bit_as_the_blocks_would():
    """The UNet applies its blocks' ReLUs itself (once per skip connection): float32 values and
    gradients equal those of the blocks activating their own inputs, bit for bit."""
    import copy

    g = torch.Generator().manual_seed(4)
    for io_blocks in (True, False):
        net = UNet(1, 3, 8, 3, 5, io_blocks=io_blocks)
        assert isinstance(net.act, torch.nn.ReLU)
        blocks_activate = copy.deepcopy(net)
        for blk in [*blocks_activate.down[0 if io_blocks else 1:], *blocks_activate.up,
                    *([blocks_activate.out] if io_blocks else [])]:
            blk.act = torch.nn.ReLU()
        blocks_activate.act = torch.nn.Identity()
        z = torch.randn(4, 32, 3, generator=g, requires_grad=True)
        outs = [m(z) for m in (net, blocks_activate)]
        assert torch.equal(outs[0], outs[1])
        grad = torch.randn(outs[0].shape, generator=g)
        grads = [torch.autograd.grad(o, [z, *m.parameters()], grad)
                 for o, m in zip(outs, (net, blocks_activate))]
        assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_unet_out_channels_is_a_linear_map_on_the_grid():
    net = UNet(1, 2, 4, 2, 3, io_blocks=False, out_channels=3).double()
    z = torch.randn(2, 8, 2, dtype=torch.float64)
    out = net(z)
    assert out.shape == (2, 8, 3)
    head = net.head
    net.head = None
    torch.testing.assert_close(out, head(net(z)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="out_channels"):
        UNet(1, 2, 4, 2, 3, out_channels=3)
