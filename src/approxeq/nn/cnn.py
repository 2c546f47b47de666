"""Convolutional networks on regular 1-D and 2-D grids, channels-last at their interface.

Both networks are built from *blocks* (by default :class:`ConvBlock`: ReLU, then convolution)
made by a factory with the signature of :class:`ConvBlock`, so that other block types (e.g.
relaxed convolutions, :mod:`approxeq.approximate.relaxed`) can be swapped in. A block's
``forward(h, coords=None, **kwargs)`` takes channels-first ``h [b, C_in, *grid_in]`` and the
coordinates of its *output* grid points ``coords [*grid_out, dim]`` (ignored by plain
convolutions), plus any keyword arguments the network was called with.

Convolutions use "same" zero padding, so they are translation equivariant away from the
border only; a ConvCNP keeps them exactly equivariant by moving the whole grid with the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BlockFactory = Callable[..., nn.Module]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}


def _check_common(dim: int, in_channels: int, channels: int, num_layers: int,
                  kernel_size: int) -> None:
    if dim not in (1, 2):
        raise ValueError(f"dim: convolutional networks support 1-D and 2-D grids, got dim = {dim}")
    for name, value in (("in_channels", in_channels), ("channels", channels),
                        ("num_layers", num_layers)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        # An odd kernel centres every output on an input cell, which keeps "same" padding and
        # the up-sampling of the UNet aligned with the grid.
        raise ValueError(f"kernel_size: expected an odd int >= 1, got {kernel_size!r}")


def make_conv(dim: int, in_channels: int, out_channels: int, kernel_size: int, *,
              stride: int = 1, transpose: bool = False) -> nn.Module:
    """A "same"-padded convolution (``stride`` 1 or 2, halving the grid), or, with
    ``transpose``, a stride-2 transposed convolution that doubles the grid. Channels-first."""
    if transpose:
        return _CONV_T[dim](in_channels, out_channels, kernel_size, stride=2,
                            padding=kernel_size // 2, output_padding=1)
    return _CONV[dim](in_channels, out_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2)


class ConvBlock(nn.Module):
    """ReLU, then a convolution (no residual connection).

    Args:
        dim: grid dimension (1 or 2). in_channels, out_channels: channels.
        kernel_size: odd kernel width. stride: 1, or 2 to halve the grid.
        transpose: a stride-2 transposed convolution that doubles the grid.

    Shapes: ``forward(h)`` maps ``[b, in_channels, *grid]`` to ``[b, out_channels, *grid']``
    (channels-first: blocks run inside :class:`CNN` / :class:`UNet`).
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int = 1, transpose: bool = False) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = make_conv(dim, in_channels, out_channels, kernel_size, stride=stride,
                              transpose=transpose)

    def forward(self, h: Tensor, coords: Tensor | None = None, **kwargs) -> Tensor:
        return apply_conv(self.conv, self.act(h))


def apply_conv(conv: nn.Module, h: Tensor) -> Tensor:
    """``conv(h)`` for a module made by :func:`make_conv`, run in channels-last memory.

    A 1-D convolution runs as a 2-D one on a grid of height 1 whose input is a channels-last
    view of ``h``: oneDNN's channels-last kernels are 1.5-2x faster on CPU than its kernels
    for 1-D channels-first data, and the networks' channels-last tensors need no copy to get
    there. The result is ``[b, C_out, L']`` with channels-last strides. 2-D convolutions are
    called as they are (a channels-last input already selects the channels-last kernels).
    """
    if isinstance(conv, nn.Conv1d):
        y = F.conv2d(h.unsqueeze(2), conv.weight.unsqueeze(2), conv.bias,
                     stride=(1, conv.stride[0]), padding=(0, conv.padding[0]))
        return y.squeeze(2)
    if isinstance(conv, nn.ConvTranspose1d):
        y = F.conv_transpose2d(h.unsqueeze(2), conv.weight.unsqueeze(2), conv.bias,
                               stride=(1, conv.stride[0]), padding=(0, conv.padding[0]),
                               output_padding=(0, conv.output_padding[0]))
        return y.squeeze(2)
    return conv(h)


def _cat_channels(a: Tensor, b: Tensor) -> Tensor:
    """Concatenate along the channel axis into channels-last memory (``torch.cat`` of
    channels-first views would give channels-first memory, and a copy at the next convolution)."""
    return torch.cat([a.movedim(1, -1), b.movedim(1, -1)], -1).movedim(-1, 1)


def _to_channels_first(z: Tensor) -> Tensor:
    return z.movedim(-1, 1)


def _to_channels_last(h: Tensor) -> Tensor:
    return h.movedim(1, -1)


