"""GP study: 1-D and 2-D Gaussian-process regression against the exact oracle (``gp1d``,
``gp1d-ablation``, the demo's tasks).

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.gp.demo import DEMO_STEPS, demo_config, estimate_seconds
from approxeq.experiments.studies.gp.study import (
    FigureHook,
    GPExperiment,
    context_region,
    evaluate_run,
    make_task,
    make_test_sets,
    ood_shift,
    run_experiment,
)

__all__ = [
    "DEMO_STEPS", "FigureHook", "GPExperiment", "context_region", "demo_config",
    "estimate_seconds", "evaluate_run", "make_task", "make_test_sets", "ood_shift",
    "run_experiment",
]
