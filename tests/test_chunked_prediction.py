"""Prediction over chunks of targets under a memory budget equals one call, for every model."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MixtureSameFamily, Normal

from approxeq.np import model_options
from approxeq.np.batch import Batch
from approxeq.np.functional import (
    cat_distributions,
    forward_in_chunks,
    np_evaluate,
    target_chunk_size,
)
from approxeq.testing import contract_cases

CASES = contract_cases()


def _build(case, **extra):
    opts = {}
    if case.name == "lps-tnp":
        # sampled frames: the chunks must share the draws of the group elements
        opts.update(noise_scale=1.0, n_samples_eval=3)
    model = case.build(**opts, **extra).double().eval()
    return model


def _task(case, gen, dim_aux=0, nc=6, nt=23, b=2):
    s = case.spec.task_scale
    u = lambda *shape: (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1)  # noqa: E731
    xc, xt = s * u(b, nc, case.spec.dim_x), s * u(b, nt, case.spec.dim_x)
    yc = torch.randn(b, nc, case.spec.dim_y, generator=gen, dtype=torch.float64)
    aux = {}
    if dim_aux:
        aux = {"aux_c": u(b, nc, dim_aux), "aux_t": u(b, nt, dim_aux)}
    return xc, yc, xt, aux


def _assert_same(a, b):
    assert type(a) is type(b)
    assert a.batch_shape == b.batch_shape
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(a.stddev, b.stddev, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_chunked_prediction_equals_one_call(case, gen):
    aux = case.spec.dim_aux if "dim_aux" in model_options(case.name) else 0
    model = _build(case, **({"dim_aux": aux} if aux else {}))
    xc, yc, xt, inputs = _task(case, gen, aux)
    torch.manual_seed(3)
    whole = model(xc, yc, xt, **inputs)
    # a budget of a few KiB leaves room for one or two targets per pass
    budget = 4e-3
    assert target_chunk_size(model, 2, xc.shape[1], xt.shape[1], 8, budget) < xt.shape[1] // 3
    torch.manual_seed(3)
    chunked = forward_in_chunks(model, xc, yc, xt, **inputs, max_memory_mb=budget)
    _assert_same(whole, chunked)
    torch.manual_seed(3)
    _assert_same(whole, forward_in_chunks(model, xc, yc, xt, **inputs, chunk_targets=5))


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("te-pt-tnp", "lps-tnp")],
                         ids=str)
def test_empty_context_runs_in_one_pass(case, gen):
    # without a context these models anchor on the targets, which couples them
    model = _build(case)
    xc, yc, xt, _ = _task(case, gen, nc=0)
    torch.manual_seed(1)
    whole = model(xc, yc, xt)
    torch.manual_seed(1)
    _assert_same(whole, forward_in_chunks(model, xc, yc, xt, chunk_targets=4))


def test_lps_mixture_predictions_are_joined(gen):
    case = next(c for c in CASES if c.name == "lps-tnp" and not c.approximate)
    model = _build(case, aggregate="mixture")
    xc, yc, xt, _ = _task(case, gen)
    torch.manual_seed(2)
    whole = model(xc, yc, xt)
    torch.manual_seed(2)
    chunked = forward_in_chunks(model, xc, yc, xt, chunk_targets=4)
    assert isinstance(chunked, MixtureSameFamily)
    _assert_same(whole, chunked)
    y = torch.randn(xt.shape[0], xt.shape[1], 1, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(whole.log_prob(y), chunked.log_prob(y), rtol=0, atol=1e-12)


def test_np_evaluate_chunks_without_changing_metrics(gen):
    case = next(c for c in CASES if c.name == "te-tnp" and not c.approximate)
    model = _build(case)
    xc, yc, xt, _ = _task(case, gen, nt=40)
    yt = torch.randn(2, 40, case.spec.dim_y, generator=gen, dtype=torch.float64)
    batch = Batch(xc, yc, xt, yt)
    whole = np_evaluate(model, batch, max_memory_mb=1e6)
    chunked = np_evaluate(model, batch, max_memory_mb=1e-3)
    for a, b in zip((whole.loglik, whole.rmse, whole.coverage),
                    (chunked.loglik, chunked.rmse, chunked.coverage)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_chunk_size_grows_linearly_with_the_budget():
    case = next(c for c in CASES if c.name == "e-tnp" and not c.approximate)
    model = _build(case)
    small = target_chunk_size(model, 1, 2500, 25_000, 4, 64)
    large = target_chunk_size(model, 1, 2500, 25_000, 4, 256)
    assert 1 <= small < large <= 25_000
    assert abs(large / small - 4) < 0.01
    assert target_chunk_size(model, 1, 2500, 10, 4, 1e6) == 10


def test_bad_budget_and_chunk_are_refused(gen):
    case = next(c for c in CASES if c.name == "cnp")
    model = _build(case)
    xc, yc, xt, _ = _task(case, gen)
    with pytest.raises(ValueError, match="max_memory_mb"):
        forward_in_chunks(model, xc, yc, xt, max_memory_mb=0)
    with pytest.raises(ValueError, match="chunk_targets"):
        forward_in_chunks(model, xc, yc, xt, chunk_targets=0)


def test_unjoinable_distribution_names_the_option():
    class Other(Normal):
        pass

    parts = [Other(torch.zeros(1, 2, 1), torch.ones(1, 2, 1))] * 2
    with pytest.raises(TypeError, match="max_memory_mb"):
        cat_distributions(parts)


def test_wrapper_serves_code_that_calls_the_model_on_all_targets(gen):
    from approxeq.approximate import delta_equiv, equivariance_error
    from approxeq.np.functional import TargetChunked

    case = next(c for c in CASES if c.name == "te-tnp" and c.approximate)
    model = _build(case)
    wrapped = TargetChunked(model, max_memory_mb=1e-3)
    assert wrapped.symmetry is model.symmetry
    xc, yc, xt, _ = _task(case, gen)
    torch.testing.assert_close(delta_equiv(wrapped, xc, yc, xt), delta_equiv(model, xc, yc, xt),
                               rtol=0, atol=1e-12)
    errors = [equivariance_error(m, model.symmetry, xc, yc, xt, n_elements=2,
                                 generator=torch.Generator().manual_seed(0)).max_error
              for m in (model, wrapped)]
    assert abs(errors[0] - errors[1]) < 1e-12
