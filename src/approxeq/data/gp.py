"""Synthetic regression tasks: GPs (with an exact oracle), the sawtooth process and mixtures.

Use :func:`gp_task` for the standard presets and :func:`ood` for their out-of-distribution
versions. Every generator draws all randomness from the ``torch.Generator`` passed to
``sample``, so ``fixed_set(n, batch_size, seed)`` is reproducible.

Inputs are uniform on boxes: context inputs in ``context_range``, target inputs in
``target_range``; the number of context (and target) points is uniform on its range and shared
within a batch. Outputs are computed in float64 and returned in ``dtype`` (float32 by default);
the oracle is evaluated on the rounded data the model sees.
"""

from __future__ import annotations

import copy
import functools
import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from approxeq.data.base import TaskGenerator
from approxeq.data.kernel_priors import (
    FixedKernel,
    KernelMixture,
    KernelPrior,
    KernelSampler,
    LogUniformKernelPrior,
    SampledKernel,
)
from approxeq.data.kernels import EQ, Gibbs, Kernel, Matern52, Periodic, WeaklyPeriodic
from approxeq.data.oracle import float32_noisy_cholesky, noisy_cholesky
from approxeq.np.batch import Batch

#: ``GPGenerator(sample_precision=...)``: the exact float64 draws (default) or the float32 ones
SAMPLE_PRECISIONS = ("float64", "float32")
#: the float32 sampler factorises in float64 below this noise variance (noise std 0.032): the
#: float32 factor's error grows as the covariance nears singular
FLOAT32_MIN_NOISE_VARIANCE = 1e-3

Range = Sequence[float] | Sequence[Sequence[float]]
Count = int | Sequence[int]


# ----------------------------------------------------------------------------- generators

def _as_box(r: Range, dim_x: int, name: str) -> Tensor:
    """``[dim_x, 2]`` float64 box from ``(lo, hi)`` or one ``(lo, hi)`` per dimension."""
    t = torch.as_tensor(r, dtype=torch.float64)
    if t.shape == (2,):
        t = t.expand(dim_x, 2).clone()
    if t.shape != (dim_x, 2) or not bool((t[:, 0] <= t[:, 1]).all()):
        raise ValueError(f"{name}: expected (lo, hi) or {dim_x} pairs (lo, hi) with lo <= hi, "
                         f"got {r}")
    return t


def _as_count(c: Count, name: str, minimum: int) -> tuple[int, int]:
    lo, hi = (c, c) if isinstance(c, int) else tuple(int(v) for v in c)
    if not minimum <= lo <= hi:
        raise ValueError(f"{name}: expected an int or (min, max) with {minimum} <= min <= max, "
                         f"got {c}")
    return lo, hi


