"""Group convolutions on a square grid for the point groups D_N and C_N, in pure torch.

A feature map is a *scalar* field (``C`` channels, each unchanged by rotations except for its
position) or a *regular* field (``C`` blocks of ``|G|`` channels, one per group element, which
the group also permutes). With ``(g·f)(p) = f(g⁻¹p)`` on the grid and
``(h·F)(p, g) = F(h⁻¹p, h⁻¹g)`` on regular fields:

* the lifting convolution ``[Lf](p, g) = Σ_q f(q) ψ(g⁻¹(q − p))`` maps scalar to regular fields;
* the group convolution ``[KF](p, g) = Σ_q Σ_g' F(q, g') ψ(g⁻¹(q − p), g⁻¹g')`` maps regular to
  regular fields;
* point-wise nonlinearities commute with the permutation of the group axis;
* pooling (mean or max) over the group axis gives invariant scalar fields.

Both convolutions are ordinary ``conv2d`` calls with filter banks built from one base filter per
(output, input) channel pair: the base filter is transformed by every group element
(``ψ_g(u) = ψ(g⁻¹u)``: rotated/reflected spatially and, for group convolutions, cyclically
permuted along its group axis), so equivariance holds by construction.

Rotating a filter by ``g`` is a fixed linear map ``T_g`` of its ``k × k`` values. For ``N``
dividing 4 (90° rotations and reflections across the axes) ``T_g`` is a permutation and the
layers are exactly equivariant on square grids (``H = W``, zero padding is symmetric). For other
``N`` (``D_8``: 45° rotations) ``T_g`` bilinearly interpolates the filter and cuts it to the
disk of radius ``(k − 1)/2``, so that all rotated copies share one support; equivariance to
the odd multiples of 45° is then approximate. :func:`filter_interpolation_error` measures the
error of the interpolated filters against exactly rotated smooth filters: 0 for ``N`` dividing
4; for ``D_8`` with ``k = 5`` about 35 % for filters varying on the scale of half a cell, 11 %
at one cell, 3 % at two cells. The subgroup of 90° rotations (and reflections) stays exact for
``N = 8``.

Channels-first inside (``[b, C·|G|, H, W]``, channel ``c·|G| + g``); :class:`GroupCNN` is the
channels-last network used by the EquivCNP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxeq.groups.finite import Dihedral


def check_point_group(group: Dihedral) -> Dihedral:
    """``group`` if it is a planar point group (:class:`~approxeq.groups.Dihedral` or
    :class:`~approxeq.groups.Cyclic`), else a ``TypeError`` naming the conversion."""
    if isinstance(group, Dihedral):
        return group
    hint = (f"; approxeq.groups.point_group({group!r}) converts the name"
            if isinstance(group, str) else "")
    raise TypeError(f"group: expected a Dihedral or Cyclic group (e.g. Dihedral(4)), got "
                    f"{group!r}{hint}")


class PlanarPointGroup(nn.Module):
    """The group ``D_N`` (or ``C_N``) acting on square arrays: its matrices, its Cayley table and
    the (interpolating, for ``N`` not dividing 4) transforms of ``k × k`` arrays.

    Element ``i`` is ``group.elements()[i]`` (index ``s·N + k`` for ``R(2πk/N) Fˢ``). Array
    cell ``(i, j)`` of a ``k × k`` array sits at ``(i − c, j − c)``,
    ``c = (k − 1)/2``: the first array axis is the first coordinate.
    """

    def __init__(self, group: Dihedral) -> None:
        super().__init__()
        self.point_group = check_point_group(group)
        self.order, self.reflections = group.order, group.reflections
        mats = group.matrices(dtype=torch.float64)
        # float64 on the CPU, outside the module's dtype conversions: the transforms are built
        # from these and must stay exact
        self.matrices = mats
        prod = mats.transpose(-1, -2).unsqueeze(1) @ mats.unsqueeze(0)  # g⁻¹ g'
        dist = (prod.unsqueeze(2) - mats.reshape(1, 1, -1, 2, 2)).abs().flatten(-2).amax(-1)
        # table[g, g'] = index of g⁻¹ g'
        self.register_buffer("inverse_product", dist.argmin(-1), persistent=False)
        self._transforms: dict[int, Tensor] = {}

    @property
    def size(self) -> int:
        return self.matrices.shape[0]

    @property
    def exact(self) -> bool:
        """Whether every element permutes the cells of a square array (``N`` divides 4)."""
        return 4 % self.order == 0

    def disk_mask(self, size: int) -> Tensor:
        """``[size²]`` mask of cells inside the disk of radius ``(size − 1)/2`` (all ones when
        :attr:`exact`)."""
        c = (size - 1) / 2
        idx = torch.arange(size, dtype=torch.float64) - c
        r2 = idx[:, None] ** 2 + idx[None, :] ** 2
        if self.exact:
            return torch.ones(size * size, dtype=torch.float64)
        return (r2 <= c * c + 1e-9).to(torch.float64).flatten()

    def transforms(self, size: int, *, disk: bool = True) -> Tensor:
        """``[|G|, size², size²]`` matrices ``T_g`` with ``vec(g·ψ) = T_g vec(ψ)``,
        ``(g·ψ)(u) = ψ(g⁻¹u)``: permutations when :attr:`exact`, bilinear interpolation
        otherwise, then (filters, ``disk=True``) cut to the disk. Cached, float64, CPU."""
        key = (size, disk)
        if key not in self._transforms:
            c = (size - 1) / 2
            idx = torch.arange(size, dtype=torch.float64) - c
            u = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), -1).reshape(-1, 2)
            src = torch.einsum("gji,uj->gui", self.matrices, u) + c  # g⁻¹u = Mᵀu, as indices
            lo = torch.floor(src + 1e-9)
            frac = (src - lo).clamp(0, 1)
            frac = torch.where(frac < 1e-9, torch.zeros_like(frac), frac)
            out = torch.zeros(self.size, size * size, size * size, dtype=torch.float64)
            for di in (0, 1):
                for dj in (0, 1):
                    i, j = lo[..., 0] + di, lo[..., 1] + dj
                    w = (frac[..., 0] if di else 1 - frac[..., 0]) * \
                        (frac[..., 1] if dj else 1 - frac[..., 1])
                    ok = (i >= 0) & (i < size) & (j >= 0) & (j < size) & (w > 0)
                    col = (i.clamp(0, size - 1) * size + j.clamp(0, size - 1)).long()
                    out.scatter_add_(2, col.unsqueeze(-1), (w * ok).unsqueeze(-1))
            if disk:
                # Only the transformed filters are cut to the disk (so that all of them share
                # one support); the corners of the base filter still serve as interpolation
                # sources.
                out = out * self.disk_mask(size)[None, :, None]
            self._transforms[key] = out
        return self._transforms[key]

    def transforms_as(self, size: int, like: Tensor) -> Tensor:
        """:meth:`transforms` (filters, cut to the disk) in the dtype and on the device of
        ``like``, cached so that a GPU model does not copy them at every call."""
        key = (size, True, like.dtype, like.device)
        if key not in self._transforms:
            self._transforms[key] = self.transforms(size).to(like.device, like.dtype)
        return self._transforms[key]

    def act_scalar(self, g: int, f: Tensor) -> Tensor:
        """``g·f`` for a square field ``f [b, C, H, H]`` (channels-first); exact only when
        :attr:`exact`."""
        h = f.shape[-1]
        if f.shape[-2] != h:
            raise ValueError(f"f: expected a square field [b, C, H, H], got {tuple(f.shape)}")
        t = self.transforms(h, disk=False)[g].to(f)
        return torch.einsum("uv,bcv->bcu", t, f.flatten(-2)).reshape(f.shape)

    def act_regular(self, g: int, f: Tensor) -> Tensor:
        """``g·F`` for a regular field ``F [b, C·|G|, H, H]``: spatial transform and the
        permutation ``(g·F)(·, g') = F(·, g⁻¹g')`` of the group axis."""
        b, cg, h, w = f.shape
        f = self.act_scalar(g, f).reshape(b, cg // self.size, self.size, h, w)
        src = self.inverse_product[g]  # g⁻¹ g' for every g'
        return f[:, :, src].reshape(b, cg, h, w)


def filter_interpolation_error(group: Dihedral, kernel_size: int, *, smoothness: float = 1.0,
                               n_filters: int = 64,
                               generator: torch.Generator | None = None) -> float:
    """The interpolation error of the rotated filters: the largest over ``g`` of the relative
    error ``‖T_g ψ − ψ∘g⁻¹‖ / ‖ψ‖`` (norms over ``n_filters`` random smooth filters: sums of
    8 Gaussian bumps of width ``smoothness`` cells with centres in the disk), ``T_g ψ`` the
    transform of the sampled filter and ``ψ∘g⁻¹`` the continuous filter rotated exactly and then
    sampled, both on the disk. Exactly 0 for ``D4``/``C4``; for ``D8``/``C8`` it comes from
    the 45° rotations and falls as the filters get smoother relative to the grid."""
    pg = PlanarPointGroup(group)
    c = (kernel_size - 1) / 2
    idx = torch.arange(kernel_size, dtype=torch.float64) - c
    u = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), -1).reshape(-1, 2)
    radius = torch.rand(n_filters, 8, generator=generator, dtype=torch.float64).sqrt() * c
    angle = torch.rand(n_filters, 8, generator=generator, dtype=torch.float64) * 2 * math.pi
    centres = torch.stack([radius * angle.cos(), radius * angle.sin()], -1)  # [f, 8, 2]
    amps = torch.randn(n_filters, 8, generator=generator, dtype=torch.float64)

    def sample(points: Tensor) -> Tensor:  # the continuous filters at points [p, 2] -> [f, p]
        d2 = ((points[None, :, None] - centres[:, None]) ** 2).sum(-1)
        return (amps[:, None] * torch.exp(-0.5 * d2 / smoothness ** 2)).sum(-1)

    mask = pg.disk_mask(kernel_size)
    psi = sample(u)
    t = pg.transforms(kernel_size)
    err = 0.0
    for g in range(pg.size):
        exact = sample(u @ pg.matrices[g]) * mask  # ψ(g⁻¹u), g⁻¹u = Mᵀu
        got = psi @ t[g].T
        err = max(err, float((got - exact).norm() / (psi * mask).norm()))
    return err


class _GroupConvBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group: Dihedral,
                 in_group: bool, bias: bool) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            # odd kernels have a centre cell, which the rotations must fix
            raise ValueError(f"kernel_size: expected an odd int >= 1, got {kernel_size!r}")
        self.group = PlanarPointGroup(group)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        g_in = self.group.size if in_group else 1
        mask = self.group.disk_mask(kernel_size)
        fan_in = in_channels * g_in * float(mask.sum())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, g_in, kernel_size ** 2)
                                   * math.sqrt(2.0 / fan_in))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def filters(self) -> Tensor:
        """The filter bank ``[out·|G|, in·|G_in|, k, k]`` of the ``conv2d`` call."""
        g = self.group.size
        k = self.kernel_size
        t = self.group.transforms_as(k, self.weight)
        w = torch.einsum("guv,oihv->ogihu", t, self.weight)  # spatial transform by each g
        if self.weight.shape[2] > 1:
            rows = torch.arange(g, device=w.device)[:, None]
            table = self.group.inverse_product.to(w.device)
            # [g, g', o, i, k²] with the base filter's group index g⁻¹g' for output g
            w = w[:, rows, :, table].permute(2, 0, 3, 1, 4)
        o, _, i, gi, _ = w.shape
        return w.reshape(o * g, i * gi, k, k)

    def forward(self, x: Tensor) -> Tensor:
        g_in = self.weight.shape[2]
        if x.dim() != 4 or x.shape[1] != self.in_channels * g_in:
            raise ValueError(f"x: expected [batch, {self.in_channels * g_in}, H, W] "
                             f"(channels-first), got {tuple(x.shape)}")
        bias = None if self.bias is None else self.bias.repeat_interleave(self.group.size)
        return F.conv2d(x, self.filters(), bias, padding=self.kernel_size // 2)


class LiftingConv2d(_GroupConvBase):
    """Scalar field ``[b, in, H, W]`` → regular field ``[b, out·|G|, H, W]`` (channels-first).

    Args:
        in_channels, out_channels: channels (regular fields out). kernel_size: odd.
        group: a :class:`~approxeq.groups.Dihedral` or :class:`~approxeq.groups.Cyclic` group
            (default ``Dihedral(4)``). bias: one bias per output field, shared over the group
            axis.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 group: Dihedral | None = None, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, group or Dihedral(4), False,
                         bias)


