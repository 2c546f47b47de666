"""Set convolutions: from off-grid points onto a regular grid and back.

A ConvCNP discretises its functional embedding on a grid. For exact translation equivariance
the grid must move with the data, so :func:`lattice_grid` builds it around the union of all
inputs and snaps its points to integer multiples of ``1 / points_per_unit``: shifting every
input by ``k / points_per_unit`` (``k`` an integer vector) shifts the grid by exactly ``k``
cells and leaves its size unchanged, so whatever runs on the grid sees the same array.

A grid is represented by its per-axis coordinates ``axes = (a_1, ..., a_d)`` with ``a_i`` of
shape ``[n_i]``; :func:`grid_points` expands them to points ``[n_1, ..., n_d, d]``. All tasks of
a batch share one grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from approxeq.nn.setconv_banded import banded_decode, banded_encode

_AXIS_LETTERS = "ijklmnop"


def lattice_grid(points: Sequence[Tensor], points_per_unit: float, margin: float = 0.1,
                 multiple: int = 1) -> tuple[Tensor, ...]:
    """A regular grid, shared by the batch, covering every point of ``points`` plus ``margin``.

    Grid points are integer multiples of ``1 / points_per_unit``. The number of points along
    each axis is padded (evenly on both sides) up to a multiple of ``multiple`` (e.g. ``2 **
    levels`` for a UNet). The grid depends on the inputs only through their range, and a shift
    of all inputs by a multiple of the spacing shifts the grid by the same amount.

    Args:
        points: tensors ``[batch, n, dim_x]`` (e.g. ``xc`` and ``xt``; ``n`` may be 0).
        points_per_unit: grid density (points per unit of input). margin: room around the data.
        multiple: the number of points per axis is divisible by this.

    Returns:
        ``dim_x`` tensors ``[n_1], ..., [n_d]``: the coordinates along each axis, in the dtype
        and on the device of the first tensor of ``points``.
    """
    if not points:
        raise ValueError("points: expected at least one tensor [batch, n, dim_x], got none")
    if points_per_unit <= 0:
        raise ValueError(f"points_per_unit: expected a positive number, got {points_per_unit}")
    if margin < 0:
        raise ValueError(f"margin: expected >= 0, got {margin}")
    if multiple < 1:
        raise ValueError(f"multiple: expected an int >= 1, got {multiple}")
    ref = points[0]
    dim_x = ref.shape[-1]
    flat = torch.cat([p.detach().reshape(-1, dim_x) for p in points], 0)
    if flat.shape[0] == 0:  # nothing to cover: a small grid around the origin
        lo = hi = torch.zeros(dim_x, dtype=ref.dtype, device=ref.device)
    else:
        lo, hi = flat.min(0).values, flat.max(0).values
    # Integer cell indices: the grid's position and size are functions of the data's range
    # that commute with lattice shifts.
    start = torch.floor((lo - margin) * points_per_unit).long().tolist()
    stop = torch.ceil((hi + margin) * points_per_unit).long().tolist()
    axes = []
    for a, b in zip(start, stop):
        n = b - a + 1
        n_padded = math.ceil(n / multiple) * multiple
        a -= (n_padded - n) // 2
        idx = torch.arange(a, a + n_padded, device=ref.device)
        axes.append(idx.to(ref.dtype) / points_per_unit)
    return tuple(axes)


def grid_points(axes: Sequence[Tensor]) -> Tensor:
    """The points of the grid with per-axis coordinates ``axes``: ``[n_1, ..., n_d, d]``."""
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def _check_axes(axes: Sequence[Tensor], dim_x: int) -> None:
    if len(axes) != dim_x or any(a.dim() != 1 for a in axes):
        raise ValueError(f"axes: expected {dim_x} one-dimensional coordinate tensors, got "
                         f"{[tuple(a.shape) for a in axes]}")


class _RBFWeights(nn.Module):
    """Separable RBF weights ``exp(-(x_d - g_d)^2 / (2 l_d^2))`` with a learnable lengthscale
    per input dimension (or one for all, ``shared=True``)."""

    def __init__(self, dim_x: int, init_lengthscale: float, learn_lengthscale: bool,
                 shared: bool = False) -> None:
        super().__init__()
        if init_lengthscale <= 0:
            raise ValueError(
                f"init_lengthscale: expected a positive number, got {init_lengthscale}")
        self.dim_x = dim_x
        log_ls = torch.full((1 if shared else dim_x,), math.log(init_lengthscale))
        self.log_lengthscale = nn.Parameter(log_ls, requires_grad=learn_lengthscale)

    @property
    def lengthscale(self) -> Tensor:
        """Current lengthscales ``[dim_x]``."""
        return self.log_lengthscale.exp().expand(self.dim_x)

    def per_axis(self, x: Tensor, axes: Sequence[Tensor]) -> list[Tensor]:
        """Weights between points ``x [b, n, dim_x]`` and each axis: ``[b, n, n_d]`` per axis."""
        ls = self.lengthscale.to(x.dtype)
        return [rbf_weights(x[..., d], a, ls[d]) for d, a in enumerate(axes)]

    def support(self, dtype: torch.dtype) -> float:
        """The largest distance along an axis at which a weight in ``dtype`` is not exactly 0
        (:func:`rbf_support` lengthscales of the longest lengthscale)."""
        return float(self.lengthscale.detach().max()) * rbf_support(dtype)


def rbf_weights(x: Tensor, axis: Tensor, lengthscale: Tensor) -> Tensor:
    """``exp(-(x - g)^2 / (2 l^2))`` between points ``x [b, n]`` and grid coordinates
    ``axis [G]``, as ``[b, n, G]``; ``lengthscale`` is a scalar tensor.

    Weights below the square root of the smallest normal number of ``x``'s dtype are exactly 0
    (``1.1e-19`` in float32, beyond 9.3 lengthscales; ``1.5e-154`` in float64). On a grid far
    wider than the lengthscale most weights are that small, and the plain formula turns them
    into subnormal numbers, in the weights and in everything computed from them (the grid
    values, the gradients): arithmetic on subnormals is many times slower on CPUs. Flushing
    them, and a hand-written backward pass that needs no intermediate tensors beyond the
    scaled distances and the weights, make the set convolutions several times faster under
    autograd.
    """
    return _RBF.apply(x, axis, lengthscale)


def rbf_support(dtype: torch.dtype) -> float:
    """How many lengthscales from a point :func:`rbf_weights` reaches in ``dtype``: beyond
    ``sqrt(-2 log sqrt(tiny))`` lengthscales (9.3 in float32, 26.6 in float64) a weight is
    exactly 0, so whatever lies farther along any axis cannot change a set convolution."""
    return math.sqrt(-2.0 * _log_weight_floor(dtype))


def _log_weight_floor(dtype: torch.dtype) -> float:
    """``log(sqrt(tiny))``, ``tiny`` the smallest normal number of ``dtype``: log-weights below
    it are set to weight 0. The square root leaves room for products: a weight times a value
    or a gradient stays a normal number, so no subnormals appear downstream either."""
    return 0.5 * math.log(torch.finfo(dtype).tiny)


class _RBF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, axis: Tensor, lengthscale: Tensor) -> Tensor:
        inv = 1.0 / lengthscale
        d = (x[..., None] - axis) * inv
        w = d.square().mul_(-0.5)
        floor = _log_weight_floor(w.dtype)
        far = w < floor
        # exp itself is slow where its result underflows: clamp first, then zero
        w = w.clamp_(min=floor).exp_().masked_fill_(far, 0.0)
        ctx.save_for_backward(d, w, inv)
        return w

    @staticmethod
    @once_differentiable  # the saved d and w are outside the graph: no silent wrong 2nd order
    def backward(ctx, grad: Tensor):
        d, w, inv = ctx.saved_tensors
        # dw/dd = -d w, with d = (x - g) / l
        t = grad * w * d
        gx = ga = gl = None
        if ctx.needs_input_grad[0]:
            gx = t.sum(-1).mul_(-inv)
        if ctx.needs_input_grad[1]:
            ga = t.reshape(-1, t.shape[-1]).sum(0).mul_(inv)
        if ctx.needs_input_grad[2]:
            # dd/dl = -d / l
            gl = (t * d).sum().mul(inv)
        return gx, ga, gl


def _check_banded(banded: bool, dim_x: int, weights: nn.Module) -> bool:
    if banded and (dim_x != 1 or not isinstance(weights, _RBFWeights)):
        raise ValueError(f"banded: needs dim_x = 1 and the RBF weights, got dim_x = {dim_x} "
                         f"and {type(weights).__name__}")
    return bool(banded)


class SetConvEncoder(nn.Module):
    """Set convolution from off-grid observations onto a grid.

    With RBF weights ``w(x, g)``, the grid value at ``g`` is the density
    ``h_0(g) = sum_i w(x_i, g)`` and the data channels ``sum_i w(x_i, g) y_i / (h_0(g) + eps)``.
    An empty context gives zeros everywhere.

    Args:
        dim_x: input dimension. init_lengthscale: initial RBF lengthscale (same for every
            dimension; a ConvCNP uses ``2 / points_per_unit``).
        learn_lengthscale: whether the lengthscale is trained.
        shared_lengthscale: one lengthscale for every dimension instead of one per dimension.
        weights: separable weights to use instead (``per_axis(x, axes)``, as the RBF's).
        banded: 1-D only, with the RBF weights: each point meets only the grid cells where its
            weight is not flushed to 0 (:mod:`approxeq.nn.setconv_banded`); the same result up
            to float rounding (the order of the sums), several times cheaper on a wide grid.

    Shapes: ``forward(xc, yc, axes)`` with ``xc [b, n, dim_x]``, ``yc [b, n, dim_y]`` and grid
    axes ``[n_1], ..., [n_d]`` returns ``[b, n_1, ..., n_d, dim_y + 1]``: the normalised data
    channels, then the density channel last (matching the input layout ``[y, 1]``).
    """

    def __init__(self, dim_x: int, init_lengthscale: float = 0.1, *,
                 learn_lengthscale: bool = True, eps: float = 1e-8,
                 shared_lengthscale: bool = False, weights: nn.Module | None = None,
                 banded: bool = False) -> None:
        super().__init__()
        self.dim_x, self.eps = dim_x, eps
        self.weights = weights or _RBFWeights(dim_x, init_lengthscale, learn_lengthscale,
                                              shared_lengthscale)
        self.banded = _check_banded(banded, dim_x, self.weights)

    def forward(self, xc: Tensor, yc: Tensor, axes: Sequence[Tensor]) -> Tensor:
        if xc.dim() != 3 or xc.shape[-1] != self.dim_x:
            raise ValueError(f"xc: expected [batch, n, {self.dim_x}], got {tuple(xc.shape)}")
        if yc.dim() != 3 or yc.shape[:2] != xc.shape[:2]:
            raise ValueError(f"yc: expected [{xc.shape[0]}, {xc.shape[1]}, dim_y] to match xc, "
                             f"got {tuple(yc.shape)}")
        _check_axes(axes, self.dim_x)
        feats = torch.cat([yc, torch.ones_like(yc[..., :1])], -1)  # [b, n, dy + 1]
        if self.banded:
            ls = self.weights.lengthscale.to(xc.dtype)[0]
            h = banded_encode(xc[..., 0], feats, axes[0], ls)
            density = h[..., -1:]
            return torch.cat([h[..., :-1] / (density + self.eps), density], -1)
        ws = self.weights.per_axis(xc, axes)
        # Contract one axis at a time (outer products per point, then the sum over points), so
        # the [b, n, n_1, ..., n_d] weight tensor is never formed.
        letters = _AXIS_LETTERS[:self.dim_x]
        h, rest = feats, "c"
        for d in reversed(range(self.dim_x)):
            out = f"bn{letters[d]}{rest}" if d else f"b{letters[d]}{rest}"
            h = torch.einsum(f"bn{letters[d]},bn{rest}->{out}", ws[d], h)
            rest = letters[d] + rest
        density = h[..., -1:]
        return torch.cat([h[..., :-1] / (density + self.eps), density], -1)


class SetConvDecoder(nn.Module):
    """Set convolution from a grid to off-grid target points: ``sum_g w(x, g) z(g)`` with
    learnable RBF weights (not normalised, as in the ConvCNP), or the separable ``weights``
    given. Arguments as :class:`SetConvEncoder`.

    Shapes: ``forward(axes, z, xt)`` with grid axes ``[n_1], ..., [n_d]``, grid values
    ``z [b, n_1, ..., n_d, C]`` and targets ``xt [b, m, dim_x]`` returns ``[b, m, C]``.
    """

    def __init__(self, dim_x: int, init_lengthscale: float = 0.1, *,
                 learn_lengthscale: bool = True, shared_lengthscale: bool = False,
                 weights: nn.Module | None = None, banded: bool = False) -> None:
        super().__init__()
        self.dim_x = dim_x
        self.weights = weights or _RBFWeights(dim_x, init_lengthscale, learn_lengthscale,
                                              shared_lengthscale)
        self.banded = _check_banded(banded, dim_x, self.weights)

    def forward(self, axes: Sequence[Tensor], z: Tensor, xt: Tensor) -> Tensor:
        _check_axes(axes, self.dim_x)
        grid_shape = tuple(a.shape[0] for a in axes)
        if z.dim() != self.dim_x + 2 or tuple(z.shape[1:-1]) != grid_shape:
            raise ValueError(f"z: expected [batch, {', '.join(map(str, grid_shape))}, channels], "
                             f"got {tuple(z.shape)}")
        if xt.dim() != 3 or xt.shape[-1] != self.dim_x or xt.shape[0] != z.shape[0]:
            raise ValueError(f"xt: expected [{z.shape[0]}, m, {self.dim_x}], got {tuple(xt.shape)}")
        if self.banded:
            ls = self.weights.lengthscale.to(xt.dtype)[0]
            return banded_decode(z, xt[..., 0], axes[0], ls)
        ws = self.weights.per_axis(xt, axes)
        letters = _AXIS_LETTERS[:self.dim_x]
        h = torch.einsum(f"bt{letters[0]},b{letters}c->bt{letters[1:]}c", ws[0], z)
        for d in range(1, self.dim_x):
            h = torch.einsum(f"bt{letters[d]},bt{letters[d:]}c->bt{letters[d + 1:]}c", ws[d], h)
        return h
