"""The TNP made E(2)-equivariant by probabilistic symmetrisation (LPS-TNP)."""

from __future__ import annotations

import pytest
import torch

from approxeq.approximate import delta_equiv, equivariance_error, equivariant_component
from approxeq.groups import Euclidean
from approxeq.np import build_model
from approxeq.testing import assert_not_equivariant, perturb_symmetry_breaking, random_task

SMALL = dict(width=16, num_layers=2, num_heads=2, frame_hidden=4)
GROUP = Euclidean(2)


def small_lps(**kw):
    return build_model("lps-tnp", 2, 1, **{**SMALL, **kw})


def task2d(gen, nc=8, nt=6, **kw):
    return random_task(2, nc, nt, 2, 1, generator=gen, **kw)


def fixed_noise_error(model, task, gen, n_elements=4, **aux):
    """Largest change of the predictive mean and std when the task is moved by random E(2)
    elements and the noise draw is moved with it."""
    xc, yc, xt = task
    model.eval()
    out = model.forward_with_samples(xc, yc, xt, generator=gen, **aux)
    err = 0.0
    for g in GROUP.sample(n_elements, generator=gen, scale=3.0):
        gb = g.expand(xc.shape[0], 3, 3)
        moved = model.forward_with_samples(GROUP.act_points(gb, xc), yc, GROUP.act_points(gb, xt),
                                           noise=model.transform_noise(gb, out.noise), **aux)
        for a, b in ((moved.distribution.mean, out.distribution.mean),
                     (moved.distribution.stddev, out.distribution.stddev)):
            err = max(err, float((a - b).abs().max().detach()))
    return err


def test_lps_exactly_equivariant_for_a_transformed_noise_draw(float64, gen):
    model = small_lps()
    task = task2d(gen)
    assert model.symmetry == GROUP
    assert fixed_noise_error(model, task, gen) < 1e-10
    # the base TNP alone is not equivariant, so the symmetrisation is doing the work
    base = model.symmetrized.base.tnp
    assert_not_equivariant(base, GROUP, task, margin=1e-5)
    # and the same noise, not moved with the task, does not give the moved prediction
    xc, yc, xt = task
    out = model.forward_with_samples(xc, yc, xt, generator=gen)
    g = GROUP.sample(1, generator=gen).expand(2, 3, 3)
    stale = model.forward_with_samples(GROUP.act_points(g, xc), yc, GROUP.act_points(g, xt),
                                       noise=out.noise)
    assert (stale.distribution.mean - out.distribution.mean).abs().max() > 1e-6


def test_lps_equivariant_in_distribution(float64, gen):
    """With fresh noise on every call, the error is Monte-Carlo noise: it shrinks with k
    (about as 1/√k) and is far below the base TNP's."""
    task = task2d(gen)
    model = small_lps()
    errors = {}
    for k in (2, 128):
        model.symmetrized.n_samples_eval = k
        errors[k] = equivariance_error(model, GROUP, *task, n_elements=4,
                                       generator=torch.Generator().manual_seed(5)).max_error
    print(f"\nLPS-TNP equivariance error with fresh noise: k=2 {errors[2]:.2e}, "
          f"k=128 {errors[128]:.2e}")
    base = equivariance_error(model.symmetrized.base.tnp, GROUP, *task, n_elements=4,
                              generator=torch.Generator().manual_seed(5)).max_error
    print(f"base TNP {base:.2e}")
    assert errors[128] < 0.5 * errors[2]
    assert errors[128] < 0.5 * base


def test_forward_with_samples_returns_the_elements(float64, gen):
    model = small_lps(n_samples_eval=3)
    model.eval()
    xc, yc, xt = task2d(gen)
    out = model.forward_with_samples(xc, yc, xt, generator=gen)
    assert out.means.shape == out.stds.shape == (3, 2, 6, 1)
    assert out.elements.shape == (3, 2, 3, 3)
    rot, shift = GROUP.rotation(out.elements), GROUP.translation(out.elements)
    assert torch.allclose(rot @ rot.mT, torch.eye(2).expand(3, 2, 2, 2), atol=1e-10)
    assert torch.allclose(shift, xc.mean(1).expand(3, 2, 2), atol=1e-12)
    # rotations are spread over O(2) by the noise, not collapsed to the identity
    assert (rot - rot[:1]).abs().max() > 1e-3
    assert torch.allclose(out.distribution.mean, out.means.mean(0), atol=1e-12)
    again = model.forward_with_samples(xc, yc, xt, noise=out.noise)
    assert torch.equal(again.distribution.mean, out.distribution.mean)


def test_empty_context_centres_on_targets(float64, gen):
    model = small_lps(n_samples_eval=2)
    model.eval()
    xc, yc, xt = task2d(gen, nc=0)
    out = model.forward_with_samples(xc, yc, xt, generator=gen)
    assert out.distribution.mean.shape == (2, 6, 1)
    assert torch.allclose(GROUP.translation(out.elements), xt.mean(1).expand(2, 2, 2))
    assert fixed_noise_error(model, (xc, yc, xt), gen) < 1e-10
    assert model(xc, yc, xt[:, :0]).mean.shape == (2, 0, 1)


