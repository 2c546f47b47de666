"""Group convolutions (D_N / C_N), the lattice subgroups of E(2) and the EquivCNP."""

from __future__ import annotations

import math

import pytest
import torch

from approxeq.approximate import equivariance_error, equivariant_component
from approxeq.groups import (
    Cyclic,
    Dihedral,
    Euclidean,
    LatticeEuclidean,
    point_group,
    point_group_matrices,
)
from approxeq.nn.group_conv import (
    GroupCNN,
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    filter_interpolation_error,
)
from approxeq.np import build_model
from approxeq.np.models.equivcnp import symmetric_lattice_grid
from approxeq.testing import (
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_not_equivariant,
    random_task,
)

SMALL = dict(points_per_unit=3, channels=4, num_layers=2, kernel_size=3, margin=0.7)
CELL_SHIFTS = torch.tensor([[0, 0], [2, -3]])


def small_equivcnp(**kw):
    return build_model("equivcnp", 2, 1, **{**SMALL, **kw})


def task2d(gen, nc=7, nt=5):
    return random_task(2, nc, nt, 2, 1, generator=gen)


def assert_informative(model, task, **kw):
    """The prediction varies over the targets and the contexts: an equivariance test of a model
    whose output is constant would pass vacuously."""
    pred = model(*task, **kw)
    assert pred.mean.std() > 1e-3 and pred.stddev.std() > 1e-4


def lattice_elements(model):
    """Every point-group element of the model's symmetry, with and without a lattice shift."""
    return model.symmetry.with_shifts(CELL_SHIFTS.to(torch.get_default_dtype()))


# ----------------------------------------------------------------------------- group conv

def group_net(name):
    group = point_group(name)
    lift = LiftingConv2d(2, 3, 3, group)
    conv = GroupConv2d(3, 2, 3, group)
    return lift, conv, lambda f: conv(torch.relu(lift(f)))


@pytest.mark.parametrize("group", ["D4", "C4"])
def test_group_convolutions_exactly_equivariant(float64, gen, group):
    lift, _, net = group_net(group)
    pg = lift.group
    f = torch.randn(2, 2, 9, 9, generator=gen)
    out = net(f)
    pool = GroupPool(pg.size)
    for g in range(pg.size):
        moved = net(pg.act_scalar(g, f))
        assert torch.allclose(moved, pg.act_regular(g, out), atol=1e-12)
        assert torch.allclose(pool(moved), pg.act_scalar(g, pool(out)), atol=1e-12)
    assert pg.size == (8 if group == "D4" else 4)


def test_d8_exact_on_right_angles_and_interpolated_on_45_degrees(float64, gen):
    lift, _, net = group_net("D8")
    pg = lift.group
    f = torch.randn(2, 2, 9, 9, generator=gen)
    out = net(f)
    for g in range(pg.size):
        err = (net(pg.act_scalar(g, f)) - pg.act_regular(g, out)).abs().max()
        if g % 2 == 0:  # multiples of 90°, with or without the reflection
            assert err < 1e-12
    errors = {(name, k, s): filter_interpolation_error(point_group(name), k, smoothness=s,
                                                       generator=gen)
              for name in ("D4", "D8") for k in (5, 9) for s in (1.0, 2.0)}
    print("\nfilter interpolation error (relative, smooth filters):")
    for (name, k, s), e in errors.items():
        print(f"  {name} kernel {k} smoothness {s} cells: {e:.4f}")
    assert all(e == 0.0 for (name, _, _), e in errors.items() if name == "D4")
    assert all(0.0 < e < 0.5 for (name, _, _), e in errors.items() if name == "D8")


def test_group_cnn_is_invariant_after_pooling_and_checks_input(float64, gen):
    net = GroupCNN(3, channels=2, num_layers=2, kernel_size=3, group=Dihedral(4))
    z = torch.randn(1, 7, 7, 3, generator=gen)
    out = net(z)
    assert out.shape == (1, 7, 7, 2)
    rotated = net(torch.rot90(z, 1, dims=(1, 2)))
    assert torch.allclose(rotated, torch.rot90(out, 1, dims=(1, 2)), atol=1e-12)
    with pytest.raises(ValueError, match="z: expected"):
        net(torch.randn(1, 7, 7, 2))
    with pytest.raises(ValueError, match="kernel_size"):
        LiftingConv2d(1, 1, 4)
    with pytest.raises(TypeError, match=r"group: expected a Dihedral or Cyclic.*point_group"):
        LiftingConv2d(1, 1, 3, "D4")
    with pytest.raises(ValueError, match="group"):
        point_group("E8")


