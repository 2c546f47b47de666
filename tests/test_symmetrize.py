"""Symmetrised models are equivariant: exactly (whole finite groups, frames, canonicalisation,
probabilistic symmetrisation with consistently transformed noise) or in distribution (Monte
Carlo); degenerate inputs stay finite; gradients reach the interface network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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
from approxeq.symmetrize import (
    Canonicalization,
    FrameAveraging,
    GraphScoreNetwork,
    GroupAveraging,
    PointCloudFrameNetwork,
    ProbabilisticSymmetrization,
    Symmetrized,
    gram_schmidt,
    sinkhorn,
)
from approxeq.testing import module_equivariance_gap

N = 5


class FlatMLP(nn.Module):
    """A deliberately non-equivariant base: an MLP on all inputs flattened.

    ``out`` is ``"nodes"`` ([b, n, 1]), ``"invariant"`` ([b, 1]), ``"points"`` (first input plus
    a displacement), ``"vectors"`` ([b, n, d]) or ``"grid"`` (same shape as the first input)."""

    def __init__(self, in_features: int, out: str, n: int = N, d: int = 3):
        super().__init__()
        self.out, self.n, self.d = out, n, d
        self.net = nn.Sequential(nn.Linear(in_features, 32), nn.Tanh(), nn.Linear(32, 64))

    def forward(self, *inputs):
        first = inputs[0]
        z = self.net(torch.cat([x.flatten(1).to(first.dtype) for x in inputs], -1))
        if self.out == "invariant":
            return z[:, :1]
        if self.out == "nodes":
            return z[:, : self.n].unsqueeze(-1)
        if self.out == "grid":
            return first + z[:, : first[0].numel()].reshape(first.shape)
        shift = z[:, : self.n * self.d].reshape(-1, self.n, self.d)
        return first + shift if self.out == "points" else shift


def _weighted_graph(b=2, n=N):
    """Random weighted graphs: generically no automorphisms and distinct Laplacian spectra."""
    a = torch.triu(torch.rand(b, n, n), 1)
    return torch.randn(b, n, 2), a + a.transpose(1, 2)


def _cloud(b=2, n=N, d=3):
    return torch.randn(b, n, d) * torch.tensor([3.0, 2.0, 1.0][:d]), torch.randn(b, n, d)


def _seeded():
    return torch.Generator().manual_seed(11)


def _gap(sym, group, g, inputs, kinds, out_kind, **kw):
    """max |φ(g·x) − g·φ(x)| with the same random draws (or transformed noise)."""
    first = sym(*inputs, generator=_seeded(), **kw)
    moved = [group.act(g, x, kind) for x, kind in zip(inputs, kinds)]
    extra = {}
    if isinstance(sym.strategy, ProbabilisticSymmetrization):
        extra["noise"] = sym.transform_noise(g, first.noise)
    else:
        extra["generator"] = _seeded()
    second = sym(*moved, **extra, **kw)
    return (second.output - group.act(g, first.output, out_kind)).abs().max().item()


def _base_gap(base, group, g, inputs, kinds, out_kind):
    return module_equivariance_gap(base, group, g, inputs, kinds, out_kind)


# --- whole finite groups -----------------------------------------------------------------------


def _finite_case(name):
    if name in ("S5-nodes", "S5-invariant"):
        h, a = _weighted_graph()
        out = name.split("-")[1]
        return Permutation(N), (h, a), ("nodes", "adjacency"), out, FlatMLP(N * 2 + N * N, out)
    if name == "D4-grid":
        f = torch.randn(2, 4, 4, 1)
        return Dihedral(4), (f,), ("grid",), "grid", FlatMLP(16, "grid")
    if name == "shift-grid":
        f = torch.randn(2, 3, 4, 1)
        return GridShift(3, 4), (f,), ("grid",), "grid", FlatMLP(12, "grid")
    x, v = _cloud(d=2)
    return Cyclic(6), (x, v), ("points", "vectors"), "points", FlatMLP(4 * N, "points", d=2)


@pytest.mark.parametrize("name", ["S5-nodes", "S5-invariant", "D4-grid", "shift-grid", "C6-points"])
def test_whole_finite_group_averaging_is_exactly_equivariant(name, float64, gen):
    group, inputs, kinds, out, base = _finite_case(name)
    sym = Symmetrized(base, group, GroupAveraging(), in_kinds=kinds, out_kinds=out)
    g = group.sample(2, generator=gen)
    assert _base_gap(base, group, g, inputs, kinds, out) > 1e-3
    assert _gap(sym, group, g, inputs, kinds, out) < 1e-10


def test_monte_carlo_averaging_is_invariant_in_distribution(float64, gen):
    x = torch.randn(1, N, 2)
    base = FlatMLP(2 * N, "invariant")
    sym = Symmetrized(base, O(2), GroupAveraging(), in_kinds=("points",), out_kinds="invariant")
    g = O(2).sample(1, generator=gen)
    k = 4000
    a = sym(x, generator=torch.Generator().manual_seed(1), n_samples=k).samples.flatten()
    b = sym(O(2).act_points(g, x), generator=torch.Generator().manual_seed(2),
            n_samples=k).samples.flatten()
    # both sample sets come from the same law: means within 5 standard errors, same spread
    se = (a.var() / k + b.var() / k).sqrt()
    assert (a.mean() - b.mean()).abs() < 5 * se
    assert (a.std() / b.std() - 1).abs() < 0.1
    # while the un-averaged base model clearly is not invariant
    assert _base_gap(base, O(2), g, (x,), ("points",), "invariant") > 1e-3


# --- frames ------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [O(3), SO(3), Euclidean(3), SE(3), Translation(3)], ids=repr)
@pytest.mark.parametrize("out", ["points", "vectors"])
def test_frame_averaging_is_exactly_equivariant_on_point_clouds(group, out, float64, gen):
    x, v = _cloud()
    base = FlatMLP(6 * N, out)
    kinds = ("points", "vectors")
    sym = Symmetrized(base, group, FrameAveraging(), in_kinds=kinds, out_kinds=out)
    g = group.sample(2, generator=gen)
    assert _base_gap(base, group, g, (x, v), kinds, out) > 1e-3
    assert _gap(sym, group, g, (x, v), kinds, out) < 1e-9


@pytest.mark.parametrize("product", [False, True])
def test_frame_averaging_is_exactly_equivariant_on_graphs(product, float64, gen):
    h, a = _weighted_graph()
    group = DirectProduct(Permutation(N), Euclidean(3)) if product else Permutation(N)
    inputs = (_cloud()[0], h, a) if product else (h, a)
    kinds = ("points", "nodes", "adjacency") if product else ("nodes", "adjacency")
    out = "points" if product else "nodes"
    base = FlatMLP(sum(t[0].numel() for t in inputs), out)
    sym = Symmetrized(base, group, FrameAveraging(), in_kinds=kinds, out_kinds=out,
                      n_samples_eval=3).eval()
    g = group.sample(2, generator=gen)
    assert _base_gap(base, group, g, inputs, kinds, out) > 1e-3
    assert _gap(sym, group, g, inputs, kinds, out) < 1e-9


# --- canonicalisation and probabilistic symmetrisation -----------------------------------------


def _learned_case(name):
    """(group, inputs, kinds, out kind, base, interface network)."""
    if name in ("graph-nodes", "graph-invariant"):
        h, a = _weighted_graph()
        out = name.split("-")[1]
        kinds = ("nodes", "adjacency")
        return (Permutation(N), (h, a), kinds, out, FlatMLP(N * 2 + N * N, out),
                GraphScoreNetwork(2, kinds, hidden=16))
    x, v = _cloud()
    c = torch.randn(2, N, 1)
    kinds = ("points", "vectors", "nodes")
    group = {"SnxE3": DirectProduct(Permutation(N), Euclidean(3)),
             "SnxSE3": DirectProduct(Permutation(N), SE(3)),
             "SnxT3": DirectProduct(Permutation(N), Translation(3)),
             "O3": O(3), "SO3": SO(3)}[name]
    return (group, (x, v, c), kinds, "points", FlatMLP(7 * N, "points"),
            PointCloudFrameNetwork(kinds, scalar_dim=1, hidden=8))


LEARNED = ["graph-nodes", "graph-invariant", "SnxE3", "SnxSE3", "SnxT3", "O3", "SO3"]


@pytest.mark.parametrize("name", LEARNED)
def test_canonicalization_is_exactly_equivariant(name, float64, gen):
    group, inputs, kinds, out, base, net = _learned_case(name)
    sym = Symmetrized(base, group, Canonicalization(net.double(), jitter=0.0), in_kinds=kinds,
                      out_kinds=out, n_samples_eval=4).eval()
    assert sym(*inputs).elements.shape[0] == 1
    g = group.sample(2, generator=gen)
    assert _base_gap(base, group, g, inputs, kinds, out) > 1e-3
    assert _gap(sym, group, g, inputs, kinds, out, n_samples=4) < 1e-9


@pytest.mark.parametrize("name", LEARNED)
def test_probabilistic_symmetrization_with_transformed_noise_is_exactly_equivariant(
        name, float64, gen):
    group, inputs, kinds, out, base, net = _learned_case(name)
    strategy = ProbabilisticSymmetrization(net.double(), tau=0.1)
    sym = Symmetrized(base, group, strategy, in_kinds=kinds, out_kinds=out,
                      n_samples_eval=3).eval()
    g = group.sample(2, generator=gen)
    assert _base_gap(base, group, g, inputs, kinds, out) > 1e-3
    assert _gap(sym, group, g, inputs, kinds, out) < 1e-9
    # the noise matters: reusing it untransformed breaks the per-draw identity
    first = sym(*inputs, generator=_seeded())
    moved = [group.act(g, x, kind) for x, kind in zip(inputs, kinds)]
    untransformed = sym(*moved, noise=first.noise).output
    assert (untransformed - group.act(g, first.output, out)).abs().max() > 1e-6


def test_probabilistic_elements_are_group_elements(float64):
    group, inputs, kinds, out, base, net = _learned_case("SnxSE3")
    sym = Symmetrized(base, group, ProbabilisticSymmetrization(net.double()), in_kinds=kinds,
                      out_kinds=out, n_samples_eval=3).eval()
    elements = sym(*inputs, generator=_seeded()).elements.reshape(6, -1)
    perm, motion = group.split(elements)
    assert torch.equal(perm.sort(-1).values, torch.arange(N, dtype=perm.dtype).expand_as(perm))
    r = SE(3).rotation(motion)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand_as(r), atol=1e-10)
    assert torch.allclose(torch.linalg.det(r), torch.ones(6))
    # the translation part is the centroid of the input points
    centroid = inputs[0].mean(1).repeat(3, 1)
    assert torch.allclose(SE(3).translation(motion), centroid)


# --- degenerate inputs -------------------------------------------------------------------------


def _cycle_and_star(n=6):
    cycle = torch.zeros(n, n)
    idx = torch.arange(n)
    cycle[idx, (idx + 1) % n] = 1
    cycle = cycle + cycle.T
    star = torch.zeros(n, n)
    star[0, 1:] = star[1:, 0] = 1
    return torch.stack([cycle, star]), torch.ones(2, n, 1)


def test_graphs_with_automorphisms_give_finite_symmetric_results(float64):
    a, h = _cycle_and_star()
    kinds = ("nodes", "adjacency")
    base = FlatMLP(6 + 36, "nodes", n=6)
    averaged = Symmetrized(base, Permutation(6), GroupAveraging(), in_kinds=kinds,
                           out_kinds="nodes")(h, a).output
    # every cycle node is equivalent, and so is every leaf of the star
    assert torch.allclose(averaged[0], averaged[0, :1].expand(6, 1), atol=1e-12)
    assert torch.allclose(averaged[1, 1:], averaged[1, 1:2].expand(5, 1), atol=1e-12)
    net = GraphScoreNetwork(1, kinds, hidden=16).double()
    for strategy in (FrameAveraging(), Canonicalization(net), ProbabilisticSymmetrization(net)):
        out = Symmetrized(base, Permutation(6), strategy, in_kinds=kinds, out_kinds="nodes",
                          n_samples_train=4)(h, a, generator=_seeded())
        assert torch.isfinite(out.output).all()
        assert all(torch.isfinite(v).all() for v in out.regularizers.values())
        perms = out.elements.reshape(-1, 6)
        assert torch.equal(perms.sort(-1).values, torch.arange(6).expand_as(perms))


def test_group_averaging_over_padded_graphs_permutes_only_the_real_nodes():
    n, real, k = 7, 4, 2000
    mask = torch.zeros(2, n, dtype=torch.bool)
    mask[0, :real] = True
    mask[1, torch.tensor([0, 2, 4, 6])] = True  # padding need not be at the end
    h, a = torch.randn(2, n, 1), torch.zeros(2, n, n)
    sample = GroupAveraging(whole_group=False).sample(
        Permutation(n), (h, a, mask), ("nodes", "adjacency", "mask"), k, generator=_seeded())
    g = sample.elements  # [k, b, n]: g[r] is the node put at rank r
    for i in range(2):
        real_nodes = mask[i].nonzero().flatten()
        assert torch.equal(g[:, i, real:].sort(-1).values,
                           (~mask[i]).nonzero().flatten().expand(k, -1))
        assert torch.equal(g[:, i, :real].sort(-1).values, real_nodes.expand(k, -1))
        # uniform over the real nodes: each is first about k / real times (5 standard errors)
        counts = torch.stack([(g[:, i, 0] == j).sum() for j in real_nodes]).double()
        assert (counts - k / real).abs().max() < 5 * (k * (1 / real) * (1 - 1 / real)) ** 0.5


def test_point_clouds_with_repeated_covariance_eigenvalues_give_finite_results(float64):
    cube = torch.tensor([[i, j, k] for i in (-1.0, 1.0) for j in (-1.0, 1.0) for k in (-1.0, 1.0)])
    x = torch.stack([cube, cube + 5.0])  # isotropic covariance: all eigenvalues equal
    kinds = ("points",)
    base = FlatMLP(24, "points", n=8)
    net = PointCloudFrameNetwork(kinds, hidden=8).double()
    for strategy in (FrameAveraging(), Canonicalization(net), ProbabilisticSymmetrization(net),
                     GroupAveraging()):
        out = Symmetrized(base, Euclidean(3), strategy, in_kinds=kinds, out_kinds="points",
                          n_samples_eval=4).eval()(x, generator=_seeded())
        assert torch.isfinite(out.output).all()
        r = Euclidean(3).rotation(out.elements.reshape(-1, 4, 4))
        assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand_as(r), atol=1e-6)


# --- gradients and the relaxation --------------------------------------------------------------


def test_gradients_reach_the_network_through_the_straight_through_permutation(float64):
    h, a = _weighted_graph()
    kinds = ("nodes", "adjacency")
    net = GraphScoreNetwork(2, kinds, hidden=16).double()
    base = FlatMLP(N * 2 + N * N, "nodes").double()
    sym = Symmetrized(base, Permutation(N), ProbabilisticSymmetrization(net, tau=0.1),
                      in_kinds=kinds, out_kinds="nodes", n_samples_train=3)
    out = sym(h, a, generator=_seeded())
    (out.output ** 2).sum().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    # the forward value is the hard permutation's: recompute it with the group action
    group = Permutation(N)
    g = out.elements.reshape(-1, N)
    moved = [group.act(group.inverse(g), x.repeat(3, *[1] * (x.dim() - 1)), kind)
             for x, kind in zip((h, a), kinds)]
    manual = group.act_nodes(g, base(*moved)).reshape(3, 2, N, 1)
    assert torch.allclose(out.samples, manual, atol=1e-12)


def test_entropy_regulariser_is_nonnegative_and_sharpens_with_temperature(float64):
    h, a = _weighted_graph()
    kinds = ("nodes", "adjacency")
    net = GraphScoreNetwork(2, kinds, hidden=16).double().eval()
    base = FlatMLP(N * 2 + N * N, "invariant")
    entropies = []
    for tau in (10.0, 0.1, 1e-3):
        sym = Symmetrized(base, Permutation(N), ProbabilisticSymmetrization(net, tau=tau),
                          in_kinds=kinds, out_kinds="invariant").eval()
        entropies.append(sym(h, a, generator=_seeded()).regularizers["entropy"].item())
    assert all(e >= -1e-12 for e in entropies)
    assert entropies[0] > entropies[1] > entropies[2]


def test_sinkhorn_is_doubly_stochastic(float64):
    p = sinkhorn(torch.randn(3, 6, 6), 50)
    assert torch.allclose(p.sum(-1), torch.ones(3, 6), atol=1e-6)
    assert torch.allclose(p.sum(-2), torch.ones(3, 6), atol=1e-6)


def test_gram_schmidt_is_orthogonal_and_equivariant(float64, gen):
    v = torch.randn(4, 3, 3)
    r = O(3).sample(4, generator=gen)
    q = gram_schmidt(v)
    assert torch.allclose(q.transpose(1, 2) @ q, torch.eye(3).expand_as(q), atol=1e-12)
    assert torch.allclose(gram_schmidt(v @ r.transpose(1, 2)), r @ q, atol=1e-12)
    rot = SO(3).sample(4, generator=gen)
    q_special = gram_schmidt(v, special=True)
    assert torch.allclose(torch.linalg.det(q_special), torch.ones(4))
    assert torch.allclose(gram_schmidt(v @ rot.transpose(1, 2), special=True), rot @ q_special,
                          atol=1e-12)


# --- the wrapper's contract --------------------------------------------------------------------


def test_sample_counts_follow_the_mode(float64):
    x, v = _cloud()
    sym = Symmetrized(FlatMLP(6 * N, "points"), O(3), GroupAveraging(),
                      in_kinds=("points", "vectors"), out_kinds="points",
                      n_samples_train=2, n_samples_eval=7)
    assert sym.symmetry == O(3)
    assert sym.train()(x, v).elements.shape == (2, 2, 3, 3)
    assert sym.eval()(x, v).elements.shape == (7, 2, 3, 3)
    assert sym(x, v, n_samples=5).samples.shape == (5, 2, N, 3)


def test_tuple_outputs_are_transformed_per_kind(float64, gen):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = FlatMLP(6 * N, "points")

        def forward(self, x, v):
            y = self.inner(x, v)
            return y, y.pow(2).sum((1, 2)).unsqueeze(-1)

    x, v = _cloud()
    group = Euclidean(3)
    sym = Symmetrized(Two(), group, FrameAveraging(), in_kinds=("points", "vectors"),
                      out_kinds=("points", "invariant"))
    g = group.sample(2, generator=gen)
    p1, s1 = sym(x, v).output
    p2, s2 = sym(group.act_points(g, x), group.act_vectors(g, v)).output
    assert torch.allclose(p2, group.act_points(g, p1), atol=1e-9)
    assert torch.allclose(s2, s1, atol=1e-9)


def test_bad_arguments_raise_named_errors():
    base = FlatMLP(3 * N, "points")
    with pytest.raises(ValueError, match="in_kinds"):
        Symmetrized(base, O(3), GroupAveraging(), in_kinds=("pointz",), out_kinds="points")
    sym = Symmetrized(base, O(3), GroupAveraging(), in_kinds=("points",), out_kinds="points")
    with pytest.raises(ValueError, match="expected 1 positional inputs"):
        sym(torch.zeros(1, N, 3), torch.zeros(1, N, 3))
    sym = Symmetrized(base, Euclidean(3), GroupAveraging(), in_kinds=("vectors",),
                      out_kinds="points")
    with pytest.raises(ValueError, match="'points'"):
        sym(torch.zeros(1, N, 3))


def test_padded_graphs_keep_padding_last_and_stay_equivariant_on_real_nodes(float64, gen):
    h, a = _weighted_graph(n=N + 2)
    mask = torch.tensor([[True] * N + [False] * 2, [True] * (N + 2)])
    pair = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    h, a = h * mask.unsqueeze(-1), a * pair
    kinds = ("nodes", "adjacency", "mask")
    net = GraphScoreNetwork(2, kinds, hidden=16).double()
    sym = Symmetrized(FlatMLP(3 * (N + 2) + (N + 2) ** 2, "nodes", n=N + 2), Permutation(N + 2),
                      ProbabilisticSymmetrization(net), in_kinds=kinds, out_kinds="nodes",
                      n_samples_eval=3).eval()
    first = sym(h, a, mask, generator=_seeded())
    assert set(first.elements[:, 0, N:].flatten().tolist()) == {N, N + 1}
    group = Permutation(N + 2)
    g = group.sample(2, generator=gen)
    second = sym(group.act_nodes(g, h), group.act_adjacency(g, a), group.act_nodes(g, mask),
                 noise=sym.transform_noise(g, first.noise))
    expected = group.act_nodes(g, first.output)
    real = group.act_nodes(g, mask)
    assert (second.output - expected)[real].abs().max() < 1e-9
