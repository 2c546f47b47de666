"""Every E(2) model with vector outputs: f(g·D)(g·x) = ρ(g) f(D)(x) in float64, for sampled
elements and for the whole point group; approximate models inside their equivariant
component, and measurably not outside it."""

from __future__ import annotations

import pytest
import torch

from approxeq.approximate import equivariant_component
from approxeq.groups import E, LatticeEuclidean, OutputRep, Translation
from approxeq.np import build_model, np_evaluate, np_loss
from approxeq.np.batch import Batch
from approxeq.testing import (
    assert_vector_equivariant,
    perturb_symmetry_breaking,
    random_task,
    vector_equivariance_error,
)

SMALL = {
    "e-tnp": {"width": 16, "num_layers": 2, "num_heads": 2},
    "lps-tnp": {"width": 16, "num_layers": 1, "num_heads": 2, "frame_hidden": 4},
    "equivcnp": {"channels": 4, "num_layers": 2, "kernel_size": 3, "points_per_unit": 4.0},
}
REPS = [("vector", 2), (["vector", "scalar"], 3), (["scalar", "vector", "vector"], 5)]
#: the 8 elements of D4 (rotations by 90° and reflections), as E(2) elements
D4_POINT_GROUP = LatticeEuclidean(4).with_shifts(torch.zeros(1, 2, dtype=torch.float64))


def small(name, dim_y, **options):
    return build_model(name, 2, dim_y, **{**SMALL[name], **options})


def task_for(dim_y, gen, nc=7, **kw):
    return random_task(2, nc, 5, 2, dim_y, generator=gen, **kw)


@pytest.mark.parametrize("y_rep, dim_y", REPS, ids=str)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_vector_models_are_equivariant(name, y_rep, dim_y, float64, gen):
    model = small(name, dim_y, y_rep=y_rep)
    assert model.y_rep == OutputRep.parse(y_rep, 2, dim_y)
    task = task_for(dim_y, gen)
    assert_vector_equivariant(model, task)  # sampled elements of model.symmetry
    assert_vector_equivariant(model, task, group=E(2), elements=D4_POINT_GROUP)  # all of D4
    assert_vector_equivariant(model, task_for(dim_y, gen, nc=0))  # an empty context


@pytest.mark.parametrize("name", ["e-tnp", "equivcnp"])
def test_full_covariance_is_equivariant(name, float64, gen):
    model = small(name, 3, y_rep=["vector", "scalar"], vector_covariance="full")
    task = task_for(3, gen)
    pred = model(*task)
    assert (pred.batch_shape, pred.event_shape) == (torch.Size([2, 5]), torch.Size([3]))
    assert_vector_equivariant(model, task)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_scalar_treatment_is_not_equivariant_as_vectors(name, float64, gen):
    """The same model built for two scalars is caught by the vector check: the test can fail."""
    model = small(name, 2)
    model.y_rep = OutputRep(("vector",))  # read its two scalars as one vector
    assert vector_equivariance_error(model, task_for(2, gen)) > 1e-3


@pytest.mark.parametrize("name", sorted(SMALL))
def test_approximate_vector_models(name, float64, gen):
    model = small(name, 2, y_rep="vector", approximate=True)
    perturb_symmetry_breaking(model, generator=gen)
    task = task_for(2, gen, scale=1.5)  # inside the fixed inputs' domain
    assert vector_equivariance_error(model, task) > 1e-3
    with equivariant_component(model):
        assert_vector_equivariant(model, task)


@pytest.mark.parametrize("name", ["convcnp", "te-tnp", "te-pt-tnp"])
def test_translation_models_with_vectors(name, float64, gen):
    options = {"convcnp": {"channels": 4, "num_layers": 1, "points_per_unit": 4.0},
               "te-tnp": SMALL["e-tnp"],
               "te-pt-tnp": {**SMALL["e-tnp"], "num_pseudo_tokens": 4}}[name]
    model = build_model(name, 2, 2, y_rep="vector", **options)
    assert_vector_equivariant(model, task_for(2, gen), scale=2.0)
    assert isinstance(model.symmetry, Translation)


@pytest.mark.parametrize("covariance", ["isotropic", "full"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_vector_models_train(name, covariance, gen):
    if name == "lps-tnp" and covariance == "full":
        pytest.skip("lps-tnp combines its draws as an isotropic Gaussian")
    model = small(name, 2, y_rep="vector", vector_covariance=covariance)
    xc, yc, xt = task_for(2, gen)
    loss = np_loss(model, Batch(xc, yc, xt, torch.randn(2, 5, 2, generator=gen)))
    loss.backward()
    assert torch.isfinite(loss)


def test_full_covariance_loss_and_evaluation(float64, gen):
    """The loss of a full covariance is per output value, like a factorised one, masks work,
    and evaluation in target chunks joins the chunks' predictions."""
    model = small("e-tnp", 2, y_rep="vector", vector_covariance="full")
    xc, yc, xt = task_for(2, gen)
    yt = torch.randn(2, 5, 2, generator=gen)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    pred = model(xc, yc, xt)
    expected = -(pred.log_prob(yt) * mask).sum(-1) / mask.sum(-1) / 2
    torch.testing.assert_close(np_loss(model, Batch(xc, yc, xt, yt, mt=mask)), expected.mean())
    whole = np_evaluate(model, Batch(xc, yc, xt, yt))
    chunked = np_evaluate(model, Batch(xc, yc, xt, yt), max_memory_mb=1e-6)
    torch.testing.assert_close(chunked.loglik, whole.loglik)


@pytest.mark.parametrize("name, options, named", [
    ("e-tnp", {"vector_covariance": "full"}, "vector_covariance"),
    ("lps-tnp", {"y_rep": "vector", "aggregate": "mixture"}, "aggregate"),
    ("equivcnp", {"y_rep": "vector", "vector_covariance": "diagonal"}, "vector_covariance"),
])
def test_vector_options_refused_in_one_line(name, options, named):
    with pytest.raises(ValueError, match=f"^{named}"):
        build_model(name, 2, 2, **{**SMALL[name], **options})


@pytest.mark.parametrize("name", sorted(SMALL))
def test_vector_models_round_trip_a_checkpoint(name, tmp_path, gen):
    from approxeq.train.checkpoint import load_model, save_checkpoint

    model = small(name, 3, y_rep=OutputRep(("vector", "scalar")))
    assert model.build_options["y_rep"] == ["vector", "scalar"]  # as a config writes it
    save_checkpoint(tmp_path / "model.pt", model)
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.y_rep == model.y_rep
    model.eval(), loaded.eval()
    task = task_for(3, gen)
    torch.manual_seed(0)
    before = model(*task).mean
    torch.manual_seed(0)
    torch.testing.assert_close(loaded(*task).mean, before)
