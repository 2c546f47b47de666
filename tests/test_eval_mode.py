"""Reported predictions do not depend on the mode a caller left the model in: evaluation leaves
the mode as it was, and the memory-bounded wrapper takes the wrapped model's mode. (A wrapper
built in training mode used to switch the model to training after evaluation, so maps and
corrections made afterwards carried fixed-input dropout.)"""

from __future__ import annotations

import pytest
import torch

from approxeq.approximate import FixedInput
from approxeq.data import gp_task
from approxeq.experiments.evaluation import evaluate_model
from approxeq.np import build_model
from approxeq.np.functional import TargetChunked, evaluation_mode


def _approximate_convcnp():
    torch.manual_seed(0)
    model = build_model("convcnp", 1, 1, approximate=True, channels=4, num_layers=1,
                        kernel_size=3, points_per_unit=8, num_fixed_inputs=2).double()
    with torch.no_grad():  # clearly non-zero fixed inputs
        for f in (m for m in model.modules() if isinstance(m, FixedInput)):
            for p in f.parameters():
                p.add_(torch.randn_like(p))
    return model


def _batches(gen):
    task = gp_task("eq", 1, num_context=(3, 8), num_target=10, oracle=False)
    return [task.sample(4, gen).to(dtype=torch.float64)]


@pytest.mark.parametrize("training", [False, True])
def test_evaluate_model_leaves_the_mode_as_it_was(training, gen):
    model = _approximate_convcnp().train(training)
    out = evaluate_model(model, _batches(gen), equivariance_elements=2)
    assert out["delta_equiv"] > 0
    assert all(m.training == training for m in model.modules())


def test_evaluation_does_not_depend_on_the_callers_mode(gen):
    batches = _batches(gen)
    model = _approximate_convcnp()
    in_eval = evaluate_model(model.eval(), batches, equivariance_elements=2)
    in_train = evaluate_model(model.train(), batches, equivariance_elements=2)
    assert in_eval == in_train


def test_the_chunked_wrapper_takes_the_models_mode():
    model = _approximate_convcnp()
    assert not TargetChunked(model.eval()).training
    assert TargetChunked(model.train()).training


def test_evaluation_mode_restores_on_exceptions():
    model = _approximate_convcnp().train()
    with pytest.raises(RuntimeError), evaluation_mode(model):
        assert not model.training
        raise RuntimeError("inside")
    assert model.training
