"""Symmetry-breaking parts made visibly non-zero, so that a check of what they do is not
vacuous (fixed inputs and relaxed weights are often initialised at zero)."""

from __future__ import annotations

import torch
from torch import nn

from approxeq.approximate.component import symmetry_breaking_modules


def perturb_symmetry_breaking(model: nn.Module, *, scale: float = 0.5,
                              generator: torch.Generator | None = None) -> int:
    """Add ``N(0, scale²)`` noise to every parameter of the model's symmetry-breaking parts
    (fixed inputs, relaxed weights, auxiliary embeddings), so that they are non-zero even if
    they are initialised at zero. Returns the number of tensors changed."""
    gen = generator or torch.Generator().manual_seed(11)
    n = 0
    with torch.no_grad():
        for module in symmetry_breaking_modules(model):
            for p in module.parameters():
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.add_(scale * noise.to(p.device))
                n += 1
    return n


__all__ = ["perturb_symmetry_breaking"]
