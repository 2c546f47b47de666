"""GP vector fields: equivariant matrix kernels, divergence / curl, the generator and its exact
oracle (with and without a fixed flow)."""

from __future__ import annotations

import pytest
import torch

from approxeq.data.vector_gp import (
    MATRIX_KERNELS,
    VectorGPGenerator,
    VectorGPOracle,
    Vortex,
    matrix_kernel,
)
from approxeq.groups import O, OutputRep
from approxeq.np import build_model

KERNELS = sorted(MATRIX_KERNELS)
VECTOR = OutputRep(("vector",))


@pytest.mark.parametrize("name", KERNELS)
def test_kernels_are_rotation_equivariant(name, float64, gen):
    kernel = matrix_kernel(name, lengthscale=0.7, variance=1.3)
    x, x2 = torch.randn(4, 5, 2, generator=gen), torch.randn(4, 3, 2, generator=gen)
    r = O(2).sample(4, generator=gen, dtype=float64)  # rotations and reflections
    t = torch.randn(4, 1, 2, generator=gen)
    moved = kernel(x @ r.mT + t, x2 @ r.mT + t)
    torch.testing.assert_close(moved, r[:, None, None] @ kernel(x, x2) @ r.mT[:, None, None])
    assert torch.linalg.cholesky(kernel.gram(x, x) + 1e-9 * torch.eye(10)).isfinite().all()
    zero = torch.zeros(1, 1, 2)
    torch.testing.assert_close(kernel(zero, zero)[0, 0, 0], 1.3 * torch.eye(2))  # K(x, x) = σ² I


def _divergence_and_curl(kernel, gen):
    """div and curl of a random function in the kernel's span, ``Σ_i K(x, x_i) a_i``, at
    random points, by autograd."""
    xs, a = torch.randn(1, 6, 2, generator=gen), torch.randn(6, 2, generator=gen)
    points = torch.randn(8, 2, generator=gen)

    def field(p):
        return torch.einsum("nij,nj->i", kernel(p.reshape(1, 1, 2), xs)[0, 0], a)

    jac = torch.stack([torch.autograd.functional.jacobian(field, p) for p in points])
    div = jac[:, 0, 0] + jac[:, 1, 1]
    curl = jac[:, 1, 0] - jac[:, 0, 1]
    return div.abs().max(), curl.abs().max()


def test_divergence_free_and_curl_free(float64, gen):
    div, curl = _divergence_and_curl(matrix_kernel("divergence-free"), gen)
    assert div < 1e-12 < 1e-2 < curl
    div, curl = _divergence_and_curl(matrix_kernel("curl-free"), gen)
    assert curl < 1e-12 < 1e-2 < div
    div, curl = _divergence_and_curl(matrix_kernel("rbf"), gen)  # the check can fail
    assert div > 1e-2 and curl > 1e-2


@pytest.mark.parametrize("name", KERNELS)
def test_oracle_posterior_is_equivariant(name, float64, gen):
    oracle = VectorGPOracle(matrix_kernel(name), noise_std=0.1)
    xc, yc, xt = (torch.randn(2, n, 2, generator=gen) for n in (6, 6, 4))
    r = O(2).sample(2, generator=gen, dtype=float64)
    group = O(2)
    pred = oracle.posterior(xc, yc, xt)
    moved = oracle.posterior(group.act_points(r, xc), VECTOR.act(group, r, yc),
                             group.act_points(r, xt))
    torch.testing.assert_close(moved.mean, VECTOR.act(group, r, pred.mean))
    torch.testing.assert_close(moved.point_cov, r[:, None] @ pred.point_cov @ r.mT[:, None])


def test_generator_draws_tasks_with_the_oracle(gen):
    tasks = VectorGPGenerator("divergence-free", num_context=(0, 8), num_target=5)
    batch = tasks.sample(3, gen)
    assert batch.xc.shape[-1] == batch.yc.shape[-1] == 2 and batch.yt.shape == (3, 5, 2)
    assert batch.meta["gt_loglik"].shape == (3,) and batch.meta["gt_loglik"].isfinite().all()
    again = tasks.sample(3, torch.Generator().manual_seed(1234))
    assert torch.equal(again.yt, batch.yt)  # a seed fixes the tasks


def test_vortex_variant_is_pinned_to_its_region(float64, gen):
    flow = Vortex(centre=(0.0, 0.0), radius=0.5, strength=2.0)
    kernel = matrix_kernel("rbf")
    with_flow, without = VectorGPOracle(kernel, 0.1, flow), VectorGPOracle(kernel, 0.1)
    near = torch.tensor([[[0.5, 0.0]]], dtype=float64)
    far = torch.tensor([[[20.0, 0.0]]], dtype=float64)
    empty = torch.zeros(1, 0, 2, dtype=float64)
    torch.testing.assert_close(with_flow.posterior(empty, empty, near).mean,
                               flow(near))  # the prior mean is the flow: (0, 2 e^{-1/2})
    assert flow(near)[0, 0, 1] > 1.0
    torch.testing.assert_close(with_flow.posterior(empty, empty, far).mean,
                               without.posterior(empty, empty, far).mean, atol=1e-12, rtol=0)
    tasks = VectorGPGenerator("rbf", flow=flow, num_context=4, num_target=4, dtype=float64)
    assert tasks.sample(2, gen).meta["oracle"].flow is flow


def test_oracle_beats_an_untrained_model(float64, gen):
    tasks = VectorGPGenerator("divergence-free", num_context=16, num_target=16, dtype=float64)
    batch = tasks.sample(4, gen)
    model = build_model("e-tnp", 2, 2, width=16, num_layers=1, num_heads=2, y_rep="vector")
    with torch.no_grad():
        model_ll = model(batch.xc, batch.yc, batch.xt).log_prob(batch.yt).mean((-2, -1))
    assert (batch.meta["gt_loglik"] > model_ll).all()


@pytest.mark.parametrize("call, named", [
    (lambda: matrix_kernel("swirl"), "kernel"), (lambda: matrix_kernel("rbf", 0.0), "lengthscale"),
    (lambda: VectorGPGenerator(noise_std=-1), "noise_std"), (lambda: Vortex(radius=0), "radius"),
])
def test_bad_arguments_are_refused_in_one_line(call, named):
    with pytest.raises(ValueError, match=f"^{named}: "):
        call()
