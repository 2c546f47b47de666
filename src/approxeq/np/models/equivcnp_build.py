"""The ``equivcnp`` builder: the EquivCNP of :mod:`~approxeq.np.models.equivcnp` for scalar
outputs, its vector form (:mod:`~approxeq.np.models.equivcnp_vector`) for ``y_rep`` with vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from approxeq.approximate.auxiliary import AuxiliaryEmbedding
from approxeq.groups.finite import point_group
from approxeq.groups.representation import OutputRep
from approxeq.nn.group_conv import GroupCNN
from approxeq.np.likelihood import HeteroscedasticGaussian, output_likelihood
from approxeq.np.models.common import (
    DEFAULT_MAX_GRID_MB,
    FixedInputKind,
    VectorCovariance,
    YRep,
    fixed_input_options,
    grid_fixed_input,
)
from approxeq.np.models.equivcnp import (
    DEFAULT_MARGIN_CELLS,
    EquivCNP,
    EquivCNPDecoder,
    EquivCNPEncoder,
)
from approxeq.np.models.equivcnp_vector import vector_parts
from approxeq.np.registry import register_model


@register_model("equivcnp", "E(2) ConvCNP: D_N/C_N group CNN on a symmetric lattice grid "
                "(approximate=True: fixed inputs as extra scalar channels)")
def build_equivcnp(dim_x: int, dim_y: int, *, approximate: bool = False, group: str = "D4",
                   points_per_unit: float = 8.0, channels: int = 8, num_layers: int = 5,
                   kernel_size: int = 5, margin: float | None = None,
                   pool: Literal["mean", "max"] = "mean",
                   min_std: float = 1e-3, num_fixed_inputs: int | None = None,
                   fixed_input_domain: Sequence[Sequence[float]] | None = None,
                   fixed_input_dropout: float = 0.5, fixed_input_hidden: int | None = None,
                   fourier_features: int = 0, dim_aux: int = 0, aux_dropout: float = 0.0,
                   fixed_input_kind: FixedInputKind = "mlp", grid_levels: int = 6,
                   grid_coarsest: int = 4, grid_finest: int = 128, grid_features: int = 4,
                   grid_smoothness: float = 0.0, fixed_input_lr: float = 1.0,
                   max_grid_mb: float = DEFAULT_MAX_GRID_MB, y_rep: YRep = "scalar",
                   vector_covariance: VectorCovariance = "isotropic") -> EquivCNP:
    """EquivCNP (exactly equivariant to a lattice subgroup of E(2); see the module docstring).

    Args:
        dim_x: must be 2. dim_y: >= 1.
        approximate: add a learned fixed input on the grid as extra scalar channels.
        group: ``"D4"`` (default), ``"C4"``, ``"D8"`` or ``"C8"`` (converted once by
            :func:`~approxeq.groups.point_group`).
        points_per_unit: grid density (8). channels: regular fields per hidden layer (8; the
            hidden width is ``channels · |G|``). num_layers: convolutions (5).
        kernel_size: odd kernel width (5). margin: room around the data (default 8 cells).
        pool: ``"mean"`` or ``"max"`` over the group axis. min_std: predictive std floor.
        num_fixed_inputs: fixed-input channels ``B`` (default ``channels``).
        fixed_input_domain: box outside which the fixed input is zero ([(-2, 2)] * 2).
        fixed_input_dropout: per-task dropout probability of the fixed input in training.
        fixed_input_hidden: MLP width of the fixed input (default ``4 * channels``).
        fourier_features: Fourier features of the location for the fixed input (0 = none).
        fixed_input_kind: the fixed input's parameterisation, ``"mlp"`` (default),
            ``"grid"`` or ``"grid-linear"``; grid_levels, grid_coarsest, grid_finest,
            grid_features, grid_smoothness: its grid; fixed_input_lr: its learning-rate
            multiplier (see :class:`~approxeq.approximate.FixedInput`).
        dim_aux: channels ``K`` of auxiliary fields given as ``aux_c``/``aux_t`` (0 = none).
        aux_dropout: per-task dropout probability of the auxiliary embedding in training.
        max_grid_mb: memory budget (MiB) of the activations on the grid; a task whose inputs
            span a grid larger than that is refused before anything is allocated.
        y_rep: ``"scalar"`` (default), ``"vector"`` or a list: vectors are lifted into regular
            fields and read out through the standard representation, so they turn with the
            scene (:mod:`~approxeq.np.models.equivcnp_vector`).
        vector_covariance: ``"isotropic"`` or ``"full"`` (vector outputs only).
    """
    if dim_x != 2:
        raise ValueError(f"dim_x: equivcnp is equivariant to rotations of the plane and supports "
                         f"dim_x = 2 only, got dim_x = {dim_x}; for other dimensions use "
                         "'e-tnp' (E(dim_x)-invariant attention) or 'convcnp'")
    point_group_ = point_group(group)
    if margin is None:
        margin = DEFAULT_MARGIN_CELLS / points_per_unit
    fixed_input = grid_fixed_input(
        2, approximate=approximate, num_fixed_inputs=num_fixed_inputs,
        default_channels=channels, domain=fixed_input_domain,
        hidden=fixed_input_hidden or 4 * channels, p=fixed_input_dropout,
        fourier_features=fourier_features,
        **fixed_input_options(fixed_input_kind, grid_levels, grid_coarsest, grid_finest,
                              grid_features, grid_smoothness, fixed_input_lr))
    extra = 0 if fixed_input is None else fixed_input.num_channels
    aux_embedding = None
    if dim_aux:
        aux_embedding = AuxiliaryEmbedding(dim_aux, channels, hidden=channels, p=aux_dropout)
        extra += channels
    net = GroupCNN(channels + extra, channels, num_layers, kernel_size, point_group_, pool)
    rep = OutputRep.parse(y_rep, dim_x, dim_y)
    likelihood = output_likelihood(rep, min_std, vector_covariance)
    if not rep.is_scalar:
        encoder, decoder = vector_parts(rep, points_per_unit, channels, net, margin,
                                        full=likelihood.full, fixed_input=fixed_input,
                                        aux_embedding=aux_embedding, max_grid_mb=max_grid_mb)
        model = EquivCNP(dim_y, encoder, decoder, likelihood)
        model.y_rep = rep
        return model
    encoder = EquivCNPEncoder(dim_y, points_per_unit, channels, net, margin,
                              fixed_input=fixed_input, aux_embedding=aux_embedding,
                              max_grid_mb=max_grid_mb)
    decoder = EquivCNPDecoder(dim_y, points_per_unit, channels)
    model = EquivCNP(dim_y, encoder, decoder, HeteroscedasticGaussian(min_std))
    model.y_rep = rep
    return model
