"""GP task sampling: the opt-in float32 sampler draws from the oracle's distribution, on the
default's random numbers; the default draws are untouched."""

from __future__ import annotations

import math

import pytest
import torch

from approxeq.data import EQ, FixedKernel, Gibbs, GPGenerator, gp_task
from approxeq.data.kernels import _exp_, _exp_floor
from approxeq.data.oracle import (
    float32_cholesky_,
    float32_noisy_cholesky,
    flush_subnormals,
    noisy_cholesky,
    noisy_covariance,
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_exp_flushes_only_results_below_the_smallest_normal_numbers(dtype):
    t = torch.linspace(-1200.0, 5.0, 100_003, dtype=dtype)
    plain, cut = t.exp(), _exp_(t.clone())
    if dtype == torch.float64:  # the default draws: every value as it was
        assert torch.equal(cut, plain)
    else:  # results below 1.01 times the smallest normal number are 0
        cutoff = _exp_floor(dtype)[1]
        assert torch.finfo(dtype).tiny <= cutoff < 1.02 * torch.finfo(dtype).tiny
        kept = plain > cutoff
        assert torch.equal(cut[kept], plain[kept]) and bool((cut[~kept] == 0).all())


@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("left, right, variance", [(4.0, 0.1, 1.0), (0.1, 4.0, 2.5)])
def test_float32_switching_gibbs_is_the_kernel_up_to_float32_rounding(gen, dim_x, left, right,
                                                                      variance):
    kernel = Gibbs.switching(0.3, left, right, variance)
    x1 = (torch.rand(3, 40, dim_x, generator=gen, dtype=torch.float64) * 8 - 4).float()
    x2 = (torch.rand(3, 50, dim_x, generator=gen, dtype=torch.float64) * 8 - 4).float()
    for a, b in ((x1, x2), (x1, x1)):
        exact = kernel(a.double(), b.double())  # the general formula, in float64
        fast = kernel(a, b)
        assert fast.dtype == torch.float32
        torch.testing.assert_close(fast.double(), exact, rtol=0, atol=4e-7 * variance)
        assert bool((fast[exact < 1e-38 * variance] == 0).all())
    assert torch.equal(fast, fast.mT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_switching_gibbs_stays_on_the_inputs_device(dtype):
    x = torch.empty(2, 5, 1, dtype=dtype, device="meta")
    assert Gibbs.switching(0.0, 4.0, 0.1)(x, x).device == x.device


def test_flush_subnormals_flushes_inside_and_restores_the_mode():
    tiny = torch.finfo(torch.float32).tiny
    assert float(torch.tensor(tiny) / 4) > 0  # the mode the tests run in
    with flush_subnormals():
        assert float(torch.tensor(tiny) / 4) == 0
    assert float(torch.tensor(tiny) / 4) > 0


def test_float32_factor_is_the_covariance_factor_or_none(gen):
    kernel = Gibbs.switching(0.0, 4.0, 0.1)
    x = (torch.rand(4, 60, 1, generator=gen, dtype=torch.float64) * 8 - 4).float().double()
    exact = noisy_cholesky(kernel, 0.1, x)
    fast = float32_noisy_cholesky(kernel, 0.1, x)
    assert fast.dtype == torch.float32
    assert torch.equal(fast.triu(1), torch.zeros_like(fast))
    torch.testing.assert_close(fast.double(), exact, rtol=0, atol=2e-4)
    cov = noisy_covariance(kernel, 0.1, x.float())
    for k in (cov.clone(), cov.clone().mT):  # the factor over a contiguous k, else over a copy
        chol = float32_cholesky_(k)
        assert torch.equal(chol, fast) and (chol.data_ptr() == k.data_ptr()) == k.is_contiguous()
    twice = torch.cat([x, x], dim=1)  # no noise and repeated inputs: singular
    assert float32_noisy_cholesky(kernel, 0.0, twice, jitter=0.0) is None


def test_sample_precision_is_checked():
    with pytest.raises(ValueError, match="sample_precision: expected one of.*got 'float16'"):
        gp_task("gibbs", sample_precision="float16")


def test_float32_sampler_uses_the_same_random_numbers_as_the_default():
    exact, fast = gp_task("gibbs"), gp_task("gibbs", sample_precision="float32")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        a, b = exact.sample(8, g1), fast.sample(8, g2)
        assert torch.equal(a.xc, b.xc) and torch.equal(a.xt, b.xt)
        torch.testing.assert_close(b.yt, a.yt, atol=2e-3, rtol=0)
        assert not torch.equal(b.yt, a.yt)  # float32 factors: not the default draws
        torch.testing.assert_close(b.meta["gt_loglik"], a.meta["gt_loglik"], atol=5e-3, rtol=0)


def test_float32_sampler_factorises_in_float64_without_noise():
    # no noise and a long lengthscale: the covariance is singular in float32
    opts = dict(noise_std=0.0, num_context=20, num_target=100)
    exact = GPGenerator(EQ(lengthscale=4.0), **opts)
    fast = GPGenerator(EQ(lengthscale=4.0), sample_precision="float32", **opts)
    a = exact.sample(4, torch.Generator().manual_seed(0))
    b = fast.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(a.yc, b.yc) and torch.equal(a.yt, b.yt)


def _loglik_z(generator: GPGenerator, batches: int, batch_size: int, seed: int) -> float:
    """z-score of the mean oracle joint log-likelihood of sampled tasks against its exact
    expectation: per task, ``E = -(log 2 pi + 1) / 2 - log det(L_tt) / n_t`` with variance
    ``1 / (2 n_t)`` (``dim_y = 1``), both from the float64 factor of the oracle's covariance."""
    g = torch.Generator().manual_seed(seed)
    kernel = generator.kernel_prior.kernel
    diffs, variances = [], []
    for _ in range(batches):
        batch = generator.sample(batch_size, g)
        x = torch.cat([batch.xc, batch.xt], 1).to(torch.float64)
        nc, nt = batch.xc.shape[1], batch.xt.shape[1]
        l_tt = noisy_cholesky(kernel, 0.1, x, generator.jitter)[:, nc:, nc:]
        logdet = torch.diagonal(l_tt, dim1=-2, dim2=-1).log().sum(-1)
        expected = -0.5 * (math.log(2 * math.pi) + 1) - logdet / nt
        diffs.append(batch.meta["gt_loglik_joint"] - expected)
        variances.append(torch.full((batch_size,), 1.0 / (2 * nt), dtype=torch.float64))
    d, v = torch.cat(diffs), torch.cat(variances)
    return float(d.mean() / (v.mean() / d.numel()).sqrt())


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("left, right", [(4.0, 0.1), (0.1, 4.0)])
def test_sampled_tasks_have_the_oracle_likelihood_they_should(precision, left, right):
    task = GPGenerator(FixedKernel(Gibbs.switching(0.0, left, right)), noise_std=0.1,
                       num_context=(1, 64), sample_precision=precision)
    assert abs(_loglik_z(task, batches=12, batch_size=32, seed=1)) < 4.0


class _OracleAssumingNoise01(FixedKernel):
    def oracle(self, kernel, noise_std, jitter):
        return super().oracle(kernel, 0.1, jitter)


def test_the_likelihood_check_detects_a_wrong_distribution():
    # data with noise 0.12 scored by an oracle that assumes 0.1: the check must fail
    task = GPGenerator(_OracleAssumingNoise01(Gibbs.switching(0.0, 4.0, 0.1)), noise_std=0.12,
                       num_context=(1, 64))
    assert abs(_loglik_z(task, batches=12, batch_size=32, seed=1)) > 6.0


class _General(Gibbs):
    """The same Gibbs kernel through its general formula (a lengthscale function that is not a
    SwitchingLengthscale)."""

    def __init__(self, kernel: Gibbs):
        super().__init__(lambda x: kernel.lengthscale_fn(x), kernel.variance)


@pytest.mark.parametrize("dim_x", [1, 2])
@pytest.mark.parametrize("changepoint, left, right", [(0.0, 4.0, 0.1), (-1.0, 0.1, 4.0),
                                                      (0.3, 3.0, 0.7)])
def test_float64_switching_gibbs_is_the_general_formula_bit_for_bit(gen, dim_x, changepoint,
                                                                    left, right):
    kernel = Gibbs.switching(changepoint, left, right, variance=torch.tensor([1.0, 2.5, 0.3]))
    x1 = torch.rand(3, 70, dim_x, generator=gen, dtype=torch.float64) * 8 - 4
    x2 = torch.rand(3, 60, dim_x, generator=gen, dtype=torch.float64) * 8 - 4
    for a, b in ((x1, x2), (x1, x1)):
        assert torch.equal(kernel(a, b), _General(kernel)(a, b))


class _UpperGarbage(EQ):
    """EQ with its strict upper triangle overwritten: LAPACK reads only the lower one."""

    def compute(self, x1, x2):
        return super().compute(x1, x2).add_(torch.ones(x1.shape[1], x2.shape[1]).triu_(1))


@pytest.mark.parametrize("kernel", [Gibbs.switching(0.0, 4.0, 0.1), _UpperGarbage(0.5)])
def test_noisy_cholesky_is_cholesky_of_the_lower_triangle_bit_for_bit(gen, kernel):
    x = torch.rand(4, 90, 1, generator=gen, dtype=torch.float64) * 8 - 4
    k = kernel(x, x) + (0.1**2 + 1e-6) * torch.eye(90, dtype=torch.float64)
    chol, expected = noisy_cholesky(kernel, 0.1, x), torch.linalg.cholesky_ex(k)[0]
    assert torch.equal(chol, expected) and chol.stride() == expected.stride()  # products too
