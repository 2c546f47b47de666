"""The MLP and transformer neural processes: cnp, tnp, pt-tnp, te-tnp, te-pt-tnp (+ approximate)."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Distribution

from approxeq.approximate import equivariant_component, is_approximate
from approxeq.groups import Translation
from approxeq.np import available_models, build_model
from approxeq.testing import (
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_not_equivariant,
    random_task,
)

SMALL = dict(width=16, num_layers=2, num_heads=4, num_pseudo_tokens=4)
# (registry name, extra options): every architecture variant
MODELS = [("cnp", {}), ("tnp", {}), ("pt-tnp", {}), ("pt-tnp", {"variant": "ist"}),
          ("te-tnp", {}), ("te-pt-tnp", {}), ("te-pt-tnp", {"variant": "ist"}),
          ("te-tnp", {"approximate": True}), ("te-pt-tnp", {"approximate": True})]
EQUIVARIANT = [m for m in MODELS if m[0].startswith("te-") and not m[1].get("approximate")]
NOT_EQUIVARIANT = [m for m in MODELS if not m[0].startswith("te-")]
APPROXIMATE = [m for m in MODELS if m[1].get("approximate")]


def ids(models):
    return [name + "".join(f"-{v}" for v in opts.values()) for name, opts in models]


def is_approx(opts):
    return bool(opts.get("approximate"))


def make(name, opts, dim_x=1, dim_y=1, **more):
    return build_model(name, dim_x, dim_y, **SMALL, **opts, **more)


@pytest.mark.parametrize("name, opts", MODELS, ids=ids(MODELS))
@pytest.mark.parametrize("dim_x, dim_y", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_prediction_shape_and_finite_log_prob(gen, name, opts, dim_x, dim_y):
    model = make(name, opts, dim_x, dim_y)
    xc, yc, xt = random_task(3, 6, 9, dim_x, dim_y, generator=gen)
    pred = model(xc, yc, xt)
    assert isinstance(pred, Distribution) and pred.batch_shape == (3, 9, dim_y)
    assert torch.isfinite(pred.log_prob(torch.randn(3, 9, dim_y, generator=gen))).all()
    assert (model.dim_x, model.dim_y) == (dim_x, dim_y)


@pytest.mark.parametrize("name, opts", MODELS, ids=ids(MODELS))
def test_empty_context_and_varying_sizes(gen, name, opts):
    model = make(name, opts, 2, 1)
    for nc, nt in [(0, 5), (7, 3), (1, 11), (0, 1)]:
        xc, yc, xt = random_task(2, nc, nt, 2, 1, generator=gen)
        pred = model(xc, yc, xt)
        assert pred.batch_shape == (2, nt, 1)
        assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.stddev).all()


@pytest.mark.parametrize("name, opts", MODELS, ids=ids(MODELS))
def test_gradients_reach_all_parameters(gen, name, opts):
    model = make(name, opts, 2, 2, **({"fixed_input_dropout": 0.0} if is_approx(opts) else {}))
    xc, yc, xt = random_task(2, 5, 4, 2, 2, generator=gen)
    model(xc, yc, xt).log_prob(torch.randn(2, 4, 2, generator=gen)).mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name, opts", EQUIVARIANT, ids=ids(EQUIVARIANT))
@pytest.mark.parametrize("dim_x", [1, 2])
def test_te_models_translation_equivariant(float64, gen, name, opts, dim_x):
    model = make(name, opts, dim_x, 2)
    assert model.symmetry == Translation(dim_x)
    task = random_task(2, 8, 10, dim_x, 2, generator=gen)
    report = assert_equivariant(model, Translation(dim_x), task, atol=1e-9)
    assert report.scale > 1e-3  # the predictions are not trivially constant
    empty = random_task(2, 0, 10, dim_x, 2, generator=gen)
    assert_equivariant(model, Translation(dim_x), empty, atol=1e-9)


@pytest.mark.parametrize("name, opts", NOT_EQUIVARIANT, ids=ids(NOT_EQUIVARIANT))
def test_other_models_not_translation_equivariant(float64, gen, name, opts):
    model = make(name, opts, 1, 1)
    assert model.symmetry is None
    assert_not_equivariant(model, Translation(1), random_task(2, 8, 10, generator=gen))


@pytest.mark.parametrize("name, opts", MODELS, ids=ids(MODELS))
def test_context_permutation_invariant(float64, gen, name, opts):
    model = make(name, opts, 2, 1)
    task = random_task(2, 9, 6, 2, 1, generator=gen)
    assert_context_permutation_invariant(model, task, atol=1e-10)


@pytest.mark.parametrize("name, opts", APPROXIMATE, ids=ids(APPROXIMATE))
@pytest.mark.parametrize("num_fixed_inputs", [None, 3])
def test_approximate_models_equivariant_only_in_component(float64, gen, name, opts,
                                                          num_fixed_inputs):
    model = make(name, opts, 1, 1, num_fixed_inputs=num_fixed_inputs)
    assert is_approximate(model) and model.symmetry == Translation(1)
    task = random_task(2, 8, 10, 1, 1, scale=1.5, generator=gen)  # inside the fixed-input box
    with equivariant_component(model):
        assert_equivariant(model, Translation(1), task, atol=1e-9)
    assert_not_equivariant(model, Translation(1), task)


@pytest.mark.parametrize("name, opts", APPROXIMATE, ids=ids(APPROXIMATE))
def test_equivariant_component_equals_exact_model(float64, gen, name, opts):
    approx = make(name, opts, 2, 1).eval()
    exact = make(name, {k: v for k, v in opts.items() if k != "approximate"}, 2, 1).eval()
    result = approx.load_state_dict(exact.state_dict(), strict=False)
    assert not result.unexpected_keys
    # the fixed input lives in the encoder (on the context or on the pseudo-tokens)
    assert result.missing_keys and all(k.startswith(("encoder.fixed_input.",
                                                     "encoder.pseudo_fixed_input."))
                                       for k in result.missing_keys)
    task = random_task(2, 7, 5, 2, 1, scale=1.5, generator=gen)
    with torch.no_grad():
        with equivariant_component(approx):
            inside = approx(*task)
        full, reference = approx(*task), exact(*task)
    torch.testing.assert_close(inside.mean, reference.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(inside.stddev, reference.stddev, rtol=0, atol=1e-12)
    assert (full.mean - reference.mean).abs().max() > 1e-4


def test_fixed_inputs_vanish_outside_their_domain(float64, gen):
    model = make("te-tnp", {"approximate": True}, 1, 1, fixed_input_domain=[(-1.0, 1.0)]).eval()
    xc, yc, xt = random_task(2, 8, 10, generator=gen)
    far = (xc + 10.0, yc, xt + 10.0)  # all context inputs outside (-1, 1)
    with torch.no_grad(), equivariant_component(model):
        component = model(*far).mean
    torch.testing.assert_close(model(*far).mean, component, rtol=0, atol=0)


def test_te_model_chunking_does_not_change_predictions(float64, gen):
    task = random_task(1, 12, 9, 2, 1, generator=gen)
    torch.manual_seed(1)
    unchunked = make("te-tnp", {}, 2, 1)
    torch.manual_seed(1)
    chunked = make("te-tnp", {}, 2, 1, chunk_size=2)
    assert torch.equal(unchunked(*task).mean, chunked(*task).mean)


@pytest.mark.parametrize("name", ["cnp", "tnp", "pt-tnp"])
def test_non_te_models_reject_approximate(name):
    with pytest.raises(ValueError, match="approximate"):
        build_model(name, 1, 1, approximate=True)


@pytest.mark.parametrize("name", ["cnp", "tnp", "pt-tnp", "te-tnp", "te-pt-tnp"])
def test_options_validated(name):
    with pytest.raises(ValueError, match="no_such_option"):
        build_model(name, 1, 1, no_such_option=3)
    with pytest.raises(ValueError, match="num_heads"):
        build_model(name, 1, 1, width=10, num_heads=4)
    with pytest.raises(ValueError, match="width"):
        build_model(name, 1, 1, width=0)


@pytest.mark.parametrize("name", ["cnp", "tnp", "pt-tnp", "te-tnp", "te-pt-tnp"])
def test_input_validation_names_the_argument(gen, name):
    model = build_model(name, 1, 1, **SMALL)
    xc, yc, xt = random_task(2, 5, 4, generator=gen)
    bad = {
        "xc": [(xc[0], yc, xt, ValueError), (xc[:1], yc, xt, ValueError),
               (xc.long(), yc, xt, TypeError)],
        "yc": [(xc, yc[:, :3], xt, ValueError), (xc, torch.cat([yc, yc], -1), xt, ValueError)],
        "xt": [(xc, yc, torch.cat([xt, xt], -1), ValueError), (xc, yc, xt[None], ValueError),
               (xc, yc, xt.clone().fill_(float("nan")), ValueError),
               (xc, yc, xt.clone().fill_(float("inf")), ValueError)],
    }
    for arg, cases in bad.items():
        for a, b, c, error in cases:
            with pytest.raises(error, match=arg):
                model(a, b, c)
    with pytest.raises(ValueError, match="xc"):  # built for dim_x = 1
        model(*random_task(2, 5, 4, dim_x=2, generator=gen))
    with pytest.raises(TypeError, match="dtype"):
        model(xc.double(), yc.double(), xt.double())


@pytest.mark.parametrize("name", sorted(available_models()))
def test_every_model_rejects_an_unknown_option_by_name(name):
    with pytest.raises(ValueError, match="unknown option.*'bogus'.*accepted options"):
        build_model(name, 2, 1, bogus=3)
