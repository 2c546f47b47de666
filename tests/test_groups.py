"""Group axioms, action laws, Haar sampling statistics and grid actions of approxeq.groups."""

from __future__ import annotations

import pytest
import torch

from approxeq.groups import (
    SE,
    SO,
    Cyclic,
    Dihedral,
    DirectProduct,
    Euclidean,
    GridShift,
    O,
    Permutation,
    Translation,
)

N_NODES = 4

GROUPS = {
    "T(2)": Translation(2),
    "O(2)": O(2),
    "O(3)": O(3),
    "SO(3)": SO(3),
    "E(3)": Euclidean(3),
    "SE(2)": SE(2),
    "C4": Cyclic(4),
    "D4": Dihedral(4),
    "D3": Dihedral(3),
    "S4": Permutation(N_NODES),
    "GridShift": GridShift(4, 4),
    "S4xE(3)": DirectProduct(Permutation(N_NODES), Euclidean(3)),
    "S4xO(2)": DirectProduct(Permutation(N_NODES), O(2)),
    "S4xT(3)": DirectProduct(Permutation(N_NODES), Translation(3)),
    "D4xS4": DirectProduct(Dihedral(4), Permutation(N_NODES)),
}

ACTIONS = {"points": "act_points", "vectors": "act_vectors", "nodes": "act_nodes",
           "adjacency": "act_adjacency", "grid": "act_grid"}


def _data(group, kind, b):
    d = group.dim or 3
    shapes = {"points": (b, N_NODES, d), "vectors": (b, N_NODES, d), "nodes": (b, N_NODES, 2),
              "adjacency": (b, N_NODES, N_NODES), "grid": (b, 4, 4, 2)}
    return torch.randn(*shapes[kind])


def _supports(group, kind, x):
    try:
        getattr(group, ACTIONS[kind])(group.identity(x.shape[0], dtype=x.dtype), x)
    except NotImplementedError:
        return False
    return True


def _same(group, a, b):
    if group.integer_elements:
        return torch.equal(a.round().long(), b.round().long())
    return torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("name", GROUPS)
def test_group_axioms(name, float64, gen):
    group = GROUPS[name]
    a, b, c = (group.sample(16, generator=gen, dtype=torch.float64) for _ in range(3))
    e = group.identity(16, dtype=torch.float64)
    assert a.shape == (16, *group.element_shape)
    assert _same(group, group.compose(group.compose(a, b), c),
                 group.compose(a, group.compose(b, c)))
    assert _same(group, group.compose(e, a), a) and _same(group, group.compose(a, e), a)
    assert _same(group, group.compose(a, group.inverse(a)), e)
    assert _same(group, group.compose(group.inverse(a), a), e)


SUPPORTED = [(name, kind) for name in GROUPS for kind in ACTIONS
             if _supports(GROUPS[name], kind, _data(GROUPS[name], kind, 1))]


@pytest.mark.parametrize("name,kind", SUPPORTED)
def test_action_laws(name, kind, float64, gen):
    group = GROUPS[name]
    x = _data(group, kind, 8)
    act = getattr(group, ACTIONS[kind])
    g, h = (group.sample(8, generator=gen, dtype=torch.float64) for _ in range(2))
    assert torch.allclose(act(group.identity(8, dtype=torch.float64), x), x)
    assert torch.allclose(act(g, act(h, x)), act(group.compose(g, h), x), atol=1e-10)
    assert torch.allclose(act(group.inverse(g), act(g, x)), x, atol=1e-10)


@pytest.mark.parametrize("name", ["C4", "D4", "D3", "S4", "GridShift", "D4xS4"])
def test_finite_elements_enumerate_the_group(name):
    group = GROUPS[name]
    elements = group.elements()
    order = len(elements)
    assert len({tuple(e.tolist()) for e in elements}) == order
    # closed under composition: every product is one of the elements
    products = group.compose(elements.repeat_interleave(order, 0), elements.repeat(order, 1))
    assert {tuple(p.tolist()) for p in products} == {tuple(e.tolist()) for e in elements}
    expected = {"C4": 4, "D4": 8, "D3": 6, "S4": 24, "GridShift": 16, "D4xS4": 192}[name]
    assert order == expected


@pytest.mark.parametrize("group", [O(3), SO(3), O(2)], ids=repr)
def test_haar_moments_of_orthogonal_groups(group, float64, gen):
    r = group.sample(20000, generator=gen)
    assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(group.dim).expand_as(r), atol=1e-10)
    # Haar: E[R] = 0, E[R_ij²] = 1/d and E[tr(R)²] = 1 (a sign-unfixed QR fails these)
    assert r.mean(0).abs().max() < 0.03
    assert torch.allclose((r ** 2).mean(0), torch.full((group.dim, group.dim), 1 / group.dim),
                          atol=0.02)
    assert abs((torch.diagonal(r, dim1=-2, dim2=-1).sum(-1) ** 2).mean() - 1) < 0.05
    det = torch.linalg.det(r)
    assert torch.allclose(det.abs(), torch.ones_like(det))
    if group.special:
        assert (det > 0).all()
    else:
        assert abs((det > 0).double().mean() - 0.5) < 0.02


