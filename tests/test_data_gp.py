"""Kernels and synthetic task generators: validity, presets, windows, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from approxeq.data import (
    EQ,
    TASK_NAMES,
    Gibbs,
    GPGenerator,
    Matern52,
    Periodic,
    WeaklyPeriodic,
    gibbs_kernels,
    gp_task,
    ood,
)

KERNELS = [EQ(lengthscale=0.5, variance=2.0), Matern52(lengthscale=0.3), Periodic(0.7, period=1.3),
           WeaklyPeriodic(1.0, period=0.4), Gibbs.switching(0.0, 4.0, 0.1),
           Gibbs.switching(1.0, 0.1, 4.0)]
GP_TASKS = [n for n in TASK_NAMES if n not in ("sawtooth", "mixture")]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: type(k).__name__)
@pytest.mark.parametrize("dim_x", [1, 2])
def test_kernel_is_a_covariance(kernel, dim_x, float64, gen):
    x = torch.rand(2, 40, dim_x, generator=gen) * 6 - 3
    k = kernel(x, x)
    assert k.shape == (2, 40, 40)
    torch.testing.assert_close(k, k.transpose(-1, -2))
    assert float(torch.linalg.eigvalsh(k).min()) > -1e-9
    variance = getattr(kernel, "variance", 1.0)
    torch.testing.assert_close(torch.diagonal(k, dim1=-2, dim2=-1), torch.full((2, 40), variance))
    assert kernel(x, x[:, :7]).shape == (2, 40, 7)


def test_gibbs_switches_lengthscale_at_the_changepoint(float64, gen):
    left = torch.rand(1, 20, 1, generator=gen) * 2 - 3  # in [-3, -1]
    right = torch.rand(1, 20, 1, generator=gen) * 2 + 1  # in [1, 3]
    kernel = Gibbs.switching(changepoint=0.0, left=4.0, right=0.1)
    torch.testing.assert_close(kernel(left, left), EQ(lengthscale=4.0)(left, left))
    torch.testing.assert_close(kernel(right, right), EQ(lengthscale=0.1)(right, right))
    flipped = Gibbs.switching(changepoint=0.0, left=0.1, right=4.0)
    torch.testing.assert_close(flipped(left, left), EQ(lengthscale=0.1)(left, left))
    s = 4.0**2 + 0.1**2  # across the changepoint: the Gibbs prefactor and the summed lengthscales
    expected = math.sqrt(2 * 4.0 * 0.1 / s) * torch.exp(-(left - right.transpose(1, 2)) ** 2 / s)
    torch.testing.assert_close(kernel(left, right), expected)


def test_kernel_formulas_at_known_points(float64):
    x, ell, p = torch.zeros(1, 1, 1), 0.6, 1.3
    r = torch.full((1, 1, 1), ell)
    s5 = math.sqrt(5.0)
    matern_at_ell = (1 + s5 + 5 / 3) * math.exp(-s5)
    torch.testing.assert_close(Matern52(ell)(x, r), torch.full((1, 1, 1), matern_at_ell))
    torch.testing.assert_close(Periodic(0.5, period=p)(x, x + 3 * p), torch.ones(1, 1, 1))
    torch.testing.assert_close(WeaklyPeriodic(2.0, period=p)(x, x + p), EQ(2.0)(x, x + p))


def test_per_task_hyperparameters_match_separate_kernels(float64, gen):
    x = torch.rand(3, 10, 1, generator=gen)
    ls = torch.tensor([0.2, 0.5, 1.0])
    for make in (EQ, Matern52):
        k = make(lengthscale=ls)(x, x)
        for i in range(3):
            one = make(lengthscale=float(ls[i]))(x[i:i + 1], x[i:i + 1])[0]
            torch.testing.assert_close(k[i], one)


def test_kernel_rejects_bad_inputs():
    with pytest.raises(ValueError, match="x1"):
        EQ()(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="x2"):
        EQ()(torch.zeros(2, 4, 1), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="hyper-parameter"):
        EQ(lengthscale=torch.ones(3))(torch.zeros(2, 4, 1))


@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("shifted", [False, True])
def test_preset_shapes_and_windows(name, shifted, gen):
    task = gp_task(name, ood=shifted)
    batch = task.sample(4, gen)
    s = 8.0 if shifted else 0.0
    nc, nt = batch.xc.shape[1], batch.xt.shape[1]
    assert 1 <= nc <= 64 and nt == 128
    assert batch.xc.shape == (4, nc, 1) and batch.yt.shape == (4, nt, 1)
    assert all(t.dtype == torch.float32 for t in (batch.xc, batch.yc, batch.xt, batch.yt))
    assert float(batch.xc.min()) >= s - 2 and float(batch.xc.max()) <= s + 2
    assert float(batch.xt.min()) >= s - 4 and float(batch.xt.max()) <= s + 4
    assert float(batch.xt.max()) > s + 2  # targets do leave the context window
    if name in GP_TASKS:
        for key in ("gt_loglik", "gt_loglik_joint"):
            assert batch.aux[key].shape == (4,) and batch.aux[key].dtype == torch.float64
            assert bool(torch.isfinite(batch.aux[key]).all())
    else:
        assert not batch.aux or "gt_loglik" not in batch.aux


def test_ood_moves_both_windows_and_keeps_the_kernels():
    task = gp_task("gibbs")
    shifted = ood(task, shift=8.0)
    assert shifted.context_range.tolist() == [[6.0, 10.0]]
    assert shifted.target_range.tolist() == [[4.0, 12.0]]
    assert shifted.kernel_prior.kernels == task.kernel_prior.kernels == gibbs_kernels()
    assert task.context_range.tolist() == [[-2.0, 2.0]]  # the original is untouched
    assert gp_task("gibbs", ood=True, shift=-6.0).target_range.tolist() == [[-10.0, -2.0]]


@pytest.mark.parametrize("name", ["eq", "gibbs", "sawtooth"])
def test_two_dimensional_inputs_and_outputs(name, gen):
    batch = gp_task(name, dim_x=2, dim_y=2, ood=True).sample(3, gen)
    assert batch.xc.shape[-1] == 2 and batch.yt.shape == (3, 128, 2)
    assert float(batch.xc.min()) >= 6 and float(batch.xc.max()) <= 10


@pytest.mark.parametrize("name", GP_TASKS)
def test_generator_oracle_matches_recomputation(name, gen):
    batch = gp_task(name).sample(3, gen)
    ll = batch.aux["oracle"].loglik(batch.xc, batch.yc, batch.xt, batch.yt)
    torch.testing.assert_close(batch.aux["gt_loglik"], ll.marginal)
    torch.testing.assert_close(batch.aux["gt_loglik_joint"], ll.joint)


def test_oracle_can_be_switched_off(gen):
    batch = gp_task("gibbs", oracle=False).sample(2, gen)
    assert "gt_loglik" not in batch.aux and "oracle" in batch.aux
    assert gp_task("sawtooth", oracle=False).sample(2, gen).aux is None


@pytest.mark.parametrize("name", ["gibbs", "sawtooth", "mixture"])
def test_fixed_sets_are_reproducible(name):
    task = gp_task(name)
    a, b = task.fixed_set(10, 4, seed=3), task.fixed_set(10, 4, seed=3)
    c = task.fixed_set(10, 4, seed=4)
    assert [x.batch_size for x in a] == [4, 4, 2]
    for x, y in zip(a, b):
        for f in ("xc", "yc", "xt", "yt"):
            assert torch.equal(getattr(x, f), getattr(y, f))
        if name == "gibbs":
            assert torch.equal(x.aux["gt_loglik"], y.aux["gt_loglik"])
    assert not torch.equal(a[0].yt, c[0].yt)


def test_empty_context(gen):
    batch = gp_task("eq", num_context=0).sample(3, gen)
    assert batch.xc.shape == (3, 0, 1) and batch.yc.shape == (3, 0, 1)
    kernel = batch.aux["kernel"]
    prior_std = math.sqrt(1 + 0.1**2 + 1e-6)
    expected = torch.distributions.Normal(0.0, prior_std).log_prob(batch.yt.double()).mean((1, 2))
    torch.testing.assert_close(batch.aux["gt_loglik"], expected)
    assert isinstance(kernel, EQ)
    sizes = {gp_task("gibbs", num_context=(0, 2)).sample(1, gen).xc.shape[1] for _ in range(30)}
    assert sizes == {0, 1, 2}


def test_gp_values_have_unit_variance():
    task = GPGenerator(EQ(lengthscale=0.5), noise_std=0.1, num_context=32, oracle=False)
    y = torch.cat([b.yt for b in task.fixed_set(64, 32, seed=0)])
    assert abs(float(y.mean())) < 0.15
    assert 0.8 < float(y.var()) < 1.25


def test_gibbs_task_uses_all_six_kernels():
    task = gp_task("gibbs", oracle=False)
    kernels = [b.aux["kernel"] for b in task.fixed_set(120, 1, seed=0)]
    counts = [sum(k is ref for k in kernels) for ref in task.kernel_prior.kernels]
    assert len(counts) == 6 and min(counts) >= 8


def test_sawtooth_is_a_sawtooth(gen):
    batch = gp_task("sawtooth", num_context=64).sample(8, gen)
    assert float(batch.yt.min()) >= 0.0 and float(batch.yt.max()) < 1.0
    x, y = batch.xt[..., 0], batch.yt[..., 0]
    order = x.argsort(-1)
    jumps = (y.gather(-1, order).diff(dim=-1) < -0.5).sum(-1)
    assert bool((jumps >= 1).all())  # frequency >= 2 on a window of width 8: it wraps around


def test_bad_preset_arguments():
    with pytest.raises(ValueError, match="name"):
        gp_task("rbf")
    with pytest.raises(ValueError, match="num_context"):
        gp_task("eq", num_context=(5, 2))
    with pytest.raises(ValueError, match="changepoints"):
        gp_task("eq", changepoints=(0.0,))
    with pytest.raises(ValueError, match="context_range"):
        gp_task("eq", dim_x=2, context_range=[(0, 1), (0, 1), (0, 1)])


@pytest.mark.parametrize("name", ["periodic", "gibbs", "mixture"])
def test_generators_pickle(name):
    """Data-loader workers and DDP ranks receive generators by pickling."""
    import pickle

    task = gp_task(name)
    clone = pickle.loads(pickle.dumps(task))
    a, b = task.fixed_set(2, 2, seed=5)[0], clone.fixed_set(2, 2, seed=5)[0]
    assert torch.equal(a.yt, b.yt)


def _random_eq(batch_size: int, generator: torch.Generator) -> EQ:
    return EQ(lengthscale=0.1 + torch.rand(batch_size, generator=generator))


def test_callable_kernel_sampler_per_task(gen):
    task = GPGenerator(_random_eq, noise_std=0.05, dim_x=2, num_context=(2, 3), num_target=5,
                       context_range=[(0, 1), (10, 11)], dtype=torch.float64)
    batch = task.sample(4, gen)
    assert batch.aux["kernel"].lengthscale.shape == (4,) and batch.yt.dtype == torch.float64
    assert 10 <= float(batch.xc[..., 1].min()) and float(batch.xc[..., 1].max()) <= 11
    ll = batch.aux["oracle"].loglik(batch.xc, batch.yc, batch.xt, batch.yt)
    torch.testing.assert_close(batch.aux["gt_loglik"], ll.marginal)


def test_prefetcher_gives_the_serial_batches_bit_identically_and_resumes():
    from approxeq.data import gp_task
    from approxeq.data.prefetch import Prefetcher

    task = gp_task("gibbs", oracle=False)
    serial_rng = torch.Generator().manual_seed(7)
    serial = [task.sample(4, serial_rng) for _ in range(5)]
    rng = torch.Generator().manual_seed(7)
    with Prefetcher(task, 4, rng, depth=2, num_batches=5) as pre:
        got = []
        for i, batch in enumerate(pre):
            got.append(batch)
            if i == 2:
                state = pre.rng_state()
    assert len(got) == 5
    for a, b in zip(serial, got):
        for name in ("xc", "yc", "xt", "yt"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    # the state stored after the third batch resumes with the fourth
    resumed = torch.Generator()
    resumed.set_state(state)
    fourth = task.sample(4, resumed)
    assert torch.equal(fourth.yt, serial[3].yt) and torch.equal(fourth.xc, serial[3].xc)


def test_prefetcher_raises_the_generators_error_and_stops():
    from approxeq.data.prefetch import Prefetcher

    class Broken:
        def sample(self, batch_size, generator):
            raise RuntimeError("boom")

    pre = Prefetcher(Broken(), 2, torch.Generator())
    with pytest.raises(RuntimeError, match="boom"):
        next(pre)
    with pytest.raises(StopIteration):
        next(pre)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(Broken(), 2, torch.Generator(), depth=0)
