"""Where a model lives: the floating dtype and the device of its parameters.

The one lookup every layer uses to move data to a model (training, evaluation, reach, figures).
"""

from __future__ import annotations

import torch
from torch import nn


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of ``model``'s first floating parameter; without one, the default
    dtype and the device of its first parameter (CPU for a model without parameters)."""
    first = None
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
        first = p if first is None else first
    return torch.get_default_dtype(), first.device if first is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating parameter (the default dtype without one)."""
    return model_dtype_device(model)[0]


__all__ = ["model_dtype", "model_dtype_device"]
