"""Known auxiliary fields (elevation, land mask) as symmetry-breaking inputs.

An auxiliary field a(x) observed at the context and target locations is a *known* fixed input:
like a learned fixed input, it is a function of absolute location, so a model that reads it is
no longer equivariant. :class:`AuxiliaryEmbedding` embeds such values and, being a
:class:`~approxeq.approximate.SymmetryBreaking` module, is silenced by
:func:`~approxeq.approximate.equivariant_component` so the model's equivariant component stays
exact.
"""

from __future__ import annotations

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


def check_aux(dim_aux: int, aux_c: Tensor | None, aux_t: Tensor | None, xc: Tensor,
              xt: Tensor) -> None:
    """Validate auxiliary inputs against a model built with ``dim_aux`` channels."""
    if dim_aux == 0:
        if aux_c is not None or aux_t is not None:
            raise ValueError("aux_c/aux_t: this model was built with dim_aux = 0; rebuild it with "
                             "dim_aux=K to use auxiliary fields")
        return
    for name, a, x in (("aux_c", aux_c, xc), ("aux_t", aux_t, xt)):
        if a is None:
            raise ValueError(f"{name}: model was built with dim_aux = {dim_aux}, so {name} "
                             f"[batch, n, {dim_aux}] is required")
        if a.dim() != 3 or a.shape[:2] != x.shape[:2] or a.shape[-1] != dim_aux:
            raise ValueError(f"{name}: expected [{x.shape[0]}, {x.shape[1]}, {dim_aux}], "
                             f"got {list(a.shape)}")