@pytest.mark.parametrize("name", ["D4", "C4", "D8", "C8", "D3"])
def test_one_definition_of_the_point_groups(float64, name):
    group = point_group(name)
    assert isinstance(group, Dihedral) and repr(group) == name
    assert isinstance(group, Cyclic) == name.startswith("C")
    # the group CNN, the lattice groups and the group itself agree on the elements' matrices
    pg = LiftingConv2d(1, 1, 3, group).group
    torch.testing.assert_close(pg.matrices, group.matrix(group.elements()), rtol=0, atol=0)
    torch.testing.assert_close(point_group_matrices(group.order, group.reflections), pg.matrices,
                               rtol=0, atol=0)
    # and the Cayley table of the CNN is the group law: g⁻¹ g' by index
    elements = group.elements()
    for i in range(group.size):
        for j in range(group.size):
            expected = group.compose(group.inverse(elements[i:i + 1]), elements[j:j + 1])
            assert torch.equal(elements[pg.inverse_product[i, j]], expected[0])


def test_equivcnp_group_is_the_group_object():
    model = build_model("equivcnp", 2, 1, group="C8", channels=2, num_layers=1,
                        kernel_size=3)
    assert isinstance(model.group, Cyclic) and model.group.order == 8
    assert model.symmetry.order == 4 and not model.symmetry.reflections


# ----------------------------------------------------------------------------- lattice groups

def test_lattice_group_elements_and_laws(float64, gen):
    group = LatticeEuclidean(4, spacing=0.25)
    g = group.sample(16, generator=gen)
    rot, t = group.rotation(g), group.translation(g)
    assert torch.equal(rot, rot.round())
    assert torch.allclose(rot @ rot.mT, torch.eye(2).expand(16, 2, 2))
    assert torch.allclose(t / 0.25, (t / 0.25).round(), atol=1e-12)
    h = group.sample(16, generator=gen)
    x = torch.randn(16, 5, 2, generator=gen)
    assert torch.allclose(group.act_points(group.compose(g, h), x),
                          group.act_points(g, group.act_points(h, x)), atol=1e-12)
    assert torch.allclose(group.compose(g, group.inverse(g)), group.identity(16), atol=1e-12)
    assert group.with_shifts(CELL_SHIFTS).shape == (16, 3, 3)
    assert point_group_matrices(8, True).shape == (16, 2, 2)
    assert not LatticeEuclidean(8).exact_on_grid and LatticeEuclidean(2).exact_on_grid


