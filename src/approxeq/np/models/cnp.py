"""The conditional neural process (CNP, Garnelo et al., 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from approxeq.nn.mlp import MLP
from approxeq.np.base import NeuralProcess
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.models.common import YRep, check_heads, refuse_approximate, with_output_rep
from approxeq.np.registry import register_model


class CNPEncoder(nn.Module):
    """An MLP encodes every context pair ``(x, y)``; the encodings are mean-pooled into one
    representation ``r`` (zeros for an empty context), which is paired with every target.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x])`` returns
    ``[r, xt]`` as ``[b, nt, width + dim_x]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int, num_layers: int) -> None:
        super().__init__()
        self.mlp = MLP(dim_x + dim_y, width, width, num_layers)

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor) -> Tensor:
        if xc.shape[1] == 0:
            r = xc.new_zeros(xc.shape[0], 1, self.mlp.out_dim)
        else:
            r = self.mlp(torch.cat([xc, yc], dim=-1)).mean(dim=1, keepdim=True)
        return torch.cat([r.expand(-1, xt.shape[1], -1), xt], dim=-1)


class CNP(NeuralProcess):
    """Conditional neural process: a :class:`CNPEncoder` and an MLP decoding ``(r, x_t)`` into a
    heteroscedastic Gaussian.

    Not equivariant to anything but context permutations (``symmetry = None``).

    Args:
        dim_x, dim_y: input and output dimensions. width: hidden width and size of ``r``.
        num_layers: hidden layers of the encoder and of the decoder. min_std: std floor.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x])`` returns a
    distribution with batch shape ``[b, nt, dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 min_std: float = 1e-3) -> None:
        super().__init__(CNPEncoder(dim_x, dim_y, width, num_layers),
                         MLP(width + dim_x, 2 * dim_y, width, num_layers),
                         HeteroscedasticGaussian(min_std), dim_x=dim_x, dim_y=dim_y)


@register_model("cnp", "Conditional NP: mean-pooled MLP encoder, MLP decoder (not equivariant)")
def build_cnp(dim_x: int, dim_y: int, *, width: int = 128, num_layers: int = 5,
              num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
              approximate: bool = False, y_rep: YRep = "scalar") -> CNP:
    """CNP. Options: ``width`` (128), ``num_layers`` (5), ``min_std`` (1e-3); ``num_heads`` and
    ``num_pseudo_tokens`` are accepted and unused (so that one config can switch between the
    MLP and transformer NPs); ``approximate`` must be false; ``y_rep`` (``"scalar"``) is
    recorded (the model is equivariant to nothing, so it does not change it)."""
    refuse_approximate("cnp", approximate)
    check_heads(width, num_heads)
    model = CNP(dim_x, dim_y, width=width, num_layers=num_layers, min_std=min_std)
    # the model is the same for every y_rep (recorded for the experiments and checks)
    return with_output_rep(model, y_rep, dim_x, dim_y)
