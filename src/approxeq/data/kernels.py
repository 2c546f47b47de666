"""Covariance functions on batched inputs, for GP task generators and their oracle.

Every kernel maps inputs ``x1: [batch, n, dim_x]`` and ``x2: [batch, m, dim_x]`` to a covariance
matrix ``[batch, n, m]`` in the dtype of the inputs. Hyper-parameters are Python floats (shared by
the batch) or tensors of shape ``[batch]`` (one value per task), so a generator can draw them per
batch or per task without a Python loop.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Param = float | Tensor


def _shape(t: Tensor) -> str:
    return f"[{', '.join(str(s) for s in t.shape)}]"


def _check_inputs(x1: Tensor, x2: Tensor) -> None:
    for name, t in (("x1", x1), ("x2", x2)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            got = _shape(t) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected shape [batch, n, dim_x], got {got}")
    if x1.shape[0] != x2.shape[0] or x1.shape[-1] != x2.shape[-1]:
        raise ValueError(f"x2: expected [{x1.shape[0]}, m, {x1.shape[-1]}] to match x1 "
                         f"{_shape(x1)}, got {_shape(x2)}")


def _param(p: Param, like: Tensor) -> Param:
    """A hyper-parameter that broadcasts against ``[batch, n, m]``: float or ``[batch, 1, 1]``."""
    if isinstance(p, Tensor):
        if p.dim() > 1 or (p.dim() == 1 and p.numel() not in (1, like.shape[0])):
            raise ValueError(f"kernel hyper-parameter: expected a float or a tensor of shape "
                             f"[batch] = [{like.shape[0]}], got {_shape(p)}")
        return p.to(dtype=like.dtype, device=like.device).reshape(-1, 1, 1)
    return float(p)


def _coordinate_differences(x1: Tensor, x2: Tensor):
    """``[batch, n, m]`` differences ``x1_d - x2_d``, one dimension at a time: a 4-D
    ``[batch, n, m, dim_x]`` tensor would cost more memory traffic than the kernels themselves."""
    for d in range(x1.shape[-1]):
        yield d, x1[:, :, d, None] - x2[:, None, :, d]


def _squared_distances(x1: Tensor, x2: Tensor) -> Tensor:
    """``[batch, n, m]`` squared Euclidean distances (exact, no Gram-matrix shortcut)."""
    out = None
    for _, diff in _coordinate_differences(x1, x2):
        out = diff.square_() if out is None else out.add_(diff.square_())
    return out


@functools.lru_cache(maxsize=8)
def _exp_floor(dtype: torch.dtype) -> tuple[float, float]:
    """``(floor, cutoff)`` of :func:`_exp_` below float64: exp is fast for inputs above ``floor``
    (just above the log of the smallest normal number), and ``cutoff = exp(floor)``."""
    floor = math.log(torch.finfo(dtype).tiny) + 0.01
    return floor, float(torch.tensor(floor, dtype=dtype).exp())


def _exp_(t: Tensor) -> Tensor:
    """``t.exp_()``; below float64, results below ``exp(log(tiny) + 0.01)`` (1.01 times the
    smallest normal number ``tiny``) become exactly 0.

    On CPUs exp takes 30-200 times longer for an entry whose result is subnormal or 0 than for
    any other. In float32 an EQ-like weight is subnormal beyond 13 lengthscales (1.3 for the
    Gibbs tasks' 0.1), so most entries of a short-lengthscale covariance are: the inputs are
    clamped to exp's fast range, and what the clamp touched is set to 0 after (three cheap passes,
    no mask), a change below the smallest normal numbers. Float64 is left as it was (the default
    GP draws, bit for bit): it underflows only beyond 38 lengthscales, which few pairs of the
    presets reach, and cutting those cost more than it saved.
    """
    if t.dtype == torch.float64:
        return t.exp_()
    floor, cutoff = _exp_floor(t.dtype)
    return torch.threshold_(t.clamp_min_(floor).exp_(), cutoff, 0.0)


def _scaled(k: Tensor, variance: Param) -> Tensor:
    # In place: fresh [batch, n, m] allocations (page faults) dominate these element-wise kernels.
    return k if isinstance(variance, float) and variance == 1.0 else k.mul_(variance)


class Kernel(ABC):
    """A covariance function ``k(x1, x2)``:
    ``[batch, n, dim_x] x [batch, m, dim_x] -> [batch, n, m]``."""

    def __call__(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        x2 = x1 if x2 is None else x2
        _check_inputs(x1, x2)
        return self.compute(x1, x2)

    @abstractmethod
    def compute(self, x1: Tensor, x2: Tensor) -> Tensor:
        """The covariance ``[batch, n, m]`` (inputs already checked), as a new tensor that the
        caller may modify in place."""

    def stationary(self) -> bool:
        """Whether ``k(x + s, x' + s) = k(x, x')`` for every shift ``s``."""
        return True


@dataclass(frozen=True)
class EQ(Kernel):
    """Exponentiated quadratic (RBF): ``v exp(-|x - x'|^2 / (2 l^2))``."""

    lengthscale: Param = 1.0
    variance: Param = 1.0

    def compute(self, x1: Tensor, x2: Tensor) -> Tensor:
        ls, var = _param(self.lengthscale, x1), _param(self.variance, x1)
        return _scaled(_exp_(_squared_distances(x1, x2).mul_(-0.5 / ls**2)), var)


@dataclass(frozen=True)
class Matern52(Kernel):
    """Matérn-5/2: ``v (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)`` with ``r = |x - x'| / l``."""

    lengthscale: Param = 1.0
    variance: Param = 1.0

    def compute(self, x1: Tensor, x2: Tensor) -> Tensor:
        ls, var = _param(self.lengthscale, x1), _param(self.variance, x1)
        # The clamp keeps the gradient of sqrt finite on the diagonal.
        s5r = _squared_distances(x1, x2).clamp_min_(1e-36).sqrt_().mul_(math.sqrt(5.0) / ls)
        decay = _exp_(s5r.neg())
        return _scaled(s5r.square().div_(3.0).add_(s5r).add_(1.0).mul_(decay), var)


@dataclass(frozen=True)
class Periodic(Kernel):
    """Periodic: ``v exp(-2 sum_d sin^2(pi (x_d - x'_d) / p) / l^2)``.

    With ``l = 1`` this is the EQ kernel applied to ``(cos, sin)(2 pi x / p)``, the form nps uses.
    """

    lengthscale: Param = 1.0
    period: Param = 1.0
    variance: Param = 1.0

    def compute(self, x1: Tensor, x2: Tensor) -> Tensor:
        ls, p, var = (_param(v, x1) for v in (self.lengthscale, self.period, self.variance))
        s = None
        for _, diff in _coordinate_differences(x1, x2):
            term = torch.sin(diff.mul_(math.pi / p)).square_()
            s = term if s is None else s.add_(term)
        return _scaled(_exp_(s.mul_(-2.0 / ls**2)), var)


@dataclass(frozen=True)
class WeaklyPeriodic(Kernel):
    """EQ(``lengthscale``) x Periodic(``periodic_lengthscale``, ``period``), as nps's
    ``EQ().stretch(l) * EQ().periodic(p)``: periodic structure that decorrelates with distance."""

    lengthscale: Param = 1.0
    period: Param = 0.5
    periodic_lengthscale: Param = 1.0
    variance: Param = 1.0

    def compute(self, x1: Tensor, x2: Tensor) -> Tensor:
        envelope = EQ(self.lengthscale, self.variance).compute(x1, x2)
        return envelope.mul_(Periodic(self.periodic_lengthscale, self.period).compute(x1, x2))


@dataclass(frozen=True)
class SwitchingLengthscale:
    """Step lengthscale function: ``left`` where ``x_d < changepoint``, ``right`` elsewhere,
    coordinate-wise. ``left=4.0, right=0.1`` and the reverse are the two AE-NP directions."""

    changepoint: float = 0.0
    left: float = 4.0
    right: float = 0.1

    def __post_init__(self) -> None:
        if self.left <= 0 or self.right <= 0:
            raise ValueError(f"SwitchingLengthscale: left and right must be positive, "
                             f"got {self.left}, {self.right}")

    def __call__(self, x: Tensor) -> Tensor:
        """``x: [batch, n, dim_x] -> [batch, n, dim_x]`` lengthscales."""
        left = torch.full_like(x, self.left)
        return torch.where(x < self.changepoint, left, torch.full_like(x, self.right))


@dataclass(frozen=True)
class Gibbs(Kernel):
    """Gibbs non-stationary kernel with an input-dependent lengthscale ``l_d(x)``:

    ``k(x, x') = v prod_d sqrt(2 l_d(x) l_d(x') / (l_d(x)^2 + l_d(x')^2))
    exp(-sum_d (x_d - x'_d)^2 / (l_d(x)^2 + l_d(x')^2))``.

    Where ``l`` is constant this is the EQ kernel with that lengthscale. ``lengthscale_fn`` maps
    ``[batch, n, dim_x]`` to positive ``[batch, n, dim_x]`` (or ``[batch, n, 1]``), e.g.
    :class:`SwitchingLengthscale`.
    """

    lengthscale_fn: Callable[[Tensor], Tensor]
    variance: Param = 1.0

    @classmethod
    def switching(cls, changepoint: float = 0.0, left: float = 4.0, right: float = 0.1,
                  variance: Param = 1.0) -> Gibbs:
        """The AE-NP kernel: lengthscale ``left`` below ``changepoint``, ``right`` above it."""
        return cls(SwitchingLengthscale(changepoint, left, right), variance)

    def compute(self, x1: Tensor, x2: Tensor) -> Tensor:
        var = _param(self.variance, x1)
        if isinstance(self.lengthscale_fn, SwitchingLengthscale):
            if x1.dtype == torch.float32:
                return _scaled(_exp_(_switching_log_gibbs(self.lengthscale_fn, x1, x2)), var)
            if x1.dtype == torch.float64:
                return _scaled(_switching_gibbs(self.lengthscale_fn, x1, x2), var)
        # A shared lengthscale [batch, n, 1] still enters the prefactor once per dimension.
        l1 = self.lengthscale_fn(x1).expand_as(x1)
        l2 = self.lengthscale_fn(x2).expand_as(x2)
        prefactor, exponent = None, None
        for d, diff in _coordinate_differences(x1, x2):
            a, c = l1[:, :, d, None], l2[:, None, :, d]
            neg_inv_s = torch.sub(-a.square(), c.square()).reciprocal_()  # -1 / (a^2 + c^2)
            quad = diff.square_().mul_(neg_inv_s)
            pre = neg_inv_s.mul_(-2.0 * a).mul_(c).sqrt_()  # reuses the buffer: no allocation
            prefactor = pre if prefactor is None else prefactor.mul_(pre)
            exponent = quad if exponent is None else exponent.add_(quad)
        return _scaled(_exp_(exponent).mul_(prefactor), var)

    def stationary(self) -> bool:
        return False


def _switching_gibbs(fn: SwitchingLengthscale, x1: Tensor, x2: Tensor) -> Tensor:
    """The unit-variance Gibbs kernel with a switching lengthscale ``[batch, n, m]``, bit for bit
    the general formula of :meth:`Gibbs.compute` (the default GP draws), in fewer passes.

    ``-1 / (l^2 + l'^2)`` and the prefactor of a pair take one of four values each: they are
    computed once, by the general formula's own operations, and spread over the pairs by a
    product with the one-hot side of the second point (exact: of the two terms one is the
    entry, the other 0), where the general formula computes them per pair."""
    lengthscales = torch.tensor([fn.left, fn.right], dtype=x1.dtype, device=x1.device)
    a, c = lengthscales[:, None], lengthscales[None, :]
    neg_inv_s = torch.sub(-a.square(), c.square()).reciprocal_()  # [side of x1, side of x2]
    pre = neg_inv_s.clone().mul_(-2.0 * a).mul_(c).sqrt_()
    prefactor, exponent = None, None
    for d, diff in _coordinate_differences(x1, x2):
        left1, side2 = _sides(fn, x1[:, :, d], x2[:, :, d])
        spread = torch.bmm(torch.where(left1, neg_inv_s[0], neg_inv_s[1]), side2)
        quad = diff.square_().mul_(spread)
        # the prefactors in the same buffer: a fresh [batch, n, m] costs page faults
        pre_d = torch.bmm(torch.where(left1, pre[0], pre[1]), side2, out=spread)
        prefactor = pre_d if prefactor is None else prefactor.mul_(pre_d)
        exponent = quad if exponent is None else exponent.add_(quad)
    return _exp_(exponent).mul_(prefactor)


def _sides(fn: SwitchingLengthscale, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    """Which side of the changepoint the points of one coordinate lie on, as ``fn`` decides:
    ``[batch, n, 1]`` bool (``True``: left) for ``x1: [batch, n]`` and the one-hot
    ``[batch, 2, m]`` (left, right) for ``x2: [batch, m]``."""
    left2 = (x2 < fn.changepoint).to(x2.dtype)
    return (x1 < fn.changepoint)[..., None], torch.stack([left2, 1.0 - left2], dim=1)


@functools.lru_cache(maxsize=64)
def _switching_tables(left: float, right: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``-1 / (l^2 + l'^2)`` and the log prefactor ``log sqrt(2 l l' / (l^2 + l'^2))`` of the
    four pairs of lengthscales, ``[2, 2]`` each (0: ``left``, 1: ``right``), computed in float64."""
    ls = torch.tensor([left, right], dtype=torch.float64)
    sq = ls.square()
    inv_s = 1.0 / (sq[:, None] + sq[None, :])
    log_pre = 0.5 * torch.log(2.0 * ls[:, None] * ls[None, :] * inv_s)
    return (-inv_s).to(dtype), log_pre.to(dtype)


def _switching_log_gibbs(fn: SwitchingLengthscale, x1: Tensor, x2: Tensor) -> Tensor:
    """``log k(x1, x2)`` ``[batch, n, m]`` of the unit-variance Gibbs kernel with a switching
    lengthscale, for the float32 samplers: the general formula's values up to float32 rounding,
    in fewer passes over ``[batch, n, m]``.

    With two lengthscales a pair's ``-1 / (l^2 + l'^2)`` and log prefactor take one of four
    values, set by the sides of the changepoint its two points lie on. Per coordinate the
    squared differences are multiplied by the first and the second is added, each spread over
    the pairs by a product with the one-hot side of the second point (exact: of the two terms
    one is the entry, the other 0)."""
    neg_inv_s, log_pre = (t.to(x1.device) for t in _switching_tables(fn.left, fn.right, x1.dtype))
    out = None
    for d, diff in _coordinate_differences(x1, x2):
        left1, side2 = _sides(fn, x1[:, :, d], x2[:, :, d])
        rows_s = torch.where(left1, neg_inv_s[0], neg_inv_s[1])  # [batch, n, 2]
        rows_pre = torch.where(left1, log_pre[0], log_pre[1])
        term = diff.square_().mul_(torch.bmm(rows_s, side2)).baddbmm_(rows_pre, side2)
        out = term if out is None else out.add_(term)
    return out

__all__ = ["Kernel", "EQ", "Matern52", "Periodic", "WeaklyPeriodic", "SwitchingLengthscale",
           "Gibbs"]
