"""PATTERN study: graphs as images for symmetrised vision transformers (``pattern``).

Importing this package registers its experiment (the framework finds it without naming it:
:mod:`approxeq.experiments.registry`).
"""

from approxeq.experiments.studies.pattern.study import (
    PATTERN_SETTINGS,
    PatternExperiment,
    build_pattern_model,
    check_pattern_settings,
    digits_pretrained_vit,
    pattern_experiment_config,
    run_pattern_experiment,
    train_pattern_model,
)

__all__ = [
    "PATTERN_SETTINGS", "PatternExperiment", "build_pattern_model", "check_pattern_settings",
    "digits_pretrained_vit", "pattern_experiment_config", "run_pattern_experiment",
    "train_pattern_model",
]