def test_mixture_aggregate(float64, gen):
    model = small_lps(n_samples_eval=4, aggregate="mixture")
    model.eval()
    xc, yc, xt = task2d(gen)
    out = model.forward_with_samples(xc, yc, xt, generator=gen)
    dist = out.distribution
    assert dist.batch_shape == (2, 6, 1)
    assert torch.allclose(dist.mean, out.means.mean(0), atol=1e-12)
    yt = torch.randn(2, 6, 1, generator=gen)
    manual = torch.logsumexp(torch.distributions.Normal(out.means, out.stds).log_prob(yt), 0) \
        - torch.log(torch.tensor(4.0))
    assert torch.allclose(dist.log_prob(yt), manual, atol=1e-10)


def test_approximate_lps_equivariant_only_in_component(float64, gen):
    model = small_lps(approximate=True)
    task = task2d(gen, scale=1.5)
    with equivariant_component(model):
        assert fixed_noise_error(model, task, gen) < 1e-10
    assert fixed_noise_error(model, task, gen) > 1e-6
    assert model.approximate


def test_aux_fields_silenced_in_component(float64, gen):
    model = small_lps(dim_aux=1)
    model.eval()
    xc, yc, xt = task2d(gen)
    aux = {"aux_c": xc[..., :1] ** 2, "aux_t": xt[..., :1] ** 2}
    out = model.forward_with_samples(xc, yc, xt, generator=gen, **aux)
    with equivariant_component(model):
        assert fixed_noise_error(model, (xc, yc, xt), gen, **aux) < 1e-10
        plain = model.forward_with_samples(xc, yc, xt, noise=out.noise, **aux)
    assert (plain.distribution.mean - out.distribution.mean).abs().max() > 1e-6
    with pytest.raises(ValueError, match="aux_t"):
        model(xc, yc, xt, aux_c=aux["aux_c"])


@pytest.mark.parametrize("approximate", [False, True])
def test_lps_gradients_reach_tnp_and_frame_network(gen, approximate):
    opts = dict(approximate=True, fixed_input_dropout=0.0) if approximate else {}
    model = small_lps(n_samples_train=2, **opts)
    model.train()
    xc, yc, xt = task2d(gen, scale=1.5)
    yt = torch.randn(2, 6, 1, generator=gen)
    model(xc, yc, xt).log_prob(yt).mean().backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for name, p in trained:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any("fixed_input" in n for n, _ in trained) == approximate
    # the frame network's vectors reach the loss through Gram-Schmidt and the canonical inputs
    frame = model.symmetrized.strategy.network.vn
    for p in (frame.inp.weight, frame.vector_head.weight, frame.gate.weight):
        assert p.grad.abs().sum() > 0


def test_lps_rejects_bad_options_and_input():
    with pytest.raises(ValueError, match="aggregate"):
        small_lps(aggregate="median")
    with pytest.raises(ValueError, match="n_samples_eval"):
        small_lps(n_samples_eval=0)
    model = small_lps()
    with pytest.raises(ValueError, match="xc"):
        model(torch.zeros(1, 3, 3), torch.zeros(1, 3, 1), torch.zeros(1, 2, 2))


def _approximate_lps_with_fixed_inputs(gen):
    model = small_lps(approximate=True, fixed_input_domain=[(-2.0, 2.0)] * 2).eval()
    perturb_symmetry_breaking(model, generator=gen)  # non-zero fixed inputs
    return model


def test_delta_equiv_of_lps_is_exactly_zero_outside_its_domain(float64, gen):
    # every location beyond the box (-2, 2)^2: the fixed inputs are exactly zero there, so with
    # the same group elements drawn in both passes the model is its component (before the
    # passes shared their draws, this measured Monte-Carlo noise: about 4e-4 here)
    model = _approximate_lps_with_fixed_inputs(gen)
    xc, yc, xt = task2d(gen)
    far = torch.tensor([6.0, -5.0], dtype=torch.float64)
    delta = delta_equiv(model, xc + far, yc, xt + far)
    assert delta.shape == (2,) and torch.equal(delta, torch.zeros(2, dtype=torch.float64))


def test_delta_equiv_of_lps_is_non_zero_inside_its_domain(float64, gen):
    model = _approximate_lps_with_fixed_inputs(gen)
    delta = delta_equiv(model, *task2d(gen))
    assert (delta > 1e-4).all()


def test_delta_equiv_uses_common_draws_and_leaves_the_callers_stream(float64, gen):
    model = _approximate_lps_with_fixed_inputs(gen)
    task = task2d(gen)
    assert torch.equal(delta_equiv(model, *task, seed=3), delta_equiv(model, *task, seed=3))
    torch.manual_seed(0)
    delta_equiv(model, *task)
    after = torch.rand(1)
    torch.manual_seed(0)
    torch.randint(0, 2 ** 62, ())  # delta_equiv's one draw of the shared seed
    assert torch.equal(after, torch.rand(1))
