"""The ``lps-tnp`` builder: the LPS-TNP of :mod:`~approxeq.np.models.lps_tnp` for scalar outputs,
its vector form (:mod:`~approxeq.np.models.lps_vector`) for ``y_rep`` with vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from approxeq.groups.representation import OutputRep
from approxeq.np.likelihood import output_likelihood
from approxeq.np.models.common import (
    FixedInputKind,
    VectorCovariance,
    YRep,
    check_heads,
    fixed_input_embedding,
    fixed_input_options,
)
from approxeq.np.models.lps_tnp import LPSTNP, ContextFrameNetwork
from approxeq.np.models.lps_vector import VectorLPSTNP
from approxeq.np.models.tnp import TNP
from approxeq.np.registry import register_model


@register_model("lps-tnp", "TNP made E(d)-equivariant by learned probabilistic symmetrisation "
                "(approximate=True: fixed inputs at the original locations)")
def build_lps_tnp(dim_x: int, dim_y: int, *, width: int = 128, num_layers: int = 5,
                  num_heads: int = 8, num_pseudo_tokens: int = 32, min_std: float = 1e-3,
                  approximate: bool = False, num_fixed_inputs: int | None = None,
                  fixed_input_domain: Sequence[Sequence[float]] | None = None,
                  fixed_input_dropout: float = 0.5, fourier_features: int = 0,
                  fixed_input_kind: FixedInputKind = "mlp", grid_levels: int = 6,
                  grid_coarsest: int = 4, grid_finest: int = 128, grid_features: int = 4,
                  grid_smoothness: float = 0.0, fixed_input_lr: float = 1.0,
                  n_samples_train: int = 2, n_samples_eval: int = 8, noise_scale: float = 1.0,
                  noise_dim: int = 1, frame_hidden: int = 16, frame_layers: int = 2,
                  aggregate: Literal["gaussian", "mixture"] = "gaussian", dim_aux: int = 0,
                  aux_dropout: float = 0.0, y_rep: YRep = "scalar",
                  vector_covariance: VectorCovariance = "isotropic") -> LPSTNP:
    """LPS-TNP. Options: the TNP's ``width`` (128), ``num_layers`` (5), ``num_heads`` (8),
    ``min_std`` (1e-3); ``n_samples_train`` (2) and ``n_samples_eval`` (8) draws of ``Q``;
    ``noise_scale`` (1.0), ``noise_dim`` (1); the frame network's ``frame_hidden`` (16 vector
    channels) and ``frame_layers`` (2); ``aggregate`` (``"gaussian"`` or ``"mixture"``);
    ``dim_aux`` (0), ``aux_dropout`` (0.0); with ``approximate=True``: ``num_fixed_inputs``
    (width), ``fixed_input_domain`` ([(-2, 2)] * dim_x), ``fixed_input_dropout`` (0.5),
    ``fourier_features`` (0); ``num_pseudo_tokens`` is accepted and unused.

    The fixed input's parameterisation (``approximate=True``): ``fixed_input_kind``
    (``"mlp"``, ``"grid"`` or ``"grid-linear"``), ``grid_levels`` (6), ``grid_coarsest`` (4),
    ``grid_finest`` (128), ``grid_features`` (4), ``grid_smoothness`` (0),
    ``fixed_input_lr`` (1); see :class:`~approxeq.approximate.FixedInput`.

    ``y_rep`` (``"scalar"``): with vectors (``dim_x = 2``) the sampled frame turns the
    context vectors in and the predicted vectors out
    (:class:`~approxeq.np.models.lps_vector.VectorLPSTNP`; ``aggregate="gaussian"`` and
    ``vector_covariance="isotropic"`` only)."""
    check_heads(width, num_heads)
    rep = OutputRep.parse(y_rep, dim_x, dim_y)
    output_likelihood(rep, min_std, vector_covariance)  # refuses 'full' for scalars
    if not rep.is_scalar and (aggregate != "gaussian" or vector_covariance != "isotropic"):
        raise ValueError(f"aggregate, vector_covariance: lps-tnp with vector outputs combines "
                         f"its draws as one isotropic Gaussian ('gaussian', 'isotropic'), got "
                         f"{aggregate!r}, {vector_covariance!r}")
    tnp = TNP(dim_x, dim_y, width=width, num_layers=num_layers, num_heads=num_heads,
              min_std=min_std, dim_aux=dim_aux, aux_dropout=aux_dropout)
    network = ContextFrameNetwork(dim_x, dim_y, noise_dim=noise_dim, hidden=frame_hidden,
                                  num_layers=frame_layers)
    parameterisation = fixed_input_options(fixed_input_kind, grid_levels, grid_coarsest,
                                           grid_finest, grid_features, grid_smoothness,
                                           fixed_input_lr)
    fixed_input = fixed_input_embedding(dim_x, width, approximate=approximate,
                                        num_fixed_inputs=num_fixed_inputs,
                                        domain=fixed_input_domain, p=fixed_input_dropout,
                                        fourier_features=fourier_features,
                                        **parameterisation)
    if not rep.is_scalar:
        return VectorLPSTNP(tnp, rep, noise_scale=float(noise_scale), noise_dim=noise_dim,
                            frame_hidden=frame_hidden, frame_layers=frame_layers,
                            n_samples_train=n_samples_train, n_samples_eval=n_samples_eval,
                            fixed_input=fixed_input)
    model = LPSTNP(tnp, network, noise_scale=float(noise_scale), noise_dim=noise_dim,
                   n_samples_train=n_samples_train, n_samples_eval=n_samples_eval,
                   aggregate=aggregate, fixed_input=fixed_input)
    model.y_rep = rep
    return model
