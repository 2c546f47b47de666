"""Terrain study: temperature on real topography, trained on Europe, tested in and out of region
(``terrain``).

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.terrain.maps import (
    correction_correlations,
    fixed_input_progress,
    oracle_correction,
)
from approxeq.experiments.studies.terrain.study import (
    BLIND,
    EXTRA_DEFAULTS,
    ORACLE,
    TASK_DEFAULTS,
    TaskPool,
    TerrainExperiment,
    TerrainFigureHook,
    correction_lapse_correlation,
    lapse_at,
    make_generator,
    map_panel,
    model_options,
    normaliser_of,
    strip_aux,
    task_options,
    terrain_results_markdown,
    terrain_results_table,
    training_pool,
    uses_aux,
)

__all__ = [
    "BLIND", "EXTRA_DEFAULTS", "ORACLE", "TASK_DEFAULTS", "TaskPool", "TerrainExperiment",
    "TerrainFigureHook", "correction_correlations", "correction_lapse_correlation",
    "fixed_input_progress", "lapse_at", "make_generator", "map_panel", "model_options",
    "normaliser_of", "oracle_correction", "strip_aux", "task_options",
    "terrain_results_markdown", "terrain_results_table", "training_pool", "uses_aux",
]
