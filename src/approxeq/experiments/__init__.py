"""Experiments: tasks → train → evaluate → report, one interface and one YAML schema.

The framework is this package's top level: the interface (:mod:`~approxeq.experiments.base`,
with its two templates :class:`NeuralProcessExperiment` and :class:`SettingsExperiment`), the
registry (:mod:`~approxeq.experiments.registry`), seeds and worker processes, evaluation and
reports. The studies are plug-ins, one subpackage each under
:mod:`approxeq.experiments.studies` (``gp``, ``era5``, ``terrain``, ``smoke``, ``graphs``,
``nbody``, ``pattern``); they register themselves and never import each other.

Every experiment is a YAML file (the shipped ones are package data, ``configs/*.yaml``) read
by :func:`~approxeq.experiments.schema.load_experiment`; its ``task.name`` picks the
:class:`Experiment` that runs it (:func:`experiment_for`)::

    from approxeq.experiments import experiment_for, load_named_experiment
    config = load_named_experiment("gp1d", size="quick")
    result = experiment_for(config).run(config, "runs/gp1d-quick")

Neural-process studies share one training routine
(:func:`~approxeq.experiments.np_runner.train_one_model`, each model built from a seed derived
from the experiment seed and its label) and one evaluation path
(:func:`~approxeq.experiments.evaluation.evaluate_model`). A new experiment is one module and
one YAML (``docs/extending.md``).
"""

from typing import Any

from approxeq.experiments.base import (
    Experiment,
    ExperimentResult,
    SettingsExperiment,
    model_seed,
    select_models,
    with_steps,
)
from approxeq.experiments.batches import load_batches, save_batches
from approxeq.experiments.evaluation import evaluate_model, oracle_metrics
from approxeq.experiments.np_runner import NeuralProcessExperiment, train_one_model
from approxeq.experiments.registry import (
    CONFIGS_DIR,
    experiment_for,
    experiment_names,
    find_experiment,
    load_named_experiment,
    register_experiment,
)
from approxeq.experiments.report import format_table, results_markdown, results_table
from approxeq.experiments.schema import (
    ExperimentConfig,
    ModelConfig,
    TaskConfig,
    experiment_from_dict,
    load_experiment,
    save_experiment,
)

#: the GP study's public names, importable from here as before (loaded on first use)
_GP_NAMES = ("DEMO_STEPS", "GPExperiment", "demo_config", "estimate_seconds", "evaluate_run",
             "make_task", "make_test_sets", "run_experiment")


def __getattr__(name: str) -> Any:
    if name in _GP_NAMES:
        import approxeq.experiments.studies.gp as gp

        return getattr(gp, name)
    raise AttributeError(f"module 'approxeq.experiments' has no attribute {name!r}")


__all__ = [
    "CONFIGS_DIR", "DEMO_STEPS", "Experiment", "ExperimentConfig", "ExperimentResult",
    "GPExperiment", "ModelConfig", "NeuralProcessExperiment", "SettingsExperiment",
    "TaskConfig", "demo_config", "estimate_seconds", "evaluate_model", "evaluate_run",
    "experiment_for", "experiment_from_dict", "experiment_names", "find_experiment",
    "format_table", "load_batches", "load_experiment", "load_named_experiment", "make_task",
    "make_test_sets", "model_seed", "oracle_metrics", "register_experiment",
    "results_markdown", "results_table", "run_experiment", "save_batches", "save_experiment",
    "select_models", "train_one_model", "with_steps",
]
