"""Relaxed (approximately translation-equivariant) convolutions, after Wang et al. (2022).

A relaxed convolution has ``L`` filter banks and mixes their outputs with location-dependent
weights::

    out(x) = (1 / L) * sum_l conv_l(z)(x) * (1 + w_l(x))

where ``w: R^dim -> R^L`` is a learned function of location: a
:class:`~approxeq.approximate.FixedInput` (an MLP, zero outside its domain box, zero inside
:func:`~approxeq.approximate.equivariant_component`). With ``w = 0`` the layer is the average
of ``L`` ordinary convolutions, hence exactly translation equivariant (on the grid lattice).
In training ``w`` is dropped per task with probability ``p``; a :class:`RelaxedCNN` draws one
mask per task and applies it to every layer, so a dropped task sees the whole equivariant
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from approxeq.approximate.fixed_inputs import FixedInput, task_dropout_mask
from approxeq.nn.cnn import CNN, UNet, build_cnn, make_conv


class RelaxedConvBlock(nn.Module):
    """ReLU, then a relaxed convolution with ``num_basis`` filter banks (a drop-in replacement
    for :class:`~approxeq.nn.cnn.ConvBlock`).

    Args:
        dim: grid dimension (1 or 2). in_channels, out_channels: channels. kernel_size: odd.
        stride: 1, or 2 to halve the grid. transpose: stride-2 transposed (doubles the grid).
        num_basis: number of filter banks ``L``. domain: ``[(low, high)] * dim`` box outside
            which ``w = 0``. hidden: width of the MLP of ``w``. p: per-task dropout probability
            of ``w`` in training (used when no shared mask is passed).
        fourier_features: Fourier features of the location fed to ``w`` (0 = raw location).

    Shapes: ``forward(h, coords, keep=None)`` maps channels-first ``h [b, in_channels,
    *grid_in]`` to ``[b, out_channels, *grid_out]``; ``coords [*grid_out, dim]`` are the
    locations of the output grid points; ``keep [b, 1, 1]`` is an optional per-task mask for
    ``w`` (then used instead of this block's own dropout).
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int = 1, transpose: bool = False, num_basis: int = 3,
                 domain: Sequence[Sequence[float]] | Sequence[float] = (-2.0, 2.0),
                 hidden: int = 32, p: float = 0.5, fourier_features: int = 0) -> None:
        super().__init__()
        if not isinstance(num_basis, int) or num_basis < 1:
            raise ValueError(f"num_basis: expected an int >= 1, got {num_basis!r}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
        self.dim, self.out_channels, self.num_basis, self.p = dim, out_channels, num_basis, p
        self.act = nn.ReLU()
        self.conv = make_conv(dim, in_channels, out_channels * num_basis, kernel_size,
                              stride=stride, transpose=transpose)
        # Dropout is applied here (per task, shared across layers when a mask is passed), so the
        # fixed input itself never drops.
        self.relaxed_weights = FixedInput(dim, num_basis, domain, hidden=hidden, p=0.0,
                                          fourier_features=fourier_features)

    def weights(self, coords: Tensor, batch: int, keep: Tensor | None = None) -> Tensor:
        """The mixing weights ``w`` at ``coords [*grid, dim]``: ``[batch or 1, *grid, L]``
        (zero outside the domain, while zeroed, and for dropped tasks)."""
        if coords.shape[-1] != self.dim:
            raise ValueError(f"coords: expected [*grid, {self.dim}], got {tuple(coords.shape)}")
        grid = coords.shape[:-1]
        # w depends on location only, so it is evaluated once and broadcast over the batch.
        w = self.relaxed_weights(coords.reshape(1, -1, self.dim)).reshape(1, *grid, self.num_basis)
        if keep is None and self.training and self.p > 0:
            keep = task_dropout_mask(batch, self.p, dtype=w.dtype, device=w.device)
        if keep is not None:
            if keep.numel() != batch:
                raise ValueError(f"keep: expected one mask value per task ({batch}), got shape "
                                 f"{tuple(keep.shape)}")
            w = w * keep.reshape(batch, *([1] * (len(grid) + 1))).to(w.dtype)
        return w

    def forward(self, h: Tensor, coords: Tensor | None = None, keep: Tensor | None = None,
                **kwargs) -> Tensor:
        if coords is None:
            raise ValueError("coords: a relaxed convolution needs the locations of its output "
                             "grid points [*grid, dim], got None")
        a = self.conv(self.act(h))
        b, grid = a.shape[0], a.shape[2:]
        if tuple(coords.shape[:-1]) != tuple(grid):
            raise ValueError(f"coords: expected [{', '.join(map(str, grid))}, {self.dim}] to match "
                             f"the output grid, got {tuple(coords.shape)}")
        a = a.reshape(b, self.num_basis, self.out_channels, *grid)
        w = self.weights(coords, b, keep).movedim(-1, 1).unsqueeze(2)  # [b|1, L, 1, *grid]
        return (a * (1 + w)).mean(1)


class RelaxedCNN(nn.Module):
    """A :class:`~approxeq.nn.cnn.CNN` (``kind="conv"``) or :class:`~approxeq.nn.cnn.UNet`
    (``kind="unet"``) of :class:`RelaxedConvBlock` s, with one dropout mask per task shared by
    every layer.

    Args:
        kind: ``"conv"`` or ``"unet"``. dim, in_channels, channels, num_layers, kernel_size: as
            the CNN. num_basis, domain, hidden, p, fourier_features: as
            :class:`RelaxedConvBlock`.

    Shapes: ``forward(z, coords)`` maps ``z [b, *grid, in_channels]`` with grid coordinates
    ``coords [*grid, dim]`` to ``[b, *grid, channels]``.
    """

    def __init__(self, kind: str, dim: int, in_channels: int, channels: int = 32,
                 num_layers: int = 5, kernel_size: int = 9, *, num_basis: int = 3,
                 domain: Sequence[Sequence[float]] | Sequence[float] = (-2.0, 2.0),
                 hidden: int = 32, p: float = 0.5, fourier_features: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
        self.p = p
        block = partial(RelaxedConvBlock, num_basis=num_basis, domain=domain, hidden=hidden, p=p,
                        fourier_features=fourier_features)
        self.net: CNN | UNet = build_cnn(kind, dim, in_channels, channels, num_layers,
                                         kernel_size, block=block)
        self.grid_multiple = self.net.grid_multiple
        # the mixing weights act at each output cell only: the network's reach is its CNN's
        self.receptive_field = self.net.receptive_field

    def forward(self, z: Tensor, coords: Tensor | None = None, *,
                generator: torch.Generator | None = None) -> Tensor:
        keep = None
        if self.training and self.p > 0:
            keep = task_dropout_mask(z.shape[0], self.p, generator=generator, dtype=z.dtype,
                                     device=z.device)
        return self.net(z, coords, keep=keep)
