"""Likelihoods: maps from decoder outputs to predictive distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal


class HeteroscedasticGaussian(nn.Module):
    """Factorised Gaussian whose mean and standard deviation are read from the decoder.

    The decoder outputs ``[batch, n, 2 * dim_y]``: the first half is the mean, the second a raw
    value mapped to a standard deviation by ``std = sqrt(softplus(raw)) + min_std``
    (``min_std`` is the variance floor, keeping the log-likelihood bounded when a model becomes
    over-confident).
    """

    def __init__(self, min_std: float = 1e-3) -> None:
        super().__init__()
        if min_std < 0:
            raise ValueError(f"min_std must be >= 0, got {min_std}")
        self.min_std = min_std

    def forward(self, out: Tensor) -> Normal:
        if out.shape[-1] % 2:
            raise ValueError("out: expected an even last dimension [.., 2 * dim_y], "
                             f"got {tuple(out.shape)}")
        mean, raw = out.chunk(2, dim=-1)
        std = torch.sqrt(F.softplus(raw)) + self.min_std
        return Normal(mean, std)
