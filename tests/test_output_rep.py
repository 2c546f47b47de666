"""Output representations: the typed value, its action ρ(g), and the ``y_rep`` option."""

from __future__ import annotations

import pytest
import torch

from approxeq.groups import SO, Cyclic, Dihedral, O, OutputRep, Translation, output_rep
from approxeq.groups.lattice import LatticeEuclidean
from approxeq.np import build_model
from approxeq.testing import random_task

GROUPS = [O(2), SO(2), Dihedral(4), Cyclic(4), Dihedral(8), LatticeEuclidean(4, spacing=0.25)]


def _matrix(group, g):
    """The 2x2 rotation part of ``g``, from the group's action on the unit vectors."""
    e = torch.eye(2, dtype=torch.float64).expand(g.shape[0], 2, 2)
    return group.act_vectors(g, e).transpose(-1, -2)  # columns: images of e1, e2


def test_parse_names_and_dims():
    assert OutputRep.parse("scalar", 2, 3) == OutputRep(("scalar",) * 3)
    assert OutputRep.parse("vector", 2, 2).kinds == ("vector",)
    rep = OutputRep.parse(["vector", "scalar"], 2, 3)
    assert (rep.dim, rep.num_vectors, rep.num_scalars) == (3, 1, 1)
    assert rep.vector_slices() == [slice(0, 2)] and rep.scalar_index() == [2]


@pytest.mark.parametrize("y_rep, dim_x, dim_y, named", [
    ("vector", 1, 2, "dim_x"), ("vector", 3, 2, "dim_x"), ("vector", 2, 3, "dim_y"),
    (["vector", "scalar"], 2, 2, "dim_y"), (["vector", "tensor"], 2, 3, "y_rep"),
    ("vectors", 2, 2, "y_rep"), (2, 2, 2, "y_rep"), ([], 2, 2, "y_rep"),
])
def test_parse_refuses_in_one_line(y_rep, dim_x, dim_y, named):
    with pytest.raises(ValueError, match=f"^{named}: ") as err:
        OutputRep.parse(y_rep, dim_x, dim_y)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("group", GROUPS, ids=repr)
def test_action_is_the_rotation_part_and_a_homomorphism(group, float64, gen):
    rep = OutputRep.parse(["scalar", "vector", "vector"], 2, 5)
    g, h = (group.sample(4, generator=gen, dtype=float64) for _ in range(2))
    y = torch.randn(4, 7, 5, generator=gen, dtype=float64)
    m = _matrix(group, g)
    moved = rep.act(group, g, y)
    assert torch.equal(moved[..., 0], y[..., 0])  # scalars unchanged
    for s in (slice(1, 3), slice(3, 5)):
        torch.testing.assert_close(moved[..., s], y[..., s] @ m.transpose(-1, -2))
    torch.testing.assert_close(rep.act(group, group.compose(g, h), y),
                               rep.act(group, g, rep.act(group, h, y)))
    cov = torch.randn(4, 7, 5, 5, generator=gen, dtype=float64)
    full = torch.eye(5, dtype=float64).repeat(4, 1, 1)
    full[:, 1:3, 1:3] = m
    full[:, 3:5, 3:5] = m
    torch.testing.assert_close(rep.act_covariance(group, g, cov),
                               full[:, None] @ cov @ full[:, None].transpose(-1, -2))


def test_translations_leave_vectors_unchanged(float64, gen):
    group = Translation(2)
    y = torch.randn(3, 4, 2, generator=gen, dtype=float64)
    assert torch.equal(OutputRep.parse("vector", 2, 2).act(group, group.sample(3), y), y)


def test_invariants_are_invariant(float64, gen):
    rep = OutputRep.parse(["vector", "scalar"], 2, 3)
    g = O(2).sample(2, generator=gen, dtype=float64)
    y = torch.randn(2, 5, 3, generator=gen, dtype=float64)
    torch.testing.assert_close(rep.invariants(rep.act(O(2), g, y)), rep.invariants(y))


@pytest.mark.parametrize("name", ["convcnp", "te-tnp", "te-pt-tnp"])
def test_translation_models_take_y_rep(name):
    small = {"convcnp": {"channels": 4, "num_layers": 1, "points_per_unit": 4.0},
             "te-tnp": {"width": 8, "num_layers": 1, "num_heads": 2},
             "te-pt-tnp": {"width": 8, "num_layers": 1, "num_heads": 2,
                           "num_pseudo_tokens": 4}}[name]
    model = build_model(name, 2, 3, y_rep=["vector", "scalar"], **small)
    assert model.y_rep == OutputRep(("vector", "scalar"))
    assert output_rep(build_model(name, 2, 3, **small)) == OutputRep.scalar(3)


def test_scalar_default_is_bit_for_bit():
    """``y_rep="scalar"`` builds the same parameters and predictions as no ``y_rep``."""
    outs = []
    for options in ({}, {"y_rep": "scalar"}):
        torch.manual_seed(3)
        model = build_model("te-tnp", 2, 2, width=8, num_layers=1, num_heads=2, **options)
        outs.append(model(*random_task(dim_x=2, dim_y=2)).mean)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("name, dim_x, dim_y, named", [
    ("convcnp", 1, 2, "dim_x"), ("te-tnp", 2, 3, "dim_y"), ("te-tnp", 2, 2, "y_rep"),
])
def test_build_model_refuses_inconsistent_y_rep(name, dim_x, dim_y, named):
    y_rep = "tensor" if named == "y_rep" else "vector"
    with pytest.raises(ValueError, match=f"^{named}: "):
        build_model(name, dim_x, dim_y, y_rep=y_rep)


@pytest.mark.parametrize("name", ["cnp", "tnp", "pt-tnp", "relaxed-convcnp"])
def test_other_models_record_y_rep(name):
    """Models equivariant to nothing (or to translations only) take the option, so that one
    experiment config gives every model the same y_rep."""
    small = {"cnp": {"width": 8, "num_layers": 1}, "tnp": {"width": 8, "num_layers": 1},
             "pt-tnp": {"width": 8, "num_layers": 1, "num_pseudo_tokens": 4},
             "relaxed-convcnp": {"channels": 4, "num_layers": 1, "points_per_unit": 4.0}}[name]
    model = build_model(name, 2, 2, y_rep="vector", **small)
    assert model.y_rep == OutputRep(("vector",))
