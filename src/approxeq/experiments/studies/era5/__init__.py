"""ERA5 study: 2 m temperature over the UK with elevation (``era5-uk``), and evaluation of its
models on any other gridded file.

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.era5.file_eval import (
    FieldTasks,
    evaluate_on_file,
)
from approxeq.experiments.studies.era5.scores import (
    ATTRIBUTION,
    TASK_NAME,
    era5_results_markdown,
    era5_results_table,
    evaluate_era5_model,
)
from approxeq.experiments.studies.era5.study import (
    EXTRA_DEFAULTS,
    TASK_DEFAULTS,
    ERA5Experiment,
    MapFigureHook,
    correction_elevation_correlation,
    fit_normaliser,
    is_era5_experiment,
    map_panels,
    run_era5_experiment,
    task_options,
    weather_dir,
)

__all__ = [
    "ATTRIBUTION", "ERA5Experiment", "EXTRA_DEFAULTS", "FieldTasks", "MapFigureHook",
    "TASK_DEFAULTS", "TASK_NAME", "correction_elevation_correlation", "era5_results_markdown",
    "era5_results_table", "evaluate_era5_model", "evaluate_on_file", "fit_normaliser",
    "is_era5_experiment", "map_panels", "run_era5_experiment", "task_options", "weather_dir",
]
