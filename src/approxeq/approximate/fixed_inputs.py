"""Fixed inputs: learned functions of location that let an equivariant model break its symmetry.

An approximately equivariant model is a jointly equivariant model ``E(D, t)`` whose extra
input ``t`` is frozen at a learned function of location (Ashman et al., 2024). Setting ``t = 0``
recovers an exactly equivariant model, the *equivariant component*. Every module that carries
symmetry-breaking parameters derives from :class:`SymmetryBreaking`, so that
:func:`~approxeq.approximate.equivariant_component` can find and silence them all.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class SymmetryBreaking(nn.Module):
    """Base class of modules whose output breaks the symmetry of the model they live in.

    A subclass must return exactly zero (or its documented neutral value) from ``forward``
    while :attr:`zeroed` is true. The counter is a depth so that
    :func:`~approxeq.approximate.equivariant_component` can be nested.
    """

    def __init__(self) -> None:
        super().__init__()
        self._zero_depth = 0
        self._zero_lock = threading.Lock()

    @property
    def zeroed(self) -> bool:
        return self._zero_depth > 0

    def _push_zero(self) -> None:
        with self._zero_lock:
            self._zero_depth += 1

    def _pop_zero(self) -> None:
        with self._zero_lock:
            self._zero_depth = max(self._zero_depth - 1, 0)

    def __getstate__(self):  # locks cannot be pickled (deepcopy, torch.save of whole modules)
        state = self.__dict__.copy()
        state.pop("_zero_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._zero_lock = threading.Lock()


def _as_box(domain: Sequence[Sequence[float]] | Sequence[float] | Tensor, dim_x: int) -> Tensor:
    box = torch.as_tensor(domain, dtype=torch.float64)
    if box.dim() == 1 and box.numel() == 2:
        box = box.expand(dim_x, 2)
    if box.shape != (dim_x, 2):
        raise ValueError(f"domain: expected [(low, high)] * dim_x = {dim_x} bounds, got shape "
                         f"{tuple(box.shape)}")
    if not (box[:, 0] < box[:, 1]).all():
        raise ValueError(f"domain: every low must be below its high, got {box.tolist()}")
    return box.clone()


def task_dropout_mask(batch: int, p: float, *, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """One Bernoulli(1 - p) keep-mask per task, shape ``[batch, 1, 1]`` (no rescaling)."""
    keep = torch.rand(batch, 1, 1, generator=generator, device=device) >= p
    return keep.to(dtype)


class FixedInput(SymmetryBreaking):
    """A learned fixed input ``t: R^dim_x -> R^num_channels``.

    * ``t(x) = MLP(x)`` (optionally of sin/cos Fourier features of ``x`` with log-spaced
      frequencies), a 2-hidden-layer ReLU MLP of width ``hidden``.
    * Exactly zero outside the open box ``domain`` (by default the training input window), so
      the model falls back to its equivariant component off the training region.
    * In training, with probability ``p`` per task, all channels are dropped together (one
      Bernoulli mask per batch element, no rescaling), so the equivariant component is trained
      too. No dropout at evaluation.
    * Zero everywhere while :attr:`zeroed` (inside ``equivariant_component``).

    Args:
        dim_x: input dimension. num_channels: number of fixed-input channels ``B``.
        domain: ``[(low, high)] * dim_x`` or one ``(low, high)`` pair for every dimension.
        hidden: MLP width. p: dropout probability per task (``0 <= p < 1``).
        fourier_features: number of frequencies per input dimension (``0`` = raw location).

    Shapes: ``forward(x)`` maps ``[batch, n, dim_x]`` to ``[batch, n, num_channels]``.
    """

    def __init__(self, dim_x: int, num_channels: int, domain=(-2.0, 2.0), *, hidden: int = 128,
                 p: float = 0.5, fourier_features: int = 0) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels: expected >= 1, got {num_channels}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
        self.dim_x, self.num_channels, self.p = dim_x, num_channels, p
        box = _as_box(domain, dim_x)
        self.register_buffer("domain", box.float())
        self.fourier_features = fourier_features
        if fourier_features:
            # wavelengths log-spaced from the box width down to 1/64 of it
            width = float((box[:, 1] - box[:, 0]).max())
            freqs = 2 * math.pi / (width * torch.logspace(0, -math.log10(64), fourier_features))
            self.register_buffer("freqs", freqs.float())
            n_in = 2 * dim_x * fourier_features
        else:
            n_in = dim_x
        self.mlp = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_channels))

    def inside(self, x: Tensor) -> Tensor:
        """Boolean ``[batch, n]``: whether each location lies in the open domain box."""
        lo, hi = self.domain[:, 0].to(x.dtype), self.domain[:, 1].to(x.dtype)
        return ((x > lo) & (x < hi)).all(-1)

    def features(self, x: Tensor) -> Tensor:
        if not self.fourier_features:
            return x
        centre = self.domain.mean(-1).to(x.dtype)
        phase = (x - centre).unsqueeze(-1) * self.freqs.to(x.dtype)  # [b, n, dx, F]
        return torch.cat([phase.sin(), phase.cos()], -1).flatten(-2)

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim_x:
            raise ValueError(f"x: expected [batch, n, {self.dim_x}], got {tuple(x.shape)}")
        if self.zeroed:
            return x.new_zeros(*x.shape[:-1], self.num_channels)
        t = self.mlp(self.features(x)) * self.inside(x).unsqueeze(-1).to(x.dtype)
        if self.training and self.p > 0:
            t = t * task_dropout_mask(x.shape[0], self.p, generator=generator, dtype=x.dtype,
                                      device=x.device)
        return t
