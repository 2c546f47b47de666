"""Neural processes: batches, likelihoods, models and their registry, loss and evaluation.

``approxeq.np.predict`` is the function :func:`~approxeq.np.prediction.predict`; the module it
lives in, with the coordinate helpers, is :mod:`approxeq.np.prediction`.
"""

from approxeq.np.base import NeuralProcess
from approxeq.np.batch import Batch, check_np_inputs
from approxeq.np.functional import (
    EvalResult,
    evaluation_mode,
    gaussian_metrics,
    model_inputs,
    np_evaluate,
    np_loss,
)
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.prediction import predict
from approxeq.np.registry import available_models, build_model, model_options, register_model

__all__ = [
    "Batch", "check_np_inputs", "EvalResult", "evaluation_mode", "gaussian_metrics",
    "model_inputs", "np_evaluate", "np_loss", "HeteroscedasticGaussian", "NeuralProcess",
    "available_models", "build_model", "model_options", "predict", "register_model",
]
