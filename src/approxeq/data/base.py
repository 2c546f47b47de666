"""Task generators: the interface every source of neural-process tasks implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from approxeq.np.batch import Batch


class TaskGenerator(ABC):
    """A distribution over regression tasks.

    ``sample(batch_size, generator)`` draws a fresh :class:`~approxeq.np.Batch`; all randomness
    comes from ``generator`` so that a seed fixes the tasks. ``fixed_set`` gives the same list of
    batches for the same seed on every machine and run (validation and test sets).
    """

    dim_x: int
    dim_y: int

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """One batch of ``batch_size`` tasks."""

    def fixed_set(self, n_tasks: int, batch_size: int, seed: int) -> list[Batch]:
        """``n_tasks`` tasks in batches of ``batch_size`` (last one smaller), fixed by ``seed``."""
        if n_tasks < 1 or batch_size < 1:
            raise ValueError(f"n_tasks and batch_size must be >= 1, got {n_tasks}, {batch_size}")
        g = torch.Generator().manual_seed(seed)
        out, left = [], n_tasks
        while left > 0:
            out.append(self.sample(min(batch_size, left), g))
            left -= batch_size
        return out
