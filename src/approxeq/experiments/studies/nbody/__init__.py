"""N-body study: the charged 5-body system with symmetrised bases (``nbody``).

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.nbody.study import (
    NBodyExperiment,
    NBodyGNN,
    NBodyTransformer,
    build_nbody_model,
    evaluate_mse,
    nbody_experiment_config,
    run_nbody_experiment,
    train_nbody,
)

__all__ = [
    "NBodyExperiment", "NBodyGNN", "NBodyTransformer", "build_nbody_model", "evaluate_mse",
    "nbody_experiment_config", "run_nbody_experiment", "train_nbody",
]