def _check_grid_input(name: str, z: Tensor, dim: int, in_channels: int, multiple: int,
                      coords: Tensor | None) -> None:
    if z.dim() != dim + 2 or z.shape[-1] != in_channels:
        raise ValueError(f"z: {name} expected [batch, {', '.join(['n'] * dim)}, {in_channels}] "
                         f"(channels-last), got {tuple(z.shape)}")
    grid = tuple(z.shape[1:-1])
    if any(n % multiple for n in grid):
        raise ValueError(f"z: {name} needs every grid size divisible by {multiple}, got grid "
                         f"{grid}")
    if coords is not None and tuple(coords.shape) != (*grid, dim):
        raise ValueError(f"coords: expected [{', '.join(map(str, grid))}, {dim}] to match z, got "
                         f"{tuple(coords.shape)}")


class CNN(nn.Module):
    """``num_layers`` blocks at full resolution: ``in_channels -> channels -> ... -> channels``.

    Args:
        dim: grid dimension (1 or 2). in_channels: input channels. channels: width C.
        num_layers: number of blocks. kernel_size: odd kernel width.
        block: block factory with the signature of :class:`ConvBlock`.

    Shapes: ``forward(z, coords=None, **block_kwargs)`` maps ``z [b, *grid, in_channels]``
    (with grid coordinates ``coords [*grid, dim]`` for location-aware blocks) to
    ``[b, *grid, channels]``.
    """

    #: grid sizes must be divisible by this (no down-sampling here)
    grid_multiple = 1

    #: how far (in grid cells, along each axis) an input cell can change the output: each
    #: block's kernel reaches ``kernel_size // 2`` cells
    receptive_field: int

    def __init__(self, dim: int, in_channels: int, channels: int = 32, num_layers: int = 5,
                 kernel_size: int = 9, *, block: BlockFactory = ConvBlock) -> None:
        super().__init__()
        _check_common(dim, in_channels, channels, num_layers, kernel_size)
        self.dim, self.in_channels, self.channels = dim, in_channels, channels
        self.receptive_field = num_layers * (kernel_size // 2)
        self.blocks = nn.ModuleList(
            block(dim, in_channels if i == 0 else channels, channels, kernel_size)
            for i in range(num_layers))

    def forward(self, z: Tensor, coords: Tensor | None = None, **block_kwargs) -> Tensor:
        _check_grid_input("CNN", z, self.dim, self.in_channels, self.grid_multiple, coords)
        h = _to_channels_first(z)
        for blk in self.blocks:
            h = blk(h, coords, **block_kwargs)
        return _to_channels_last(h)


class UNet(nn.Module):
    """A UNet with ``num_layers`` stride-2 down-sampling levels and skip connections.

    Layout: an input block (``in_channels -> C``), ``num_layers`` stride-2 blocks (``C -> C``),
    then per level a stride-2 transposed block whose output is concatenated with the skip
    connection of that level (``2C`` channels), and an output block (``2C -> C``). Every grid
    size must be divisible by ``2 ** num_layers`` (:attr:`grid_multiple`).

    With ``io_blocks=False`` the layout is that of neuralprocesses' ``UNet``: no input and
    output blocks, the first stride-2 block maps ``in_channels -> C`` straight from the input
    (no activation before it, so signed inputs such as a ConvCNP's data channel pass
    unchanged), the last transposed block returns to full resolution without a skip
    connection, and the output is passed through a ReLU (its activation after the last layer).
    This needs a block factory whose blocks have an ``act`` attribute (as :class:`ConvBlock`).
    ``out_channels`` (only with ``io_blocks=False``) adds neuralprocesses' final linear layer,
    ``C -> out_channels`` at every grid point.

    Args and shapes as :class:`CNN` (``[b, *grid, out_channels]`` out with ``out_channels``);
    io_blocks, out_channels: see above.
    """

    def __init__(self, dim: int, in_channels: int, channels: int = 32, num_layers: int = 5,
                 kernel_size: int = 5, *, block: BlockFactory = ConvBlock,
                 io_blocks: bool = True, out_channels: int | None = None) -> None:
        super().__init__()
        _check_common(dim, in_channels, channels, num_layers, kernel_size)
        if out_channels is not None and (io_blocks or out_channels < 1):
            raise ValueError(f"out_channels: expected None, or an int >= 1 with io_blocks=False, "
                             f"got {out_channels!r} with io_blocks={io_blocks}")
        self.head = None if out_channels is None else nn.Linear(channels, out_channels)
        self.dim, self.in_channels, self.channels = dim, in_channels, channels
        self.num_layers = num_layers
        self.grid_multiple = 2 ** num_layers
        self.io_blocks = io_blocks
        # How far (in full-resolution grid cells, per axis) an input cell can change the output:
        # the longest path runs down every level and back up. A stride-2 convolution at level i
        # (cells 2^i wide) and the transposed one back to it each reach kernel_size // 2 of its
        # cells, so together 2 (2^L - 1) cells per kernel_size // 2; the input and output blocks
        # add one kernel radius each.
        self.receptive_field = (kernel_size // 2) * (2 * (2 ** num_layers - 1)
                                                     + (2 if io_blocks else 0))
        c = channels
        self.inp: nn.Module | None = block(dim, in_channels, c, kernel_size) if io_blocks else None
        self.down = nn.ModuleList(
            block(dim, c if io_blocks or i else in_channels, c, kernel_size, stride=2)
            for i in range(num_layers))
        self.up = nn.ModuleList(block(dim, c if i == 0 else 2 * c, c, kernel_size, transpose=True)
                                for i in range(num_layers))
        self.out: nn.Module = block(dim, 2 * c, c, kernel_size) if io_blocks else nn.ReLU()
        if not io_blocks:
            if not hasattr(self.down[0], "act"):
                raise ValueError("block: io_blocks=False needs blocks with an 'act' attribute "
                                 f"(the input is not activated), got {type(self.down[0]).__name__}")
            self.down[0].act = nn.Identity()
        self.act = self._hoist_activations()

    def _hoist_activations(self) -> nn.Module:
        """Take the blocks' ReLUs out of the blocks, to apply each one once per tensor.

        Each skip connection feeds two blocks, the next stride-2 one and (concatenated) a
        transposed one, and both would activate it; with the ReLU applied here instead, the
        activated skip is computed once and kept, and only the new channels are activated
        before each concatenation (a ReLU commutes with the concatenation). Values and
        gradients are those of the blocks' own ReLUs, bit for bit. Blocks whose ``act`` is not
        a ReLU are left alone and activate their inputs themselves.
        """
        blocks = [*self.down[0 if self.io_blocks else 1:], *self.up]
        if self.io_blocks:
            blocks.append(self.out)
        if not all(isinstance(getattr(b, "act", None), nn.ReLU) for b in blocks):
            return nn.Identity()
        for b in blocks:
            b.act = nn.Identity()
        return nn.ReLU()

    def _level_coords(self, coords: Tensor | None, level: int) -> Tensor | None:
        # A stride-2 "same" convolution with an odd kernel centres output j on input 2j.
        if coords is None:
            return None
        step = 2 ** level
        return coords[(slice(None, None, step),) * self.dim]

    def forward(self, z: Tensor, coords: Tensor | None = None, **block_kwargs) -> Tensor:
        _check_grid_input("UNet", z, self.dim, self.in_channels, self.grid_multiple, coords)
        h = _to_channels_first(z)
        if self.inp is not None:
            h = self.act(self.inp(h, coords, **block_kwargs))
        # skips[level] is the (activated) representation at resolution 2^-level
        skips = [h] if self.io_blocks else [None]
        for level, blk in enumerate(self.down, start=1):
            h = self.act(blk(h, self._level_coords(coords, level), **block_kwargs))
            skips.append(h)
        u = skips.pop()
        for level, blk in zip(reversed(range(self.num_layers)), self.up):
            u = blk(u, self._level_coords(coords, level), **block_kwargs)
            if skips[level] is not None:
                u = _cat_channels(self.act(u), skips[level])
        if self.io_blocks:
            return _to_channels_last(self.out(u, coords, **block_kwargs))
        out = _to_channels_last(self.out(u))
        return out if self.head is None else self.head(out)


def build_cnn(kind: str, dim: int, in_channels: int, channels: int, num_layers: int,
              kernel_size: int, *, block: BlockFactory = ConvBlock,
              io_blocks: bool = True, out_channels: int | None = None) -> CNN | UNet:
    """``kind = "conv"`` gives a :class:`CNN`, ``"unet"`` a :class:`UNet` (``io_blocks`` and
    ``out_channels``: see :class:`UNet`; a :class:`CNN` has no blocks to drop)."""
    if kind == "conv":
        if not io_blocks:
            raise ValueError("io_blocks: only a 'unet' can drop its input and output blocks, "
                             "got cnn='conv' with io_blocks=False")
        return CNN(dim, in_channels, channels, num_layers, kernel_size, block=block)
    if kind == "unet":
        return UNet(dim, in_channels, channels, num_layers, kernel_size, block=block,
                    io_blocks=io_blocks, out_channels=out_channels)
    raise ValueError(f"cnn: expected 'conv' or 'unet', got {kind!r}")
