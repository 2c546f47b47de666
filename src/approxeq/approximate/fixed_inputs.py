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

from approxeq.approximate.grid_encoding import GridEncoding


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


#: the fixed-input parameterisations (``FixedInput(kind=...)``, the ``fixed_input`` option)
FIXED_INPUT_KINDS = ("mlp", "grid", "grid-linear")


class FixedInput(SymmetryBreaking):
    """A learned fixed input ``t: R^dim_x -> R^num_channels``, in one of three parameterisations
    (``kind``):

    * ``"mlp"`` (the paper's): ``t(x) = MLP(x)`` (optionally of sin/cos Fourier features of
      ``x`` with log-spaced frequencies), a 2-hidden-layer ReLU MLP of width ``hidden``.
    * ``"grid"``: a learned multi-resolution grid over the domain box
      (:class:`~approxeq.approximate.grid_encoding.GridEncoding`: ``grid_levels`` levels from
      ``grid_coarsest`` to ``grid_finest`` cells per axis, ``grid_features`` values per vertex,
      zero-initialised, (bi)linearly interpolated) into the same 2-hidden-layer MLP head.
    * ``"grid-linear"``: the same grid into a bias-free linear map to the channels (so ``t``
      starts at exactly zero and is piecewise (bi)linear in ``x``).

    Every kind keeps the contract:

    * exactly zero outside the open box ``domain`` (by default the training input window), so
      the model falls back to its equivariant component off the training region;
    * in training, with probability ``p`` per task, all channels are dropped together (one
      Bernoulli mask per batch element, no rescaling), so the equivariant component is trained
      too; no dropout at evaluation;
    * zero everywhere while :attr:`zeroed` (inside ``equivariant_component``);
    * a function of the absolute location ``x`` only.

    ``grid_smoothness > 0`` adds ``grid_smoothness`` times the grid's roughness (mean squared
    difference of neighbouring vertex values, summed over levels and axes) to the training loss
    through :meth:`regularization` (gathered by
    :func:`~approxeq.approximate.regularization_loss`). ``lr_scale`` multiplies the learning
    rate of this module's parameters (the training loop puts them in their own AdamW group, the
    grid tables without weight decay).

    Args:
        dim_x: input dimension. num_channels: number of fixed-input channels ``B``.
        domain: ``[(low, high)] * dim_x`` or one ``(low, high)`` pair for every dimension.
        hidden: MLP width. p: dropout probability per task (``0 <= p < 1``).
        fourier_features: number of frequencies per input dimension (``0`` = raw location;
            ``kind="mlp"`` only).
        kind: ``"mlp"``, ``"grid"`` or ``"grid-linear"``. grid_levels, grid_coarsest,
            grid_finest, grid_features: the grid (grid kinds only). grid_smoothness: weight of
            the roughness penalty. lr_scale: learning-rate multiplier.

    Shapes: ``forward(x)`` maps ``[batch, n, dim_x]`` to ``[batch, n, num_channels]``.
    """

    def __init__(self, dim_x: int, num_channels: int, domain=(-2.0, 2.0), *, hidden: int = 128,
                 p: float = 0.5, fourier_features: int = 0, kind: str = "mlp",
                 grid_levels: int = 6, grid_coarsest: int = 4, grid_finest: int = 128,
                 grid_features: int = 4, grid_smoothness: float = 0.0,
                 lr_scale: float = 1.0) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels: expected >= 1, got {num_channels}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
        if kind not in FIXED_INPUT_KINDS:
            choices = ", ".join(map(repr, FIXED_INPUT_KINDS))
            raise ValueError(f"fixed_input_kind: expected one of {choices}, got {kind!r}")
        if kind != "mlp" and fourier_features:
            raise ValueError(f"fourier_features: the {kind!r} fixed input reads the grid, not "
                             f"Fourier features; expected 0, got {fourier_features}")
        if not (grid_smoothness >= 0 and math.isfinite(grid_smoothness)):
            raise ValueError(f"grid_smoothness: expected a finite number >= 0, got "
                             f"{grid_smoothness}")
        if not (lr_scale > 0 and math.isfinite(lr_scale)):
            raise ValueError(f"fixed_input_lr: expected a finite number > 0, got {lr_scale}")
        self.dim_x, self.num_channels, self.p, self.kind = dim_x, num_channels, p, kind
        self.lr_scale, self.grid_smoothness = float(lr_scale), float(grid_smoothness)
        box = _as_box(domain, dim_x)
        self.register_buffer("domain", box.float())
        self.fourier_features = fourier_features
        if kind != "mlp":
            self.grid = GridEncoding(box, levels=grid_levels, coarsest=grid_coarsest,
                                     finest=grid_finest, features=grid_features)
            n_in = self.grid.out_features
            if kind == "grid-linear":
                self.head = nn.Linear(n_in, num_channels, bias=False)
            else:
                self.head = _mlp(n_in, hidden, num_channels)
            return
        if fourier_features:
            # wavelengths log-spaced from the box width down to 1/64 of it
            width = float((box[:, 1] - box[:, 0]).max())
            freqs = 2 * math.pi / (width * torch.logspace(0, -math.log10(64), fourier_features))
            self.register_buffer("freqs", freqs.float())
            n_in = 2 * dim_x * fourier_features
        else:
            n_in = dim_x
        self.mlp = _mlp(n_in, hidden, num_channels)

    def inside(self, x: Tensor) -> Tensor:
        """Boolean ``[batch, n]``: whether each location lies in the open domain box."""
        lo, hi = self.domain[:, 0].to(x.dtype), self.domain[:, 1].to(x.dtype)
        return ((x > lo) & (x < hi)).all(-1)

    def features(self, x: Tensor) -> Tensor:
        if self.kind != "mlp":
            return self.grid(x)
        if not self.fourier_features:
            return x
        centre = self.domain.mean(-1).to(x.dtype)
        phase = (x - centre).unsqueeze(-1) * self.freqs.to(x.dtype)  # [b, n, dx, F]
        return torch.cat([phase.sin(), phase.cos()], -1).flatten(-2)

    def raw(self, x: Tensor) -> Tensor:
        """``t(x)`` before the box mask, dropout and zeroing: ``[batch, n, num_channels]``."""
        head = self.mlp if self.kind == "mlp" else self.head
        return head(self.features(x))

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim_x:
            raise ValueError(f"x: expected [batch, n, {self.dim_x}], got {tuple(x.shape)}")
        if self.zeroed:
            return x.new_zeros(*x.shape[:-1], self.num_channels)
        t = self.raw(x) * self.inside(x).unsqueeze(-1).to(x.dtype)
        if self.training and self.p > 0:
            t = t * task_dropout_mask(x.shape[0], self.p, generator=generator, dtype=x.dtype,
                                      device=x.device)
        return t

    def regularization(self) -> Tensor | None:
        """The smoothness penalty to add to the training loss (``None`` when there is none)."""
        if self.kind == "mlp" or self.grid_smoothness == 0:
            return None
        return self.grid_smoothness * self.grid.roughness()

    def optimizer_overrides(self) -> list[tuple[list[nn.Parameter], float, float | None]]:
        """``(parameters, lr multiplier, weight decay or None for the run's)`` groups the
        training loop gives their own AdamW settings: the grid tables never decay (weight decay
        would pull the learned map towards zero), and ``lr_scale`` applies to every parameter.
        Empty for the default (an MLP at the run's learning rate), so the optimiser is as
        before."""
        if self.kind == "mlp":
            return [] if self.lr_scale == 1.0 else [(list(self.parameters()), self.lr_scale, None)]
        head = list(self.head.parameters())
        return [(list(self.grid.parameters()), self.lr_scale, 0.0),
                (head, self.lr_scale, None)]


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, n_out))
