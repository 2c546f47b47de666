"""The shape every neural process here shares: ``likelihood(decoder(encoder(...)))``.

A :class:`NeuralProcess` is composed of three injected modules:

* ``encoder(xc, yc, xt[, aux_c=, aux_t=])`` returns a representation of the task at the
  targets (target tokens, a grid with the targets, the draws of a symmetriser: whatever its
  decoder reads). It receives the auxiliary inputs only when the model reads auxiliary
  fields (``dim_aux > 0``);
* ``decoder(representation)`` returns ``[batch, n_target, 2 dim_y]`` (or whatever the
  likelihood reads);
* ``likelihood(out)`` returns the predictive distribution with batch shape
  ``[batch, n_target, dim_y]``.

The class owns everything that is the same for every model: the input checks (shapes, dims,
finiteness, dtype), the auxiliary-input checks, ``symmetry``, ``dim_x``/``dim_y``/``dim_aux``
and the build spec (``model_name``, ``build_options``) that a checkpoint is rebuilt from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from approxeq.approximate.auxiliary import check_aux_inputs
from approxeq.approximate.reach import fixed_inputs
from approxeq.groups.base import Group
from approxeq.np.batch import check_model_dims, check_np_inputs


class NeuralProcess(nn.Module):
    """A neural process ``likelihood(decoder(encoder(xc, yc, xt)))`` (see the module
    docstring for the parts' interfaces).

    Args:
        encoder, decoder, likelihood: the parts.
        dim_x, dim_y: input and output dimensions the model was built for.
        symmetry: the group the model is exactly equivariant to (that of its equivariant
            component, for approximate models), or ``None``.
        dim_aux: auxiliary channels read at the context and target locations (0 = none).
        approximate: whether the model has learned symmetry-breaking fixed inputs.
        name: how error messages name the model (default: the class name).

    Weights saved by an earlier module layout are upgraded by the checkpoint layer
    (:func:`approxeq.train.checkpoint.upgrade_state_dict`), not here.

    Attributes: ``model_name`` and ``build_options``: the registered name and the options it
    was built with (``None`` and ``{}`` until :meth:`set_build_spec`; set by
    :func:`~approxeq.np.build_model`).

    Shapes: ``forward(xc [b, nc, dim_x], yc [b, nc, dim_y], xt [b, nt, dim_x],
    aux_c [b, nc, dim_aux] | None, aux_t [b, nt, dim_aux] | None)`` returns a distribution with
    batch shape ``[b, nt, dim_y]``; ``nc = 0`` is valid.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module, *,
                 dim_x: int, dim_y: int, symmetry: Group | None = None, dim_aux: int = 0,
                 approximate: bool = False, name: str | None = None) -> None:
        super().__init__()
        for arg, value, low in (("dim_x", dim_x, 1), ("dim_y", dim_y, 1), ("dim_aux", dim_aux, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.dim_x, self.dim_y, self.dim_aux = dim_x, dim_y, dim_aux
        self.symmetry = symmetry
        self._approximate = bool(approximate)
        self.name = name or type(self).__name__
        self.model_name: str | None = None
        self.build_options: dict[str, Any] = {}

    @property
    def approximate(self) -> bool:
        """Whether the model has learned symmetry-breaking fixed inputs."""
        return self._approximate

    def fixed_input_reach(self, dtype: torch.dtype | None = None) -> float:
        """How far (∞-norm, input units) beyond their domain box the fixed inputs can still
        change a prediction in ``dtype`` (see :func:`approxeq.approximate.reach`): a task whose
        locations all lie farther is predicted exactly as by the equivariant component. 0
        without fixed inputs; a model with fixed inputs overrides this with the bound its
        construction gives (this default, ``inf``, promises nothing)."""
        return 0.0 if not fixed_inputs(self) else math.inf

    def set_build_spec(self, model_name: str, options: Mapping[str, Any]) -> NeuralProcess:
        """Record the registered name and the options the model was built with, from which
        :func:`~approxeq.np.build_model` rebuilds it (checkpoints store them). Returns self."""
        self.model_name = model_name
        self.build_options = dict(options)
        return self

    def check_inputs(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                     aux_t: Tensor | None = None) -> None:
        """The checks every model runs: shapes, dims, finiteness, a dtype that matches the
        parameters, and auxiliary inputs exactly when the model reads them."""
        check_np_inputs(xc, yc, xt)
        check_model_dims(self.model_name or self.name, self.dim_x, self.dim_y, xc, yc)
        param = next(self.parameters(), None)
        if param is not None and param.dtype != xc.dtype:
            raise TypeError(f"xc, yc, xt: dtype {xc.dtype} does not match the model's parameters "
                            f"({param.dtype}); convert the model with .to({xc.dtype}) or the data")
        check_aux_inputs(xc, xt, aux_c, aux_t, self.dim_aux)

    def encode(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
               aux_t: Tensor | None = None) -> Any:
        """The encoder's representation (inputs already checked)."""
        if self.dim_aux:
            return self.encoder(xc, yc, xt, aux_c=aux_c, aux_t=aux_t)
        return self.encoder(xc, yc, xt)

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Distribution:
        self.check_inputs(xc, yc, xt, aux_c, aux_t)
        return self.likelihood(self.decoder(self.encode(xc, yc, xt, aux_c, aux_t)))
