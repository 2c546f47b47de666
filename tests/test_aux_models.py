"""Auxiliary inputs (elevation-like fields) in the TNPs and the ConvCNP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from approxeq.approximate import equivariant_component, is_approximate
from approxeq.np import build_model
from approxeq.testing import assert_equivariant, assert_not_equivariant, random_task

SMALL = {"width": 16, "num_layers": 2, "num_heads": 2, "num_pseudo_tokens": 4}
CONV = {"channels": 8, "num_layers": 2, "points_per_unit": 4}
ALL = [("tnp", SMALL), ("pt-tnp", SMALL), ("te-tnp", SMALL), ("te-pt-tnp", SMALL),
       ("convcnp", CONV)]
EQUIVARIANT = [(n, o, a) for n, o in ALL if n in ("te-tnp", "te-pt-tnp", "convcnp")
               for a in (False, True)]


def elevation_like(x: torch.Tensor) -> torch.Tensor:
    """A 2-channel field of absolute location, ``[b, n, 2]``."""
    return torch.stack([torch.sin(2.0 * x[..., 0]) + x[..., 1] ** 2,
                        torch.cos(x.sum(-1))], -1)


class ReadsField(nn.Module):
    """The model fed with auxiliary values read from a fixed field at the given locations, so
    moving the points changes their auxiliary values (as elevation does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.symmetry = model, model.symmetry

    def forward(self, xc, yc, xt):
        return self.model(xc, yc, xt, aux_c=elevation_like(xc), aux_t=elevation_like(xt))


def build(name, options, approximate=False, **extra):
    opts = {**options, "dim_aux": 2, **extra}
    if approximate:
        opts.update(approximate=True, fixed_input_domain=[[-3.0, 3.0]] * 2)
    return build_model(name, 2, 1, **opts)


@pytest.mark.parametrize("name,options", ALL)
def test_runs_with_aux_and_checks_it(name, options):
    model = build(name, options)
    xc, yc, xt = random_task(nc=7, nt=5, dim_x=2)
    pred = model(xc, yc, xt, aux_c=elevation_like(xc), aux_t=elevation_like(xt))
    assert pred.mean.shape == (2, 5, 1) and torch.isfinite(pred.mean).all()
    with pytest.raises(ValueError, match="aux_t"):
        model(xc, yc, xt, aux_c=elevation_like(xc))
    with pytest.raises(ValueError, match="aux_c"):
        model(xc, yc, xt, aux_c=elevation_like(xc)[:, :3], aux_t=elevation_like(xt))
    plain = build_model(name, 2, 1, **options)
    with pytest.raises(ValueError, match="dim_aux"):
        plain(xc, yc, xt, aux_c=elevation_like(xc), aux_t=elevation_like(xt))


@pytest.mark.parametrize("name,options", ALL)
def test_aux_changes_prediction_only_outside_component(name, options):
    model = build(name, options).eval()
    xc, yc, xt = random_task(nc=7, nt=5, dim_x=2)
    a_c, a_t = elevation_like(xc), elevation_like(xt)
    assert is_approximate(model)
    assert not torch.allclose(model(xc, yc, xt, aux_c=a_c, aux_t=a_t).mean,
                              model(xc, yc, xt, aux_c=a_c + 1, aux_t=a_t - 1).mean)
    with equivariant_component(model):
        torch.testing.assert_close(model(xc, yc, xt, aux_c=a_c, aux_t=a_t).mean,
                                   model(xc, yc, xt, aux_c=a_c + 1, aux_t=a_t - 1).mean)


@pytest.mark.parametrize("name,options", ALL)
def test_empty_context_with_aux(name, options):
    model = build(name, options)
    xc, yc, xt = random_task(nc=0, nt=4, dim_x=2)
    pred = model(xc, yc, xt, aux_c=elevation_like(xc), aux_t=elevation_like(xt))
    assert pred.mean.shape == (2, 4, 1)


@pytest.mark.parametrize("name,options,approximate", EQUIVARIANT)
def test_component_equivariant_when_aux_is_a_field(name, options, approximate, float64):
    model = ReadsField(build(name, options, approximate))
    task = random_task(nc=8, nt=6, dim_x=2, dtype=torch.float64)
    with equivariant_component(model):
        assert_equivariant(model, model.symmetry, task, atol=1e-8)
    assert_not_equivariant(model, model.symmetry, task, margin=1e-4)


@pytest.mark.parametrize("name,options", [(n, o) for n, o in ALL
                                          if n in ("te-tnp", "te-pt-tnp", "convcnp")])
def test_exact_model_equivariant_when_aux_moves_with_points(name, options, float64):
    model = build(name, options)
    xc, yc, xt = random_task(nc=8, nt=6, dim_x=2, dtype=torch.float64)
    kwargs = {"aux_c": elevation_like(xc), "aux_t": elevation_like(xt)}
    assert_equivariant(model, model.symmetry, (xc, yc, xt), atol=1e-8, model_kwargs=kwargs)


def test_aux_options_are_validated():
    with pytest.raises(ValueError, match="dim_aux"):
        build_model("te-tnp", 2, 1, **SMALL, dim_aux=-1)
    with pytest.raises(ValueError, match="aux_dropout"):
        build_model("convcnp", 2, 1, **CONV, dim_aux=1, aux_dropout=1.5)