def test_euclidean_samples_rotation_and_box_translation(float64, gen):
    group = Euclidean(3)
    g = group.sample(5000, generator=gen, scale=2.0)
    t = group.translation(g)
    assert t.abs().max() <= 2.0 and t.abs().max() > 1.9
    assert torch.equal(g[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(5000, -1))
    assert group.rotation(g).mean(0).abs().max() < 0.05


def test_permutation_sampling_has_uniform_marginals(gen):
    n = 5
    g = Permutation(n).sample(20000, generator=gen)
    assert torch.equal(g.sort(-1).values, torch.arange(n).expand_as(g))
    counts = torch.nn.functional.one_hot(g, n).double().mean(0)  # P(σ(i) = j)
    assert torch.allclose(counts, torch.full((n, n), 1 / n, dtype=torch.float64),
                          atol=0.015)


def test_sampling_is_reproducible_with_a_generator():
    for group in (O(3), Permutation(6), Dihedral(4), Euclidean(2)):
        a = group.sample(4, generator=torch.Generator().manual_seed(3))
        b = group.sample(4, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_permutation_convention_and_matrix(gen):
    group = Permutation(4)
    sigma = torch.tensor([[2, 0, 3, 1]])
    x = torch.arange(4.0).reshape(1, 4, 1)
    moved = group.act_nodes(sigma, x)
    assert torch.equal(moved[0, sigma[0], 0], x[0, :, 0])  # node i lands at position σ[i]
    a = torch.randn(3, 4, 4)
    g = group.sample(3, generator=gen)
    m = group.matrix(g)
    assert torch.allclose(group.act_adjacency(g, a), m @ a @ m.transpose(1, 2))
    assert torch.allclose(group.act_nodes(g, a[..., 0]), (m @ a[..., :1]).squeeze(-1))


def test_dihedral_grid_action_matches_rot90_and_flip():
    f = torch.randn(2, 4, 4, 3)
    quarter = torch.tensor([[1, 0], [1, 0]])
    flip = torch.tensor([[0, 1], [0, 1]])
    assert torch.equal(Dihedral(4).act_grid(quarter, f), torch.rot90(f, 1, dims=(1, 2)))
    assert torch.equal(Dihedral(4).act_grid(flip, f), torch.flip(f, dims=(2,)))
    # and it agrees with the action on the grid cells' coordinates
    assert torch.allclose(Dihedral(4).act_points(quarter, torch.tensor([[[1.0, 0.0]]] * 2)),
                          torch.tensor([[[0.0, 1.0]]] * 2), atol=1e-12)


def test_grid_shift_is_a_roll():
    f = torch.randn(1, 4, 5, 2)
    g = torch.tensor([[1, 3]])
    assert torch.equal(GridShift(4, 5).act_grid(g, f), torch.roll(f, shifts=(1, 3), dims=(1, 2)))


def test_grid_actions_refuse_inexact_cases():
    with pytest.raises(NotImplementedError):
        Dihedral(3).act_grid(Dihedral(3).identity(1), torch.zeros(1, 4, 4, 1))
    with pytest.raises(ValueError, match="grid"):
        Cyclic(4).act_grid(torch.tensor([[1, 0]]), torch.zeros(1, 3, 5, 1))


def test_direct_product_acts_componentwise(float64, gen):
    group = DirectProduct(Permutation(N_NODES), Euclidean(3))
    g = group.sample(3, generator=gen)
    p, e = group.split(g)
    assert torch.equal(group.join(p, e), g)
    assert torch.equal(p, p.round())
    x = torch.randn(3, N_NODES, 3)
    expected = Permutation(N_NODES).act_points(p, Euclidean(3).act_points(e, x))
    assert torch.allclose(group.act_points(g, x), expected)
    v = torch.randn(3, N_NODES, 3)
    assert torch.allclose(group.act_vectors(g, v), Permutation(N_NODES).act_vectors(
        p, Euclidean(3).act_vectors(e, v)))


def test_bad_shapes_raise_named_errors():
    with pytest.raises(ValueError, match="h must have 4 nodes"):
        Permutation(4).act_nodes(Permutation(4).identity(1), torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="dim"):
        O(0)
    with pytest.raises(ValueError, match="different dims"):
        DirectProduct(O(2), O(3))


def test_act_dispatches_on_kind(gen):
    group = DirectProduct(Permutation(N_NODES), O(3))
    g = group.sample(2, generator=gen)
    x = torch.randn(2, N_NODES, 3)
    mask = torch.tensor([[True, True, False, True]] * 2)
    assert torch.equal(group.act(g, x, "points"), group.act_points(g, x))
    assert torch.equal(group.act(g, mask, "mask"), group.act_nodes(g, mask))
    assert group.act(g, x, "invariant") is x
    with pytest.raises(ValueError, match="kind must be one of"):
        group.act(g, x, "tensor")
