"""Distributions over kernels for the GP task generators: a kernel is drawn once per batch,
and each prior names the oracle that goes with it."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

from approxeq.data.kernels import Kernel
from approxeq.data.oracle import GPOracle, NoiseStd

KernelSampler = Callable[[int, torch.Generator], Kernel]


class KernelPrior(ABC):
    """A distribution over kernels, drawn once per batch, and the oracle that goes with it."""

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> Kernel:
        """A kernel for a batch of ``batch_size`` tasks (hyper-parameters float or ``[batch]``)."""

    def oracle(self, kernel: Kernel, noise_std: NoiseStd, jitter: float) -> GPOracle:
        """The oracle of a batch drawn with ``kernel``: by default that kernel (the posterior
        with known hyper-parameters)."""
        return GPOracle(kernel, noise_std, jitter=jitter)


class FixedKernel(KernelPrior):
    """Always the same kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def sample(self, batch_size: int, generator: torch.Generator) -> Kernel:
        return self.kernel

    def __repr__(self) -> str:
        return f"FixedKernel({self.kernel})"


class SampledKernel(KernelPrior):
    """Wraps a callable ``sampler(batch_size, generator) -> Kernel``; the oracle is the sampled
    kernel. Use a module-level function to keep the generator picklable."""

    def __init__(self, sampler: KernelSampler) -> None:
        self.sampler = sampler

    def sample(self, batch_size: int, generator: torch.Generator) -> Kernel:
        return self.sampler(batch_size, generator)

    def __repr__(self) -> str:
        return f"SampledKernel({self.sampler})"


class LogUniformKernelPrior(KernelPrior):
    """``build(s)`` with a scale ``s`` log-uniform on ``[low, high]``, drawn once per batch
    (``per_task=False``, as in the TE-TNP protocol) or once per task (``s`` is ``[batch]``).

    ``build`` should be a module-level function or a ``functools.partial`` so that the generator
    stays picklable (data-loader workers).
    """

    def __init__(self, build: Any, low: float, high: float, per_task: bool = False) -> None:
        if not 0 < low <= high:
            raise ValueError(f"low, high: expected 0 < low <= high, got {low}, {high}")
        self.build, self.low, self.high, self.per_task = build, low, high, per_task

    def sample(self, batch_size: int, generator: torch.Generator) -> Kernel:
        u = torch.rand(batch_size if self.per_task else 1, generator=generator, dtype=torch.float64)
        s = torch.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.build(s if self.per_task else float(s))

    def __repr__(self) -> str:
        return (f"LogUniformKernelPrior({self.build}, {self.low:g}, {self.high:g}, "
                f"per_task={self.per_task})")


class KernelMixture(KernelPrior):
    """One of ``kernels`` per batch with probabilities ``weights`` (uniform by default).

    The oracle is the whole mixture, each component weighted by its posterior probability given
    the context: the Bayes-optimal predictor when the component is unknown, as in AE-NPs.
    """

    def __init__(self, kernels: Sequence[Kernel], weights: Sequence[float] | None = None) -> None:
        self.kernels = list(kernels)
        if not self.kernels:
            raise ValueError("kernels: expected at least one kernel, got none")
        w = [1.0] * len(self.kernels) if weights is None else [float(v) for v in weights]
        if len(w) != len(self.kernels) or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"weights: expected {len(self.kernels)} non-negative weights with a "
                             f"positive sum, got {weights}")
        self.weights = [v / sum(w) for v in w]

    def sample(self, batch_size: int, generator: torch.Generator) -> Kernel:
        probs = torch.tensor(self.weights, dtype=torch.float64)
        return self.kernels[int(torch.multinomial(probs, 1, generator=generator))]

    def oracle(self, kernel: Kernel, noise_std: NoiseStd, jitter: float) -> GPOracle:
        return GPOracle(self.kernels, noise_std, self.weights, jitter=jitter)

    def __repr__(self) -> str:
        return f"KernelMixture({self.kernels}, weights={self.weights})"


__all__ = ["KernelPrior", "FixedKernel", "SampledKernel", "LogUniformKernelPrior", "KernelMixture",
           "KernelSampler"]
