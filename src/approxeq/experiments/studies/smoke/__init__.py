"""Smoke study: 2-D plumes around a fixed obstacle (``smoke``).

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.smoke.study import (
    EXTRA_DEFAULTS,
    PANELS,
    TASK_DEFAULTS,
    TRANSFER_KINDS,
    SmokeExperiment,
    SmokeFigureHook,
    add_exact_gains,
    exact_partner,
    load_data,
    map_panels,
    map_tasks,
    smoke_results_markdown,
    smoke_results_table,
    task_options,
    transfer_settings,
)

__all__ = [
    "EXTRA_DEFAULTS", "PANELS", "SmokeExperiment", "SmokeFigureHook", "TASK_DEFAULTS",
    "TRANSFER_KINDS", "add_exact_gains", "exact_partner", "load_data", "map_panels",
    "map_tasks", "smoke_results_markdown", "smoke_results_table",
    "task_options", "transfer_settings",
]
