"""Neural processes: batches, likelihoods, models and their registry, loss and evaluation."""

from approxeq.np.batch import Batch, check_np_inputs
from approxeq.np.functional import EvalResult, gaussian_metrics, model_inputs, np_evaluate, np_loss
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.registry import available_models, build_model, register_model

__all__ = [
    "Batch", "check_np_inputs", "EvalResult", "gaussian_metrics", "model_inputs", "np_evaluate", "np_loss",
    "HeteroscedasticGaussian", "available_models", "build_model", "register_model",
]
