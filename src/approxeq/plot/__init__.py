"""Matplotlib figures (optional extra ``plot``; the Agg backend, so no display is needed).

Every function returns the ``Figure`` and saves a PNG when given ``path``.
"""

from approxeq.plot.experiment import experiment_figures, plot_ablation, plot_task_comparison
from approxeq.plot.fixed_inputs import plot_fixed_inputs
from approxeq.plot.predictions import plot_model_1d, plot_predictions_1d, predict_1d
from approxeq.plot.training import history_records, load_history, plot_training_curves

__all__ = ["experiment_figures", "plot_ablation", "plot_task_comparison", "plot_fixed_inputs",
           "plot_model_1d", "plot_predictions_1d", "predict_1d", "history_records",
           "load_history", "plot_training_curves"]
