"""Opt-in pytest fixtures for equivariance tests. In your ``conftest.py``::

    pytest_plugins = ["approxeq.testing.pytest_plugin"]

Fixtures: ``float64`` and ``float32`` (the test runs with that default dtype and seeded RNGs,
restored afterwards; the fixture's value is the dtype) and ``gen`` (a seeded
:class:`torch.Generator`). Importing this module needs pytest; the rest of
:mod:`approxeq.testing` does not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from approxeq.testing.precision import precision


@pytest.fixture
def float64() -> Iterator[torch.dtype]:
    """Run the test in float64, where float32 rounding would hide an equivariance bug."""
    with precision(torch.float64, seed=0):
        yield torch.float64


@pytest.fixture
def float32() -> Iterator[torch.dtype]:
    """Run the test in float32 (the usual training precision) with seeded RNGs."""
    with precision(torch.float32, seed=0):
        yield torch.float32


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded generator, for reproducible random draws that leave the global RNG alone."""
    return torch.Generator().manual_seed(1234)
