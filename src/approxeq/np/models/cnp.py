"""The conditional neural process (CNP, Garnelo et al., 2018), and the option handling shared by
the MLP and transformer neural processes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from approxeq.approximate.auxiliary import AuxiliaryEmbedding
from approxeq.nn.mlp import MLP
from approxeq.np.batch import check_model_dims, check_np_inputs
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.registry import register_model

#: size options every MLP/transformer NP accepts (unused ones are ignored, so that one config
#: can switch between models)
SHARED_OPTIONS: dict[str, Any] = {
    "width": 128, "num_layers": 5, "num_heads": 8, "num_pseudo_tokens": 32, "min_std": 1e-3,
    "approximate": False,
}
#: options of approximately equivariant models (used only with ``approximate=True``)
APPROXIMATE_OPTIONS: dict[str, Any] = {
    "num_fixed_inputs": None, "fixed_input_domain": None, "fixed_input_dropout": 0.5,
    "fourier_features": 0,
}

#: options of models that read known auxiliary fields (elevation, land mask) at the context and
#: target locations: ``dim_aux`` channels (0 = none) and the per-task dropout of their embedding
AUX_OPTIONS: dict[str, Any] = {"dim_aux": 0, "aux_dropout": 0.0}


def _positive_int(name: str, value: Any, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")


def resolve_options(model_name: str, options: dict[str, Any], extra: dict[str, Any] | None = None,
                    *, approximable: bool = False) -> dict[str, Any]:
    """Merge ``options`` with the defaults of ``model_name``; reject unknown names and bad values.

    ``extra`` adds model-specific options with their defaults; ``approximable`` says whether the
    model has an approximately equivariant version (``approximate=True``).
    """
    defaults = {**SHARED_OPTIONS, **(APPROXIMATE_OPTIONS if approximable else {}), **(extra or {})}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{model_name}: unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"accepted options are {', '.join(sorted(defaults))}")
    out = {**defaults, **options}
    if out["approximate"] and not approximable:
        raise ValueError(f"approximate: {model_name} is not equivariant to any group, so it has no "
                         "approximately equivariant version; use te-tnp or te-pt-tnp "
                         "(approximate=True) instead")
    for name in ("width", "num_layers", "num_heads", "num_pseudo_tokens"):
        _positive_int(name, out[name])
    if out["width"] % out["num_heads"]:
        raise ValueError(f"num_heads: {out['num_heads']} must divide width {out['width']}")
    if not isinstance(out["min_std"], (int, float)) or out["min_std"] < 0:
        raise ValueError(f"min_std: expected a number >= 0, got {out['min_std']!r}")
    if approximable:
        if out["num_fixed_inputs"] is not None:
            _positive_int("num_fixed_inputs", out["num_fixed_inputs"])
        _positive_int("fourier_features", out["fourier_features"], low=0)
        p = out["fixed_input_dropout"]
        if not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"fixed_input_dropout: expected a probability in [0, 1), got {p!r}")
    if "dim_aux" in out:
        check_aux_options(out["dim_aux"], out["aux_dropout"])
    return out


def check_aux_options(dim_aux: Any, aux_dropout: Any) -> None:
    """Validate the auxiliary-input options (see :data:`AUX_OPTIONS`)."""
    _positive_int("dim_aux", dim_aux, low=0)
    if not isinstance(aux_dropout, (int, float)) or not 0 <= aux_dropout < 1:
        raise ValueError(f"aux_dropout: expected a probability in [0, 1), got {aux_dropout!r}")


def aux_embedding(dim_aux: int, width: int, aux_dropout: float = 0.0
                  ) -> AuxiliaryEmbedding | None:
    """The embedding of ``dim_aux`` auxiliary channels into ``width`` (``None`` if
    ``dim_aux = 0``). Being symmetry breaking, it is zero inside
    :func:`~approxeq.approximate.equivariant_component`."""
    if dim_aux == 0:
        return None
    return AuxiliaryEmbedding(dim_aux, width, hidden=width, p=aux_dropout)


def with_aux(tokens: Tensor, embedding: AuxiliaryEmbedding | None, aux: Tensor | None) -> Tensor:
    """``tokens [b, n, width]`` plus the embedded auxiliary values ``aux [b, n, dim_aux]`` (as
    they are when the model reads no auxiliary field)."""
    return tokens if embedding is None else tokens + embedding(aux)


def check_model_inputs(model: nn.Module, xc: Tensor, yc: Tensor, xt: Tensor) -> None:
    """The input checks every model here runs: shapes, dims, finiteness, and a dtype that
    matches the model's parameters."""
    check_np_inputs(xc, yc, xt)
    check_model_dims(type(model).__name__, model.dim_x, model.dim_y, xc, yc)
    param = next(model.parameters(), None)
    if param is not None and param.dtype != xc.dtype:
        raise TypeError(f"xc, yc, xt: dtype {xc.dtype} does not match the model's parameters "
                        f"({param.dtype}); convert the model with .to({xc.dtype}) or the data")


class CNP(nn.Module):
    """Conditional neural process: an MLP encodes every context pair ``(x, y)``, the encodings
    are mean-pooled into one representation ``r`` (zeros for an empty context), and an MLP
    decodes ``(r, x_t)`` into a heteroscedastic Gaussian.

    Not equivariant to anything but context permutations (``symmetry = None``).

    Args:
        dim_x, dim_y: input and output dimensions. width: hidden width and size of ``r``.
        num_layers: hidden layers of the encoder and of the decoder. min_std: std floor.

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x])`` returns a
    distribution with batch shape ``[b, nt, dim_y]``.
    """

    symmetry = None

    def __init__(self, dim_x: int, dim_y: int, width: int = 128, num_layers: int = 5,
                 min_std: float = 1e-3) -> None:
        super().__init__()
        self.dim_x, self.dim_y = dim_x, dim_y
        self.encoder = MLP(dim_x + dim_y, width, width, num_layers)
        self.decoder = MLP(width + dim_x, 2 * dim_y, width, num_layers)
        self.likelihood = HeteroscedasticGaussian(min_std)

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor) -> Distribution:
        check_model_inputs(self, xc, yc, xt)
        if xc.shape[1] == 0:
            r = xc.new_zeros(xc.shape[0], 1, self.encoder.out_dim)
        else:
            r = self.encoder(torch.cat([xc, yc], dim=-1)).mean(dim=1, keepdim=True)
        r = r.expand(-1, xt.shape[1], -1)
        return self.likelihood(self.decoder(torch.cat([r, xt], dim=-1)))


@register_model("cnp", "Conditional NP: mean-pooled MLP encoder, MLP decoder (not equivariant)")
def build_cnp(dim_x: int, dim_y: int, **options: Any) -> CNP:
    """Options: ``width`` (128), ``num_layers`` (5), ``min_std`` (1e-3); the other shared size
    options are accepted and ignored."""
    o = resolve_options("cnp", options)
    return CNP(dim_x, dim_y, width=o["width"], num_layers=o["num_layers"], min_std=o["min_std"])
