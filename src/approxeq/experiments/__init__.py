"""Experiments: tasks → train → evaluate → report, one interface and one YAML schema.

Every experiment is a YAML file (the shipped ones are package data, ``configs/*.yaml``) read
by :func:`~approxeq.train.config.load_experiment`; its ``task.name`` picks the
:class:`Experiment` that runs it (:func:`experiment_for`)::

    from approxeq.experiments import experiment_for, load_named_experiment
    config = load_named_experiment("gp1d", size="quick")
    result = experiment_for(config).run(config, "runs/gp1d-quick")

Runners: :mod:`~approxeq.experiments.gp` (synthetic GP tasks against the exact oracle),
:mod:`~approxeq.experiments.era5` (ERA5 temperature), :mod:`~approxeq.experiments.graphs`
(graph separation and classification) and :mod:`~approxeq.experiments.nbody` (charged
particles). Neural-process runners share one training routine
(:func:`~approxeq.experiments.np_runner.train_one_model`, each model built from a seed derived
from the experiment seed and its label) and one evaluation path
(:func:`~approxeq.experiments.evaluation.evaluate_model`).
"""

from approxeq.experiments.base import (
                                       CONFIGS_DIR,
                                       Experiment,
                                       ExperimentResult,
                                       SettingsExperiment,
                                       experiment_for,
                                       experiment_names,
                                       find_experiment,
                                       load_named_experiment,
                                       model_seed,
                                       register_experiment,
                                       select_models,
                                       with_steps,
)
from approxeq.experiments.batches import load_batches, save_batches
from approxeq.experiments.evaluation import evaluate_model, oracle_metrics
from approxeq.experiments.gp import (
                                       DEMO_STEPS,
                                       GPExperiment,
                                       demo_config,
                                       evaluate_run,
                                       make_task,
                                       make_test_sets,
                                       run_experiment,
)
from approxeq.experiments.np_runner import NeuralProcessExperiment, train_one_model
from approxeq.experiments.report import format_table, results_markdown, results_table

__all__ = [
    "CONFIGS_DIR", "DEMO_STEPS", "Experiment", "ExperimentResult", "GPExperiment",
    "NeuralProcessExperiment", "SettingsExperiment", "demo_config", "evaluate_model",
    "evaluate_run", "experiment_for", "experiment_names", "find_experiment", "format_table",
    "load_batches", "load_named_experiment", "make_task", "make_test_sets", "model_seed",
    "oracle_metrics", "register_experiment", "results_markdown", "results_table",
    "run_experiment", "save_batches", "select_models", "train_one_model", "with_steps",
]
