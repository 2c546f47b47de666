"""Approximate equivariance: fixed inputs, the equivariant component, and equivariance metrics."""

from approxeq.approximate.component import (equivariant_component, is_approximate,
                                            symmetry_breaking_modules)
from approxeq.approximate.fixed_inputs import FixedInput, SymmetryBreaking, task_dropout_mask
from approxeq.approximate.metrics import (EquivarianceReport, context_permutation_error,
                                          delta_equiv, equivariance_error)

__all__ = [
    "equivariant_component", "is_approximate", "symmetry_breaking_modules", "FixedInput",
    "SymmetryBreaking", "task_dropout_mask", "EquivarianceReport", "context_permutation_error",
    "delta_equiv", "equivariance_error",
]
