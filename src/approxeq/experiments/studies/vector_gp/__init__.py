"""Vector-GP study: neural processes on 2-D GP vector fields with a pinned vortex, in and out of
the training region, against the exact oracle (``vector-gp``).

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.vector_gp.panels import draw_field, figure_panel
from approxeq.experiments.studies.vector_gp.study import (
    BLIND,
    EXTRA_DEFAULTS,
    ORACLE,
    TASK_DEFAULTS,
    VectorGPExperiment,
    add_flow_blind,
    make_generator,
    task_options,
    vector_gp_results_markdown,
    vector_gp_results_table,
)

__all__ = [
    "BLIND", "EXTRA_DEFAULTS", "ORACLE", "TASK_DEFAULTS", "VectorGPExperiment", "add_flow_blind",
    "draw_field", "figure_panel", "make_generator", "task_options",
    "vector_gp_results_markdown", "vector_gp_results_table",
]
