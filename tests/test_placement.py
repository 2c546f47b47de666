"""The one lookup of a model's dtype and device (approxeq.nn.placement)."""

from __future__ import annotations

import torch
from torch import nn

from approxeq.nn.placement import model_dtype, model_dtype_device


def test_the_first_floating_parameter_decides():
    model = nn.Module()
    model.count = nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)
    model.weight = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    assert model_dtype_device(model) == (torch.float64, torch.device("cpu"))
    assert model_dtype(model) == torch.float64


def test_a_model_without_parameters_gets_the_defaults():
    assert model_dtype_device(nn.ReLU()) == (torch.get_default_dtype(), torch.device("cpu"))
    assert model_dtype(nn.Linear(2, 2).double()) == torch.float64
