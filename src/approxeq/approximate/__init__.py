"""Approximate equivariance: fixed inputs, auxiliary fields, relaxed convolutions, the
equivariant component, and equivariance metrics."""

from approxeq.approximate.auxiliary import AuxiliaryEmbedding, check_aux, check_aux_inputs
from approxeq.approximate.component import (
                                            equivariant_component,
                                            is_approximate,
                                            parameter_groups,
                                            regularization_loss,
                                            symmetry_breaking_modules,
)
from approxeq.approximate.fixed_inputs import (
                                            FIXED_INPUT_KINDS,
                                            FixedInput,
                                            SymmetryBreaking,
                                            task_dropout_mask,
)
from approxeq.approximate.grid_encoding import GridEncoding
from approxeq.approximate.metrics import (
                                            EquivarianceReport,
                                            common_draws,
                                            context_permutation_error,
                                            delta_equiv,
                                            equivariance_error,
)
from approxeq.approximate.reach import distance_to_box, fixed_input_domain, fixed_inputs, reach
from approxeq.approximate.relaxed import RelaxedCNN, RelaxedConvBlock

__all__ = [
    "AuxiliaryEmbedding", "check_aux", "check_aux_inputs", "equivariant_component",
    "is_approximate",
    "symmetry_breaking_modules", "parameter_groups", "regularization_loss", "FIXED_INPUT_KINDS",
    "FixedInput", "GridEncoding", "SymmetryBreaking", "task_dropout_mask",
    "EquivarianceReport", "common_draws", "context_permutation_error", "delta_equiv",
    "equivariance_error", "distance_to_box", "fixed_input_domain", "fixed_inputs", "reach",
    "RelaxedCNN", "RelaxedConvBlock",
]