class SyntheticGenerator(TaskGenerator):
    """Shared machinery: input windows, point counts, dtype, shifting.

    Args:
        dim_x, dim_y: input and output dimensions.
        num_context: ``(min, max)`` context points per batch (``min`` may be 0), or an int.
        num_target: ``(min, max)`` or an int.
        context_range, target_range: ``(lo, hi)`` for every dimension or one pair per dimension.
        dtype: dtype of the returned batch.
        name: label used in reports.
    """

    has_oracle = False

    def __init__(self, dim_x: int = 1, dim_y: int = 1, num_context: Count = (1, 64),
                 num_target: Count = 128, context_range: Range = (-2.0, 2.0),
                 target_range: Range = (-4.0, 4.0), dtype: torch.dtype = torch.float32,
                 name: str = "synthetic") -> None:
        if dim_x < 1 or dim_y < 1:
            raise ValueError(f"dim_x, dim_y: expected >= 1, got {dim_x}, {dim_y}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
        self.dim_x, self.dim_y, self.dtype, self.name = dim_x, dim_y, dtype, name
        self.num_context = _as_count(num_context, "num_context", 0)
        self.num_target = _as_count(num_target, "num_target", 1)
        self.context_range = _as_box(context_range, dim_x, "context_range")
        self.target_range = _as_box(target_range, dim_x, "target_range")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim_x={self.dim_x}, "
                f"dim_y={self.dim_y}, num_context={self.num_context}, "
                f"num_target={self.num_target}, context_range={self.context_range.tolist()}, "
                f"target_range={self.target_range.tolist()})")

    def shifted(self, shift: float | Sequence[float]) -> SyntheticGenerator:
        """A copy with both input windows moved by ``shift`` (float or one per dimension); the
        process itself is unchanged."""
        s = torch.as_tensor(shift, dtype=torch.float64).expand(self.dim_x)[:, None]
        out = copy.copy(self)
        out.context_range = self.context_range + s
        out.target_range = self.target_range + s
        return out

    def with_oracle(self, oracle: bool) -> SyntheticGenerator:
        """A copy that does (or does not) compute oracle log-likelihoods (no-op without oracle)."""
        out = copy.copy(self)
        if self.has_oracle:
            out.oracle = oracle
        return out

    def _round(self, t: Tensor) -> Tensor:
        """Round float64 to the output dtype and back, so the oracle sees the model's data."""
        return t.to(self.dtype).to(torch.float64)

    def _inputs(self, batch_size: int, n: int, box: Tensor, generator: torch.Generator) -> Tensor:
        u = torch.rand(batch_size, n, self.dim_x, generator=generator, dtype=torch.float64)
        return self._round(box[:, 0] + u * (box[:, 1] - box[:, 0]))

    @staticmethod
    def _count(lohi: tuple[int, int], generator: torch.Generator) -> int:
        return int(torch.randint(lohi[0], lohi[1] + 1, (1,), generator=generator))

    @abstractmethod
    def _outputs(self, x: Tensor, n_context: int,
                 generator: torch.Generator) -> tuple[Tensor, dict | None]:
        """Float64 outputs ``[batch, n, dim_y]`` at float64 inputs ``x: [batch, n, dim_x]``
        (context first), and the batch's ``aux``."""

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """``batch_size`` tasks: ``xc [batch, n_context, dim_x]``, ``yc [batch, n_context, dim_y]``,
        ``xt [batch, n_target, dim_x]``, ``yt [batch, n_target, dim_y]``."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        g = generator if generator is not None else torch.default_generator
        nc, nt = self._count(self.num_context, g), self._count(self.num_target, g)
        xc = self._inputs(batch_size, nc, self.context_range, g)
        xt = self._inputs(batch_size, nt, self.target_range, g)
        y, aux = self._outputs(torch.cat([xc, xt], dim=1), nc, g)
        d = self.dtype
        return Batch(xc=xc.to(d), yc=y[:, :nc].to(d), xt=xt.to(d), yt=y[:, nc:].to(d), meta=aux)


class GPGenerator(SyntheticGenerator):
    """Tasks from a GP prior plus Gaussian noise, with the exact oracle in ``Batch.aux``.

    Per batch a kernel is drawn from ``kernel`` (a fixed :class:`Kernel` or a
    :class:`KernelPrior`), then ``y = f(x) + noise_std * eps`` with ``f ~ GP(0, k)`` jointly at
    context and target inputs (``dim_y`` independent GPs), in float64 with ``jitter`` on the
    diagonal (also seen by the oracle, so it stays exact).

    ``sample_precision="float32"`` (opt-in) evaluates the kernel and factorises the covariance
    in float32 instead (with subnormal numbers flushed to 0 during the factorisation): about
    half the default's cost for the Gibbs tasks (``benchmarks/README.md``), the same
    distribution up to float32 rounding of the covariance (far below the noise variance of the
    presets), but not the same draws bit for bit, so tables measured with the default stay
    valid only with the default.
    It consumes the generator's random numbers exactly as the default does (the inputs are the
    same), factorises in float64 where the noise variance is below 1e-3 (noise std 0.032) or the
    float32 factorisation fails, and leaves the oracle in float64.

    ``Batch.aux`` holds ``"kernel"`` (the kernel drawn for the batch), ``"oracle"`` (the
    :class:`GPOracle` of the batch, e.g. for plots: ``aux["oracle"].posterior(xc, yc, x)``) and,
    unless ``oracle=False`` (saves time in training), ``"gt_loglik"`` and ``"gt_loglik_joint"``:
    float64 ``[batch]`` per-point and joint oracle log-likelihoods of the targets given the
    context, normalised per target point (see :mod:`approxeq.data.oracle`).

    Other arguments: see :class:`SyntheticGenerator`.
    """

    has_oracle = True

    def __init__(self, kernel: Kernel | KernelPrior | KernelSampler, noise_std: float = 0.1,
                 dim_x: int = 1, dim_y: int = 1, num_context: Count = (1, 64),
                 num_target: Count = 128, context_range: Range = (-2.0, 2.0),
                 target_range: Range = (-4.0, 4.0), *, oracle: bool = True, jitter: float = 1e-6,
                 dtype: torch.dtype = torch.float32, name: str = "gp",
                 sample_precision: str = "float64") -> None:
        super().__init__(dim_x, dim_y, num_context, num_target, context_range, target_range,
                         dtype, name)
        if noise_std < 0:
            raise ValueError(f"noise_std: expected >= 0, got {noise_std}")
        if sample_precision not in SAMPLE_PRECISIONS:
            raise ValueError(f"sample_precision: expected one of {SAMPLE_PRECISIONS}, "
                             f"got {sample_precision!r}")
        self.sample_precision = sample_precision
        if isinstance(kernel, KernelPrior):
            self.kernel_prior = kernel
        elif isinstance(kernel, Kernel):
            self.kernel_prior = FixedKernel(kernel)
        elif callable(kernel):
            self.kernel_prior = SampledKernel(kernel)
        else:
            raise TypeError(f"kernel: expected a Kernel, a KernelPrior or a callable "
                            f"(batch_size, generator) -> Kernel, got {type(kernel).__name__}")
        self.noise_std, self.oracle, self.jitter = float(noise_std), oracle, jitter

    def _outputs(self, x: Tensor, n_context: int,
                 generator: torch.Generator) -> tuple[Tensor, dict | None]:
        kernel = self.kernel_prior.sample(x.shape[0], generator)
        chol, y = None, None
        if self.sample_precision == "float32":
            y = self._draw_float32(kernel, x, generator)
        if y is None:
            chol = noisy_cholesky(kernel, self.noise_std, x, self.jitter)
            eps = torch.randn(*x.shape[:2], self.dim_y, generator=generator, dtype=torch.float64)
            y = self._round(chol @ eps)
        gp_oracle = self.kernel_prior.oracle(kernel, self.noise_std, self.jitter)
        aux: dict = {"oracle": gp_oracle, "kernel": kernel}
        if self.oracle:
            nc = n_context
            known = None if chol is None else (kernel, chol)
            ll = gp_oracle.loglik(x[:, :nc], y[:, :nc], x[:, nc:], y[:, nc:], known=known)
            aux["gt_loglik"], aux["gt_loglik_joint"] = ll.marginal, ll.joint
        return y, aux

    def _draw_float32(self, kernel: Kernel, x: Tensor, generator: torch.Generator
                      ) -> Tensor | None:
        """Float64 outputs ``[batch, n, dim_y]`` drawn with a float32 covariance factor, or
        ``None`` (no random numbers used) where the noise is too small for float32 or that
        factorisation fails."""
        if self.noise_std**2 + self.jitter < FLOAT32_MIN_NOISE_VARIANCE:
            return None
        chol = float32_noisy_cholesky(kernel, self.noise_std, x, self.jitter)
        if chol is None:
            return None
        eps = torch.randn(*x.shape[:2], self.dim_y, generator=generator, dtype=torch.float64)
        return self._round((chol @ eps.to(torch.float32)).to(torch.float64))


class SawtoothGenerator(SyntheticGenerator):
    """The nps sawtooth process: ``f(x) = (freq (d . x - phase)) mod 1`` plus noise, with per task
    and output a frequency uniform on ``freq_range``, a direction ``d`` uniform on the unit
    sphere and a phase uniform on one period. No oracle (``aux`` is ``None``).
    """

    def __init__(self, freq_range: Sequence[float] = (2.0, 4.0), noise_std: float = 0.0,
                 dim_x: int = 1, dim_y: int = 1, num_context: Count = (1, 64),
                 num_target: Count = 128, context_range: Range = (-2.0, 2.0),
                 target_range: Range = (-4.0, 4.0), *, dtype: torch.dtype = torch.float32,
                 name: str = "sawtooth") -> None:
        super().__init__(dim_x, dim_y, num_context, num_target, context_range, target_range,
                         dtype, name)
        lo, hi = (float(v) for v in freq_range)
        if not 0 < lo <= hi:
            raise ValueError(f"freq_range: expected 0 < lo <= hi, got {freq_range}")
        if noise_std < 0:
            raise ValueError(f"noise_std: expected >= 0, got {noise_std}")
        self.freq_range, self.noise_std = (lo, hi), float(noise_std)

    def _outputs(self, x: Tensor, n_context: int,
                 generator: torch.Generator) -> tuple[Tensor, dict | None]:
        b, n = x.shape[0], x.shape[1]
        shape = (b, 1, self.dim_y)
        lo, hi = self.freq_range
        freq = lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)
        direction = torch.randn(b, self.dim_x, self.dim_y, generator=generator, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True)
        phase = torch.rand(shape, generator=generator, dtype=torch.float64) / freq
        f = torch.remainder(freq * (x @ direction - phase), 1.0)
        noise = torch.randn(b, n, self.dim_y, generator=generator, dtype=torch.float64)
        return self._round(f + self.noise_std * noise), None


class MixtureGenerator(TaskGenerator):
    """One of ``generators`` per batch with probabilities ``weights`` (uniform by default).

    The oracle log-likelihoods are kept only if every component has an oracle, so that the
    ``aux`` of a fixed set is uniform across its batches.
    """

    def __init__(self, generators: Sequence[TaskGenerator], weights: Sequence[float] | None = None,
                 name: str = "mixture") -> None:
        gens = list(generators)
        if not gens:
            raise ValueError("generators: expected at least one generator, got none")
        if len({(g.dim_x, g.dim_y) for g in gens}) != 1:
            raise ValueError(f"generators: expected equal (dim_x, dim_y), got "
                             f"{[(g.dim_x, g.dim_y) for g in gens]}")
        self.has_oracle = all(getattr(g, "has_oracle", False) for g in gens)
        if not self.has_oracle:
            # Saves the oracle's cost in the components that have one.
            gens = [g.with_oracle(False) if hasattr(g, "with_oracle") else g for g in gens]
        w = [1.0] * len(gens) if weights is None else [float(v) for v in weights]
        if len(w) != len(gens) or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"weights: expected {len(gens)} non-negative weights, got {weights}")
        self.generators, self.weights, self.name = gens, [v / sum(w) for v in w], name
        self.dim_x, self.dim_y = gens[0].dim_x, gens[0].dim_y

    def __repr__(self) -> str:
        return f"MixtureGenerator({self.generators}, weights={self.weights})"

    def shifted(self, shift: float | Sequence[float]) -> MixtureGenerator:
        """Every component moved by ``shift`` (see :meth:`SyntheticGenerator.shifted`)."""
        out = copy.copy(self)
        out.generators = [g.shifted(shift) for g in self.generators]
        return out

    def with_oracle(self, oracle: bool) -> MixtureGenerator:
        out = copy.copy(self)
        out.generators = [g.with_oracle(oracle) if hasattr(g, "with_oracle") else g
                          for g in self.generators]
        return out

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        g = generator if generator is not None else torch.default_generator
        i = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), 1, generator=g)
        return self.generators[int(i)].sample(batch_size, g)


def ood(generator: TaskGenerator, shift: float | Sequence[float] = 8.0) -> TaskGenerator:
    """The out-of-distribution version of a synthetic task: the same process with the context
    and target windows moved by ``shift`` (default +8: context [6, 10], targets [4, 12] for the
    1-D presets). Kernels, changepoints and frequencies are unchanged; see :func:`gp_task` for
    what this means per task. With the same seed, a fixed OOD set draws the same random numbers
    as the in-distribution one: its inputs are those tasks' inputs translated by ``shift``
    (paired comparison; for stationary tasks the outputs are the same too)."""
    if not hasattr(generator, "shifted"):
        raise TypeError(f"generator: expected a generator with a shifted() method, got "
                        f"{type(generator).__name__}")
    out = generator.shifted(shift)
    out.name = f"{getattr(generator, 'name', 'task')}-ood"
    return out


_ood = ood  # gp_task's keyword argument `ood` shadows the function


# ----------------------------------------------------------------------------- presets

def _eq(s: Any) -> Kernel:
    return EQ(lengthscale=s)


def _matern52(s: Any) -> Kernel:
    return Matern52(lengthscale=s)


def _periodic(s: Any, period: float) -> Kernel:
    return Periodic(lengthscale=s, period=period)


def _weakly_periodic(s: Any) -> Kernel:
    return WeaklyPeriodic(lengthscale=2 * s, period=s, periodic_lengthscale=1.0)


def gibbs_kernels(changepoints: Sequence[float] = (-1.0, 0.0, 1.0),
                  lengthscales: Sequence[float] = (4.0, 0.1)) -> list[Kernel]:
    """The AE-NP Gibbs kernels: each changepoint in both directions (long lengthscale left of it,
    then right of it); 6 kernels by default."""
    long, short = (float(v) for v in lengthscales)
    return [Gibbs.switching(c, left, right) for c in changepoints
            for left, right in ((long, short), (short, long))]


TASK_NAMES = ("eq", "matern52", "periodic", "weakly-periodic", "sawtooth", "gibbs", "mixture")
_STATIONARY = ("eq", "matern52", "periodic", "weakly-periodic")
_PRESET_KEYS = {
    "eq": {"lengthscale_range", "per_task"},
    "matern52": {"lengthscale_range", "per_task"},
    "periodic": {"lengthscale_range", "per_task", "period"},
    "weakly-periodic": {"lengthscale_range", "per_task"},
    "gibbs": {"changepoints", "lengthscales"},
    "sawtooth": {"freq_range"},
}
_GP_ONLY_KEYS = {"oracle", "jitter", "sample_precision"}


def gp_task(name: str, dim_x: int = 1, *, ood: bool = False, shift: float | Sequence[float] = 8.0,
            **overrides: Any) -> TaskGenerator:
    """A standard synthetic task by name.

    Defaults (TE-TNP / AE-NP protocol): noise std 0.1; 1-64 context points in ``[-2, 2]^dim_x``;
    128 targets in ``[-4, 4]^dim_x``; ``dim_y = 1``. Length-like parameters are multiplied by
    ``sqrt(dim_x)`` for the stationary kernels and the sawtooth, so that typical distances do not
    grow with the dimension (as in nps); the Gibbs kernels are used as they are.

    - ``eq``, ``matern52``: lengthscale log-uniform on ``lengthscale_range = (0.25, 1)``, drawn
      per batch (``per_task=True``: per task).
    - ``periodic``: as above with ``period = 2`` (TE-TNP).
    - ``weakly-periodic``: EQ(2s) x Periodic(lengthscale 1, period s) with ``s`` log-uniform on
      ``lengthscale_range``; ``s = 0.25`` is the nps kernel.
    - ``sawtooth``: nps sawtooth, frequency uniform on ``freq_range = (2, 4)``, noise std 0 by
      default (nps); no oracle.
    - ``gibbs``: AE-NP task, a uniform mixture of the 6 switching-lengthscale Gibbs kernels
      (:func:`gibbs_kernels`, ``changepoints=(-1, 0, 1)``, ``lengthscales=(4.0, 0.1)``), one per
      batch; the oracle is the posterior-weighted mixture of all 6.
    - ``mixture``: one of eq, matern52, weakly-periodic, sawtooth per batch (nps); no oracle,
      because the sawtooth has none.

    ``ood=True`` returns :func:`ood` of the task, both windows moved by ``shift`` (+8 by
    default: context ``[6, 10]``, targets ``[4, 12]``). What that means per task:

    - stationary GPs and the sawtooth: the same distribution over functions (they are
      translation invariant), only at inputs never seen in training. An exactly translation
      equivariant model scores as in distribution; so does the oracle, on average.
    - ``gibbs``: the kernels do not move; the non-stationarity lives around the changepoints in
      ``[-1, 1]``, so on the shifted windows (right of every changepoint for shift > 1, left for
      shift < -3) every Gibbs kernel is a stationary EQ kernel with its far-side lengthscale
      (0.1 or 4.0): the task becomes an equal mixture of two stationary GPs. The oracle is the
      unchanged 6-component mixture, exact on these windows too.
    - ``mixture``: each component shifted as above.

    Args:
        name: one of :data:`TASK_NAMES`.
        dim_x: 1 or 2 (any ``dim_x >= 1`` works).
        overrides: any :class:`GPGenerator` / :class:`SawtoothGenerator` argument (``noise_std``,
            ``num_context``, ``num_target``, ``context_range``, ``target_range``, ``dim_y``,
            ``dtype``, ``oracle``, ``jitter``, ``sample_precision``) and the preset keys named
            above.
    """
    if name not in TASK_NAMES:
        raise ValueError(f"name: expected one of {TASK_NAMES}, got {name!r}")
    task = _mixture_task(dim_x, overrides) if name == "mixture" else \
        _preset_task(name, dim_x, overrides)
    return _ood(task, shift) if ood else task


def _mixture_task(dim_x: int, overrides: dict[str, Any]) -> TaskGenerator:
    """The ``mixture`` task: each part gets the overrides that apply to it."""
    preset_keys = set().union(*_PRESET_KEYS.values())
    parts = []
    for part in ("eq", "matern52", "weakly-periodic", "sawtooth"):
        mine = {k: v for k, v in overrides.items()
                if k in _PRESET_KEYS[part] or k not in preset_keys}
        parts.append(gp_task(part, dim_x, **mine))
    return MixtureGenerator(parts, name="mixture")


def _preset_task(name: str, dim_x: int, overrides: dict[str, Any]) -> TaskGenerator:
    """Every task but the mixture: the preset keys of ``name`` shape its prior, the other
    overrides go to its generator."""
    allowed = _PRESET_KEYS[name]
    unknown = {k for s in _PRESET_KEYS.values() for k in s if k in overrides} - allowed
    if unknown:
        raise ValueError(f"{name}: options {sorted(unknown)} do not apply to this task")
    opts = dict(overrides)
    preset = {k: opts.pop(k) for k in list(opts) if k in allowed}
    factor = math.sqrt(dim_x)
    common = dict(dim_x=dim_x, num_context=(1, 64), num_target=128, context_range=(-2.0, 2.0),
                  target_range=(-4.0, 4.0), name=name)
    common.update(opts)
    if name == "sawtooth":
        for k in _GP_ONLY_KEYS:  # accepted so that callers can treat every task alike
            common.pop(k, None)
        common.setdefault("noise_std", 0.0)
        lo, hi = preset.get("freq_range", (2.0, 4.0))
        return SawtoothGenerator(freq_range=(lo / factor, hi / factor), **common)
    common.setdefault("noise_std", 0.1)
    return GPGenerator(_kernel_prior(name, preset, factor), **common)


def _kernel_prior(name: str, preset: dict[str, Any], factor: float) -> KernelPrior:
    """The kernel prior of a GP task; stationary length-like parameters times ``factor``."""
    if name == "gibbs":
        return KernelMixture(gibbs_kernels(preset.get("changepoints", (-1.0, 0.0, 1.0)),
                                           preset.get("lengthscales", (4.0, 0.1))))
    lo, hi = preset.get("lengthscale_range", (0.25, 1.0))
    build = {"eq": _eq, "matern52": _matern52, "weakly-periodic": _weakly_periodic,
             "periodic": functools.partial(
                 _periodic, period=preset.get("period", 2.0) * factor)}[name]
    return LogUniformKernelPrior(build, lo * factor, hi * factor, preset.get("per_task", False))

__all__ = ["KernelPrior", "FixedKernel", "SampledKernel", "LogUniformKernelPrior", "KernelMixture",
           "SyntheticGenerator", "GPGenerator", "SawtoothGenerator", "MixtureGenerator", "ood",
           "gibbs_kernels", "gp_task", "TASK_NAMES"]
