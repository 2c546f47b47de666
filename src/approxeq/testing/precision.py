"""Floating-point precision and seeding for equivariance tests.

Equivariance bugs that shift a prediction by ``1e-6`` are invisible in float32, where rounding
alone moves outputs by about as much; in float64 an exactly equivariant model is equivariant to
about ``1e-12``. :func:`precision` sets the default dtype and the seeds for a block of code and
restores both afterwards; :func:`default_atol` gives the tolerance that fits a dtype.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: the default absolute tolerance of an exact-equivariance check per dtype: float64 rounding
#: stays near 1e-12 for the small models of a test, float32 rounding near 1e-6
TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-8,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


def default_atol(dtype: torch.dtype | None = None) -> float:
    """The absolute tolerance of an exact-equivariance check for ``dtype`` (the current default
    dtype if ``None``): see :data:`TOLERANCES`."""
    dtype = dtype or torch.get_default_dtype()
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected a floating dtype ({', '.join(map(str, TOLERANCES))}), "
                         f"got {dtype}")
    return TOLERANCES[dtype]


@contextmanager
def precision(dtype: torch.dtype = torch.float64, *, seed: int | None = 0
              ) -> Iterator[torch.Generator]:
    """Run a block with ``dtype`` as torch's default dtype and, unless ``seed`` is ``None``, with
    the global torch and Python RNGs seeded; both are restored on exit (also on exceptions).

    Yields a fresh :class:`torch.Generator` seeded with ``seed`` (or from the global RNG when
    ``seed`` is ``None``), for draws that should not disturb the global stream.

    Example::

        with precision(torch.float64) as gen:
            model = build_model("te-tnp", 1, 1, width=16)   # float64 parameters
            task = random_task(generator=gen)               # float64 tensors
            assert_equivariant(model, model.symmetry, task)
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    old_dtype = torch.get_default_dtype()
    old_torch = torch.get_rng_state()
    old_python = random.getstate()
    gen = torch.Generator()
    try:
        torch.set_default_dtype(dtype)
        if seed is None:
            gen.seed()
        else:
            torch.manual_seed(seed)
            random.seed(seed)
            gen.manual_seed(seed)
        yield gen
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_rng_state(old_torch)
        random.setstate(old_python)


def float64(seed: int | None = 0):
    """``precision(torch.float64, seed=seed)``: the precision equivariance is checked in."""
    return precision(torch.float64, seed=seed)


def float32(seed: int | None = 0):
    """``precision(torch.float32, seed=seed)``: the precision models are usually trained in."""
    return precision(torch.float32, seed=seed)
