"""Testing tools for equivariant models: equivariance asserts with per-element error tables,
float64/float32 precision helpers, and the model-contract suite to run on your own models.

Example::

    import torch
    from approxeq.np import build_model
    from approxeq.testing import assert_equivariant, precision, random_task

    with precision(torch.float64):
        model = build_model("te-tnp", 1, 1, width=16, num_layers=1, num_heads=2)
        assert_equivariant(model, model.symmetry, random_task())

pytest users can opt into the fixtures ``float64``, ``float32`` and ``gen`` with
``pytest_plugins = ["approxeq.testing.pytest_plugin"]`` in their ``conftest.py``; nothing here
needs pytest otherwise.
"""

from approxeq.approximate.metrics import EquivarianceReport, equivariance_error
from approxeq.testing.contract import (
    CONTRACT_CHECKS,
    ContractFailure,
    ContractReport,
    ContractSkip,
    check_model_contract,
    perturb_symmetry_breaking,
    run_contract_check,
)
from approxeq.testing.equivariance import (
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_not_equivariant,
    elements_to_check,
    finite_order,
    module_equivariance_gap,
    random_task,
)
from approxeq.testing.fallback import assert_falls_back, tasks_beyond_reach
from approxeq.testing.groups import assert_group_laws
from approxeq.testing.precision import TOLERANCES, default_atol, float32, float64, precision
from approxeq.testing.specs import (
    CHECKS,
    CONTRACT_SPECS,
    ContractCase,
    ContractSpec,
    applicable_checks,
    contract_cases,
    contract_spec,
    register_contract_spec,
)
from approxeq.testing.vector import assert_vector_equivariant, vector_equivariance_error

__all__ = [
    "CHECKS", "CONTRACT_CHECKS", "CONTRACT_SPECS", "TOLERANCES", "ContractCase", "ContractFailure",
    "ContractReport", "ContractSkip", "ContractSpec", "EquivarianceReport", "applicable_checks",
    "assert_context_permutation_invariant", "assert_equivariant", "assert_falls_back",
    "assert_group_laws",
    "assert_not_equivariant",
    "check_model_contract", "contract_cases", "contract_spec", "default_atol", "elements_to_check",
    "equivariance_error", "finite_order", "float32", "float64", "module_equivariance_gap",
    "perturb_symmetry_breaking", "precision", "random_task", "register_contract_spec",
    "run_contract_check", "tasks_beyond_reach", "assert_vector_equivariant",
    "vector_equivariance_error",
]