def test_symmetric_grid_maps_onto_itself(float64, gen):
    ppu = 4
    xc, _, xt = task2d(gen)
    axes = symmetric_lattice_grid([xc, xt], ppu, 0.5)
    assert axes[0].shape == axes[1].shape and axes[0].shape[0] % 2 == 1
    for a in axes:
        assert torch.allclose(a * ppu, (a * ppu).round(), atol=1e-9)
        centre = a[a.shape[0] // 2]
        assert torch.allclose(a - centre, -(a - centre).flip(0), atol=1e-12)
    allx = torch.cat([xc, xt], 1).reshape(-1, 2)
    assert (allx.amin(0) - 0.5 >= torch.stack([a[0] for a in axes]) - 1e-12).all()
    assert (allx.amax(0) + 0.5 <= torch.stack([a[-1] for a in axes]) + 1e-12).all()
    group = LatticeEuclidean(4, spacing=1 / ppu)
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(1, -1, 2)
    for g in group.with_shifts(CELL_SHIFTS):
        gb = g.unsqueeze(0).expand(2, 3, 3)
        moved_axes = symmetric_lattice_grid([group.act_points(gb, xc), group.act_points(gb, xt)],
                                            ppu, 0.5)
        moved = torch.stack(torch.meshgrid(*moved_axes, indexing="ij"), -1).reshape(-1, 2)
        image = group.act_points(g.unsqueeze(0), pts)[0]
        assert torch.cdist(image, moved).amin(1).max() < 1e-9


# ----------------------------------------------------------------------------- EquivCNP

def test_equivcnp_exactly_equivariant_to_d4_on_the_lattice(float64, gen):
    model = small_equivcnp()
    assert model.symmetry == LatticeEuclidean(4, reflections=True, spacing=1 / 3)
    task = task2d(gen)
    assert_informative(model, task)
    report = assert_equivariant(model, model.symmetry, task, elements=lattice_elements(model),
                                atol=1e-10)
    assert len(report.mean_err) == 16 and report.scale > 0


def test_c4_equivcnp_equivariant_to_rotations_not_reflections(float64, gen):
    model = small_equivcnp(group="C4")
    task = task2d(gen)
    assert_informative(model, task)
    assert model.symmetry == LatticeEuclidean(4, reflections=False, spacing=1 / 3)
    assert_equivariant(model, model.symmetry, task, elements=lattice_elements(model), atol=1e-10)
    reflections = LatticeEuclidean(4, spacing=1 / 3).with_shifts(CELL_SHIFTS[:1])[4:]
    assert_not_equivariant(model, model.symmetry, task, elements=reflections, margin=1e-6)


def test_equivcnp_not_equivariant_off_the_lattice(float64, gen):
    model = small_equivcnp()
    quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    off = Euclidean(2).from_parts(quarter_turn.expand(2, 2, 2), torch.tensor([[0.1, 0.05],
                                                                              [0.0, 0.0]]))
    angle = torch.tensor(0.3)
    turn = torch.stack([torch.stack([angle.cos(), -angle.sin()]),
                        torch.stack([angle.sin(), angle.cos()])])
    off = torch.cat([off[:1], Euclidean(2).from_parts(turn[None], torch.zeros(1, 2))])
    assert_not_equivariant(model, Euclidean(2), task2d(gen), elements=off, margin=1e-6)


def test_d8_equivcnp_exact_on_right_angles_and_45_degree_error_measured(float64, gen):
    model = small_equivcnp(group="D8")
    task = task2d(gen)
    assert_informative(model, task)
    assert model.symmetry == LatticeEuclidean(4, reflections=True, spacing=1 / 3)
    assert_equivariant(model, model.symmetry, task, elements=lattice_elements(model), atol=1e-10)
    d8 = LatticeEuclidean(8, spacing=1 / 3).with_shifts(CELL_SHIFTS[:1])
    report = equivariance_error(model, Euclidean(2), *task, elements=d8)
    odd = report.mean_err[1::2]
    print(f"\nD8 EquivCNP error under rotations by odd multiples of 45°: max {odd.max():.3e} "
          f"(|mean| scale {report.scale:.3e}); right angles {report.mean_err[::2].max():.1e}")
    assert report.mean_err[::2].max() < 1e-10 and odd.max() > 0


def test_approximate_equivcnp_equivariant_only_in_component(float64, gen):
    model = small_equivcnp(approximate=True, num_fixed_inputs=2)
    task = task2d(gen)
    elements = lattice_elements(model)
    with equivariant_component(model):
        assert_informative(model, task)
    assert_not_equivariant(model, model.symmetry, task, elements=elements, margin=1e-5)
    with equivariant_component(model):
        assert_equivariant(model, model.symmetry, task, elements=elements, atol=1e-10)
    assert model.approximate


def test_aux_fields_break_symmetry_only_outside_component(float64, gen):
    model = small_equivcnp(dim_aux=1)
    xc, yc, xt = task2d(gen)
    aux = {"aux_c": torch.sin(3 * xc[..., :1]), "aux_t": torch.sin(3 * xt[..., :1])}
    pred = model(xc, yc, xt, **aux)
    assert pred.mean.shape == (2, 5, 1)
    with equivariant_component(model):
        assert_informative(model, (xc, yc, xt), **aux)
        assert_equivariant(model, model.symmetry, (xc, yc, xt),
                           elements=lattice_elements(model), atol=1e-10, model_kwargs=aux)
        plain = model(xc, yc, xt, **aux).mean
    assert (plain - pred.mean).abs().max() > 1e-6
    with pytest.raises(ValueError, match="aux_c"):
        model(xc, yc, xt)


def test_equivcnp_context_permutation_invariant(float64, gen):
    assert_context_permutation_invariant(small_equivcnp(), task2d(gen), atol=1e-10)


@pytest.mark.parametrize("approximate", [False, True])
def test_equivcnp_gradients_and_empty_context(gen, approximate):
    opts = dict(approximate=True, fixed_input_dropout=0.0) if approximate else {}
    model = small_equivcnp(**opts)
    xc, yc, xt = task2d(gen)
    yt = torch.randn(2, 5, 1, generator=gen)
    model(xc, yc, xt).log_prob(yt).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    pred = model(xc[:, :0], yc[:, :0], xt)
    assert pred.mean.shape == (2, 5, 1) and torch.isfinite(pred.log_prob(yt)).all()


def test_equivcnp_rejects_bad_options():
    with pytest.raises(ValueError, match="dim_x"):
        build_model("equivcnp", 1, 1)
    with pytest.raises(ValueError, match="dim_x"):
        build_model("equivcnp", 3, 1)
    with pytest.raises(ValueError, match="group"):
        build_model("equivcnp", 2, 1, group="D5x")
    model = small_equivcnp()
    with pytest.raises(ValueError, match="xc"):
        model(torch.zeros(1, 3, 3), torch.zeros(1, 3, 1), torch.zeros(1, 2, 2))
    assert math.isclose(model.points_per_unit, 3)
