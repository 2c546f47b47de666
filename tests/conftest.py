"""Shared fixtures: the dtype fixtures come from the opt-in plugin users get too."""

from __future__ import annotations

import pytest
import torch

# the fixtures float64, float32 and gen (see approxeq.testing.pytest_plugin)
from approxeq.testing.pytest_plugin import float32, float64, gen  # noqa: F401

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
