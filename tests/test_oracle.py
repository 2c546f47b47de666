"""The exact GP oracle against direct computations with dense linear algebra."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from approxeq.data import EQ, Gibbs, GPOracle, Matern52, Periodic, gp_posterior, oracle_loglik

NOISE = 0.1


def _task(gen, b=3, nc=7, nt=9, dim_x=1, dim_y=1):
    u = lambda n: torch.rand(b, n, dim_x, generator=gen, dtype=torch.float64) * 4 - 2  # noqa: E731
    xc, xt = u(nc), u(nt)
    yc = torch.randn(b, nc, dim_y, generator=gen, dtype=torch.float64)
    yt = torch.randn(b, nt, dim_y, generator=gen, dtype=torch.float64)
    return xc, yc, xt, yt


def _dense_posterior(kernel, xc, yc, xt):
    """Predictive of noisy targets by the textbook formulas (no Cholesky tricks)."""
    kcc = kernel(xc, xc) + NOISE**2 * torch.eye(xc.shape[1], dtype=torch.float64)
    ktc = kernel(xt, xc)
    mean = ktc @ torch.linalg.solve(kcc, yc)
    cov = kernel(xt, xt) + NOISE**2 * torch.eye(xt.shape[1], dtype=torch.float64) \
        - ktc @ torch.linalg.solve(kcc, ktc.transpose(-1, -2))
    zero = torch.zeros(xc.shape[:2], dtype=torch.float64)
    evidence = MultivariateNormal(zero, kcc).log_prob(yc[..., 0])
    return mean, cov, evidence


def test_single_gp_matches_dense_formulas(float64, gen):
    kernel = Matern52(lengthscale=0.7)
    xc, yc, xt, yt = _task(gen)
    mean, cov, _ = _dense_posterior(kernel, xc, yc, xt)
    ll = oracle_loglik(kernel, NOISE, xc, yc, xt, yt, jitter=0.0)
    point = Normal(mean, torch.diagonal(cov, dim1=-2, dim2=-1)[..., None].sqrt()).log_prob(yt)
    torch.testing.assert_close(ll.marginal, point.mean((1, 2)))
    joint = MultivariateNormal(mean[..., 0], cov).log_prob(yt[..., 0]) / yt.shape[1]
    torch.testing.assert_close(ll.joint, joint)
    post = gp_posterior(kernel, NOISE, xc, yc, xt, jitter=0.0)
    torch.testing.assert_close(post.mean, mean)
    torch.testing.assert_close(post.cov, cov)


def test_two_kernel_mixture_by_hand(float64, gen):
    kernels, prior = [EQ(lengthscale=0.3), Periodic(lengthscale=0.8, period=1.5)], [0.3, 0.7]
    xc, yc, xt, yt = _task(gen, nc=5)
    log_w, point, joint = [], [], []
    for kernel, p in zip(kernels, prior):
        mean, cov, evidence = _dense_posterior(kernel, xc, yc, xt)
        log_w.append(math.log(p) + evidence)
        std = torch.diagonal(cov, dim1=-2, dim2=-1)[..., None].sqrt()
        point.append(Normal(mean, std).log_prob(yt))
        joint.append(MultivariateNormal(mean[..., 0], cov).log_prob(yt[..., 0]))
    log_w = torch.stack(log_w) - torch.logsumexp(torch.stack(log_w), 0)  # posterior weights
    marginal = torch.logsumexp(log_w[..., None, None] + torch.stack(point), 0).mean((1, 2))
    joint = torch.logsumexp(log_w + torch.stack(joint), 0) / yt.shape[1]
    ll = oracle_loglik(kernels, NOISE, xc, yc, xt, yt, weights=prior, jitter=0.0)
    torch.testing.assert_close(ll.marginal, marginal)
    torch.testing.assert_close(ll.joint, joint)


def test_empty_context_is_the_prior(float64, gen):
    kernels = [EQ(lengthscale=0.5), Gibbs.switching(0.0, 4.0, 0.1)]
    _, _, xt, yt = _task(gen)
    xc, yc = xt[:, :0], yt[:, :0]
    ll = oracle_loglik(kernels, NOISE, xc, yc, xt, yt, weights=[0.25, 0.75], jitter=0.0)
    point = torch.stack([math.log(w) + Normal(0.0, math.sqrt(1 + NOISE**2)).log_prob(yt)
                         for w in (0.25, 0.75)])
    torch.testing.assert_close(ll.marginal, torch.logsumexp(point, 0).mean((1, 2)))
    log_w, _, _ = GPOracle(kernels, NOISE, [0.25, 0.75]).components(xc, yc, xt)
    torch.testing.assert_close(log_w.exp(), torch.tensor([[0.25], [0.75]]).expand(2, xt.shape[0]))


def test_outputs_are_independent_gps(float64, gen):
    kernel = EQ(lengthscale=0.4)
    xc, yc, xt, yt = _task(gen, dim_y=2)
    both = oracle_loglik(kernel, NOISE, xc, yc, xt, yt)
    each = [oracle_loglik(kernel, NOISE, xc, yc[..., i:i + 1], xt, yt[..., i:i + 1])
            for i in range(2)]
    torch.testing.assert_close(both.marginal, (each[0].marginal + each[1].marginal) / 2)
    torch.testing.assert_close(both.joint, (each[0].joint + each[1].joint) / 2)


def test_mean_interpolates_a_smooth_function(float64):
    xc = torch.linspace(-2, 2, 200, dtype=torch.float64)[None, :, None]
    xt = torch.linspace(-1.5, 1.5, 50, dtype=torch.float64)[None, :, None]
    post = gp_posterior(EQ(lengthscale=1.0), 1e-3, xc, torch.sin(2 * xc), xt)
    torch.testing.assert_close(post.mean, torch.sin(2 * xt), atol=1e-3, rtol=0)
    assert float(post.var.max()) < 1e-4


def test_mixture_weights_pick_the_true_kernel(float64, gen):
    """With many observations the posterior weight concentrates on the kernel that made them."""
    kernels = [EQ(lengthscale=0.1), EQ(lengthscale=2.0)]
    x = torch.rand(2, 80, 1, generator=gen, dtype=torch.float64) * 4 - 2
    chol = torch.linalg.cholesky(kernels[1](x) + NOISE**2 * torch.eye(80, dtype=torch.float64))
    y = chol @ torch.randn(2, 80, 1, generator=gen, dtype=torch.float64)
    log_w, _, _ = GPOracle(kernels, NOISE).components(x, y, x[:, :3])
    assert bool((log_w[1].exp() > 0.999).all())


def test_moment_matched_posterior_of_one_kernel_is_the_gp(float64, gen):
    kernel = Gibbs.switching(0.5, 0.1, 4.0)
    xc, yc, xt, _ = _task(gen)
    one = GPOracle(kernel, NOISE).posterior(xc, yc, xt)
    ref = gp_posterior(kernel, NOISE, xc, yc, xt)
    torch.testing.assert_close(one.mean, ref.mean)
    torch.testing.assert_close(one.cov, ref.cov)


def test_stationary_oracle_is_shift_invariant_and_gibbs_is_not(float64, gen):
    xc, yc, xt, yt = _task(gen)
    shift = 3.7
    for kernel, invariant in ((Matern52(lengthscale=0.5), True), (Gibbs.switching(0.0), False)):
        a = oracle_loglik(kernel, NOISE, xc, yc, xt, yt).marginal
        b = oracle_loglik(kernel, NOISE, xc + shift, yc, xt + shift, yt).marginal
        assert torch.allclose(a, b, atol=1e-8) == invariant


def test_bad_inputs_name_the_argument(float64, gen):
    xc, yc, xt, yt = _task(gen)
    with pytest.raises(ValueError, match="yt"):
        oracle_loglik(EQ(), NOISE, xc, yc, xt, yt[:, :2])
    with pytest.raises(ValueError, match="weights"):
        GPOracle([EQ(), EQ()], NOISE, weights=[1.0])
    with pytest.raises(ValueError, match="noise_std"):
        oracle_loglik(EQ(), torch.ones(5), xc, yc, xt, yt)