class GroupConv2d(_GroupConvBase):
    """Regular field ``[b, in·|G|, H, W]`` → regular field ``[b, out·|G|, H, W]``
    (channels-first); arguments as :class:`LiftingConv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 group: Dihedral | None = None, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, group or Dihedral(4), True,
                         bias)


class GroupPool(nn.Module):
    """Regular field ``[b, C·|G|, H, W]`` → invariant scalar field ``[b, C, H, W]`` by the mean
    or the max over the group axis."""

    def __init__(self, group_size: int, mode: str = "mean") -> None:
        super().__init__()
        if mode not in ("mean", "max"):
            raise ValueError(f"mode: expected 'mean' or 'max', got {mode!r}")
        self.group_size, self.mode = group_size, mode

    def forward(self, x: Tensor) -> Tensor:
        b, cg, h, w = x.shape
        x = x.reshape(b, cg // self.group_size, self.group_size, h, w)
        return x.mean(2) if self.mode == "mean" else x.amax(2)


class GroupCNN(nn.Module):
    """A group CNN from scalar fields to invariant scalar fields, channels-last.

    Lifting convolution (``in_channels`` → ``channels`` regular fields), then ``num_layers − 1``
    blocks [ReLU, group convolution], then ReLU and pooling over the group axis.

    Args:
        in_channels: scalar input channels. channels: regular fields per hidden layer (the
            hidden width is ``channels · |G|``). num_layers: convolutions (>= 1).
        kernel_size: odd kernel width. group: a :class:`~approxeq.groups.Dihedral` or
            :class:`~approxeq.groups.Cyclic` group (default ``Dihedral(4)``).
        pool: ``"mean"`` or ``"max"`` over the group axis.

    Shapes: ``forward(z [b, H, W, in_channels], coords=None)`` returns ``[b, H, W, channels]``.
    Equivariant to the group acting on square grids (``H = W``) about the grid centre: exactly
    for ``N`` dividing 4, approximately for the other rotations (see the module docstring).
    """

    #: grid sizes must be divisible by this (no down-sampling)
    grid_multiple = 1

    def __init__(self, in_channels: int, channels: int = 8, num_layers: int = 4,
                 kernel_size: int = 5, group: Dihedral | None = None,
                 pool: str = "mean") -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers: expected an int >= 1, got {num_layers!r}")
        self.in_channels, self.channels = in_channels, channels
        #: how far (in grid cells, per axis) an input cell can change the output: the lifting
        #: and each group convolution reach kernel_size // 2 cells
        self.receptive_field = num_layers * (kernel_size // 2)
        group = group or Dihedral(4)
        self.lift = LiftingConv2d(in_channels, channels, kernel_size, group)
        self.layers = nn.ModuleList(GroupConv2d(channels, channels, kernel_size, group)
                                    for _ in range(num_layers - 1))
        self.pool = GroupPool(self.lift.group.size, pool)

    @property
    def group(self) -> PlanarPointGroup:
        return self.lift.group

    def forward(self, z: Tensor, coords: Tensor | None = None) -> Tensor:
        if z.dim() != 4 or z.shape[-1] != self.in_channels:
            raise ValueError(f"z: expected [batch, H, W, {self.in_channels}] (channels-last), "
                             f"got {tuple(z.shape)}")
        h = self.lift(z.movedim(-1, 1))
        for layer in self.layers:
            h = layer(torch.relu(h))
        return self.pool(torch.relu(h)).movedim(1, -1)
