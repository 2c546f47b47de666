"""Known auxiliary fields (elevation, land mask) as symmetry-breaking inputs.

An auxiliary field a(x) observed at the context and target locations is a *known* fixed input:
like a learned fixed input, it is a function of absolute location, so a model that reads it is
no longer equivariant. :class:`AuxiliaryEmbedding` embeds such values and, being a
:class:`~approxeq.approximate.SymmetryBreaking` module, is silenced by
:func:`~approxeq.approximate.equivariant_component` so the model's equivariant component stays
exact.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from approxeq.approximate.fixed_inputs import SymmetryBreaking, task_dropout_mask


class AuxiliaryEmbedding(SymmetryBreaking):
    """Embed auxiliary values ``[batch, n, dim_aux]`` into ``[batch, n, out_dim]``.

    A 1-hidden-layer ReLU MLP. Zero while :attr:`zeroed`; in training dropped per task with
    probability ``p`` (all channels together, no rescaling), so the component that ignores the
    auxiliary field is trained too.
    """

    def __init__(self, dim_aux: int, out_dim: int, *, hidden: int = 64, p: float = 0.0) -> None:
        super().__init__()
        if dim_aux < 1:
            raise ValueError(f"dim_aux: expected >= 1, got {dim_aux}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
        self.dim_aux, self.out_dim, self.p = dim_aux, out_dim, p
        self.mlp = nn.Sequential(nn.Linear(dim_aux, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, aux: Tensor) -> Tensor:
        if aux.dim() != 3 or aux.shape[-1] != self.dim_aux:
            raise ValueError(f"aux: expected [batch, n, {self.dim_aux}], got {list(aux.shape)}")
        if self.zeroed:
            return aux.new_zeros(*aux.shape[:-1], self.out_dim)
        out = self.mlp(aux)
        if self.training and self.p > 0:
            out = out * task_dropout_mask(aux.shape[0], self.p, dtype=aux.dtype, device=aux.device)
        return out


def check_aux_inputs(xc: Tensor, xt: Tensor, aux_c: Tensor | None, aux_t: Tensor | None,
                     dim_aux: int | None = None) -> None:
    """Validate auxiliary inputs ``aux_c [batch, n_context, dim_aux]`` and ``aux_t [batch,
    n_target, dim_aux]`` against the locations ``xc`` and ``xt``: tensors of the dtype of ``xc``,
    finite, with as many channels as each other.

    ``dim_aux=None`` (a batch): both or neither. ``dim_aux=K`` (a model built with ``K``
    auxiliary channels): neither for ``K = 0``, both with ``K`` channels otherwise. Raises a
    one-line ``ValueError``/``TypeError`` naming the argument, what was expected and what was
    given.
    """
    if dim_aux == 0:
        if aux_c is not None or aux_t is not None:
            raise ValueError("aux_c/aux_t: this model was built with dim_aux = 0; rebuild it with "
                             "dim_aux=K to use auxiliary fields")
        return
    if aux_c is None or aux_t is None:
        missing = "aux_c" if aux_c is None else "aux_t"
        if dim_aux is not None:
            raise ValueError(f"{missing}: model was built with dim_aux = {dim_aux}, so {missing} "
                             f"[batch, n, {dim_aux}] is required")
        if aux_c is None and aux_t is None:
            return
        raise ValueError(f"{missing}: expected a tensor when the other auxiliary input is given "
                         "(auxiliary values are needed at context and target points), got None")
    channels = "dim_aux" if dim_aux is None else dim_aux
    for name, a, x in (("aux_c", aux_c, xc), ("aux_t", aux_t, xt)):
        if not isinstance(a, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(a).__name__}")
        if a.dim() != 3 or a.shape[:2] != x.shape[:2] \
                or (dim_aux is not None and a.shape[-1] != dim_aux):
            raise ValueError(f"{name}: expected [{x.shape[0]}, {x.shape[1]}, {channels}] to match "
                             f"{'xc' if name == 'aux_c' else 'xt'} {list(x.shape)}, "
                             f"got {list(a.shape)}")
        if not a.is_floating_point() or a.dtype != xc.dtype:
            raise TypeError(f"{name}: expected dtype {xc.dtype} (as xc), got {a.dtype}")
        if a.numel() and not torch.isfinite(a).all():
            raise ValueError(f"{name}: contains NaN or inf values")
    if aux_c.shape[-1] != aux_t.shape[-1]:
        raise ValueError(f"aux_t: expected dim_aux = {aux_c.shape[-1]} (as aux_c "
                         f"{list(aux_c.shape)}), got {list(aux_t.shape)}")


def check_aux(dim_aux: int, aux_c: Tensor | None, aux_t: Tensor | None, xc: Tensor,
              xt: Tensor) -> None:
    """Validate auxiliary inputs against a model built with ``dim_aux`` channels (see
    :func:`check_aux_inputs`)."""
    check_aux_inputs(xc, xt, aux_c, aux_t, dim_aux)
