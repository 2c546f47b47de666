"""The random state of a training run: seeding, and the states a checkpoint stores so that a
resumed run continues the same random streams."""

from __future__ import annotations

import random
from typing import Any

import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed the global torch RNG (and CUDA's) and Python's ``random`` with ``seed``; return a
    fresh CPU ``torch.Generator`` seeded with ``seed`` for drawing tasks."""
    torch.manual_seed(seed)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def capture_rng_state(task_generator: torch.Generator, device: torch.device | None = None, *,
                      task_state: torch.Tensor | None = None) -> dict[str, Any]:
    """The states of the task generator, the global torch RNG, the CUDA RNG of ``device`` and
    Python's ``random``, as a checkpoint-friendly dict. ``task_state`` replaces the task
    generator's own state (for a generator that a prefetcher has moved ahead of the batches
    used)."""
    state: dict[str, Any] = {
        "task": task_generator.get_state() if task_state is None else task_state,
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], task_generator: torch.Generator,
                      device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    # RNG states must be CPU byte tensors, whatever map_location the checkpoint was read with.
    task_generator.set_state(state["task"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    py = state.get("python")
    if py is not None:
        random.setstate((py[0], tuple(py[1]), py[2]))
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything"]
