"""The relaxed ConvCNP: a ConvCNP whose conv blocks are relaxed convolutions (Wang et al., 2022),
the approximately equivariant baseline of Ashman et al. (2024).

Each block mixes ``num_basis`` filter banks with location-dependent weights ``w(x)`` (zero
outside the domain box, dropped per task in training); with ``w = 0`` (inside
:func:`~approxeq.approximate.equivariant_component`) the model is an exactly lattice-translation
equivariant ConvCNP. Defaults as ``convcnp`` (see :mod:`approxeq.np.models.convcnp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

from approxeq.approximate.relaxed import RelaxedCNN
from approxeq.np.models.common import DEFAULT_MAX_GRID_MB, YRep, default_domain, with_output_rep
from approxeq.np.models.convcnp import ConvCNP, assemble_convcnp, check_grid_dim_x
from approxeq.np.registry import register_model


@register_model("relaxed-convcnp")
def relaxed_convcnp(dim_x: int, dim_y: int, *, approximate: bool = True,
                    cnn: Literal["conv", "unet"] = "conv",
                    points_per_unit: float | None = None, channels: int = 32,
                    num_layers: int = 5, kernel_size: int | None = None,
                    margin: float | None = None, min_std: float = 1e-3, num_basis: int = 3,
                    fixed_input_domain: Sequence[Sequence[float]] | None = None,
                    fixed_input_dropout: float = 0.5, fixed_input_hidden: int | None = None,
                    fourier_features: int = 0,
                    max_grid_mb: float = DEFAULT_MAX_GRID_MB, y_rep: YRep = "scalar") -> ConvCNP:
    """ConvCNP with relaxed (approximately translation-equivariant) convolutions.

    Args:
        dim_x: 1 or 2. dim_y: >= 1. approximate: must be true (the model is approximately
            equivariant by construction; use ``convcnp`` for the exact model).
        cnn, points_per_unit, channels, num_layers, kernel_size, margin, min_std: as
            ``convcnp``.
        num_basis: filter banks per relaxed convolution (L).
        fixed_input_domain: box outside which the relaxed weights are zero (default
            ``[(-2, 2)] * dim_x``). fixed_input_dropout: per-task dropout probability of the
            relaxed weights in training (one mask shared by all layers).
        fixed_input_hidden: MLP width of the relaxed weights (default C).
        fourier_features: Fourier features of the location for the relaxed weights.
        max_grid_mb: memory budget (MiB) of the activations on the grid (see ``convcnp``).
        y_rep: the outputs' representation (``"scalar"``); translations leave vectors
            unchanged, so the model is the same for every ``y_rep``.

    Returns:
        A :class:`~approxeq.np.models.convcnp.ConvCNP` whose ``symmetry`` (that of its
        equivariant component) is ``Translation(dim_x, spacing=1 / points_per_unit)``.
    """
    check_grid_dim_x("relaxed-convcnp", dim_x)
    if not approximate:
        raise ValueError("approximate: relaxed-convcnp is approximately equivariant by "
                         "construction; build 'convcnp' for the exactly equivariant model")
    net_factory = partial(RelaxedCNN, num_basis=num_basis,
                          domain=default_domain(dim_x, fixed_input_domain),
                          hidden=fixed_input_hidden or channels, p=fixed_input_dropout,
                          fourier_features=fourier_features)
    model = assemble_convcnp(dim_x, dim_y, name="relaxed-convcnp", net_factory=net_factory,
                             cnn=cnn, points_per_unit=points_per_unit, channels=channels,
                             num_layers=num_layers, kernel_size=kernel_size, margin=margin,
                             min_std=min_std, approximate=True, max_grid_mb=max_grid_mb)
    return with_output_rep(model, y_rep, dim_x, dim_y)
