"""The reach of fixed inputs: each model's bound, the parts it is built from, and the contract
check that a task beyond it is predicted exactly as by the equivariant component."""

from __future__ import annotations

import math

import pytest
import torch

from approxeq.approximate import (
    FixedInput,
    RelaxedCNN,
    distance_to_box,
    fixed_input_domain,
    reach,
)
from approxeq.nn import CNN, GroupCNN, UNet
from approxeq.nn.setconv import rbf_support, rbf_weights
from approxeq.np import build_model
from approxeq.np.models.equivcnp import IsotropicRBFWeights
from approxeq.np.models.pt_tnp import TEPTTNP, TEPseudoTokenEncoder
from approxeq.testing import (
    ContractFailure,
    check_model_contract,
    contract_cases,
    perturb_symmetry_breaking,
)
from approxeq.testing.fallback import assert_falls_back, tasks_beyond_reach

APPROXIMATE = [c for c in contract_cases() if "fallback" in c.checks]
SMALL_PT = {"width": 8, "num_layers": 1, "num_heads": 2}


def test_every_registered_approximate_model_declares_a_finite_reach():
    names = {c.name for c in APPROXIMATE}
    assert names == {"te-tnp", "te-pt-tnp", "convcnp", "relaxed-convcnp", "equivcnp", "e-tnp",
                     "lps-tnp"}
    for case in APPROXIMATE:
        r = reach(case.build(), torch.float64)
        assert math.isfinite(r) and r >= 0, case
        assert (r == 0) == (case.name in ("te-tnp", "e-tnp", "lps-tnp")), case


def test_grid_model_reach_is_receptive_field_plus_decoder_support():
    model = build_model("convcnp", 1, 1, approximate=True, points_per_unit=8, channels=4,
                        num_layers=3, kernel_size=5)
    ls = float(model.decoder.setconv.weights.lengthscale.detach().max())
    for dtype in (torch.float32, torch.float64):
        assert reach(model, dtype) == pytest.approx(3 * 2 / 8 + ls * rbf_support(dtype))
    assert reach(build_model("convcnp", 1, 1, channels=4, num_layers=1)) == 0.0  # exact
    assert rbf_support(torch.float32) == pytest.approx(9.35, abs=0.01)
    assert rbf_support(torch.float64) == pytest.approx(26.6, abs=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rbf_weights_are_exactly_zero_beyond_their_support(dtype):
    c = rbf_support(dtype)
    ls = torch.tensor(0.3, dtype=dtype)
    x = torch.tensor([[0.0]], dtype=dtype)
    grid = torch.tensor([0.3 * c * (1 - 1e-3), 0.3 * c * (1 + 1e-3), -0.3 * c * (1 + 1e-3)],
                        dtype=dtype)
    w = rbf_weights(x, grid, ls)[0, 0]
    assert w[0] > 0 and w[1] == 0 and w[2] == 0
    iso = IsotropicRBFWeights(0.3).to(dtype)
    assert iso.support(dtype) == pytest.approx(0.3 * c)
    wx, _ = iso.per_axis(torch.zeros(1, 1, 2, dtype=dtype), (grid, grid))
    assert wx[0, 0, 0] > 0 and (wx[0, 0, 1:] == 0).all()


@pytest.mark.parametrize("make", [
    lambda: CNN(1, 2, 3, num_layers=3, kernel_size=5),
    lambda: UNet(1, 2, 3, num_layers=3, kernel_size=3),
    lambda: UNet(1, 2, 3, num_layers=2, kernel_size=5, io_blocks=False, out_channels=2),
    lambda: RelaxedCNN("conv", 1, 2, 3, num_layers=2, kernel_size=3, domain=[(-100.0, 100.0)]),
], ids=["cnn", "unet", "unet-no-io", "relaxed"])
def test_receptive_field_bounds_how_far_a_change_travels(float64, make):
    net = make()
    n = 64
    z = torch.randn(1, n, 2)
    coords = torch.arange(n, dtype=torch.float64)[:, None] - n / 2
    with torch.no_grad():
        base = net.eval()(z, coords)
        spread = 0
        for cell in (24, 25, 32, 33):  # odd and even cells: the strides' parity
            bumped = z.clone()
            bumped[0, cell] += 1.0
            changed = torch.nonzero((net(bumped, coords) - base).abs().amax(-1)[0] > 0)[:, 0]
            if len(changed):  # a ReLU may swallow the change
                spread = max(spread, int((changed - cell).abs().max()))
    assert 0 < spread <= net.receptive_field
    if isinstance(net, CNN):
        assert spread == net.receptive_field  # tight for a plain CNN


def test_group_cnn_receptive_field(float64):
    net = GroupCNN(2, 2, num_layers=3, kernel_size=3)
    z = torch.randn(1, 21, 21, 2)
    with torch.no_grad():
        bumped = z.clone()
        bumped[0, 10, 10] += 1.0
        changed = (net(bumped) - net(z)).abs().amax(-1)[0] > 0
    spread = int((torch.nonzero(changed) - 10).abs().max())
    assert spread <= net.receptive_field == 3


def test_fixed_input_domain_and_distance_to_box():
    model = build_model("te-tnp", 2, 1, approximate=True, fixed_input_domain=[(-1, 2), (0, 5)],
                        **SMALL_PT)
    box = fixed_input_domain(model)
    assert box.tolist() == [[-1.0, 2.0], [0.0, 5.0]]
    assert fixed_input_domain(build_model("te-tnp", 2, 1, **SMALL_PT)) is None
    x = torch.tensor([[0.0, 1.0], [3.0, 1.0], [-4.0, 7.0]])
    assert distance_to_box(x, box).tolist() == [0.0, 1.0, 3.0]


def test_a_module_with_fixed_inputs_and_no_declared_reach_has_none():
    assert reach(FixedInput(1, 2)) == math.inf
    assert reach(torch.nn.Linear(1, 1)) == 0.0


def test_tasks_beyond_reach_lie_beyond_it(gen):
    box = torch.tensor([[-1.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    tasks = tasks_beyond_reach(box, 2.5, 1, generator=gen)
    xc, _, _ = tasks["both sides"]
    assert xc[..., 0].mean(-1).abs().max() < 3.5  # the mean can lie inside the box
    for xc, _, xt in tasks.values():
        assert (distance_to_box(torch.cat([xc, xt], 1), box) > 2.5).all()
    assert tasks["empty context"][0].shape == (2, 0, 2)
    with pytest.raises(ValueError, match="reach_: expected a finite number >= 0, got inf"):
        tasks_beyond_reach(box, math.inf, 1)


# ----------------------------------------------------------------------------- TE-PT-TNP~

def _te_pt_tnp(**options):
    return build_model("te-pt-tnp", 1, 1, approximate=True, **SMALL_PT, **options)


def test_te_pt_tnp_reach_is_its_option_and_defaults_to_a_quarter_of_the_domain():
    assert reach(_te_pt_tnp()) == 1.0  # domain (-2, 2)
    assert reach(_te_pt_tnp(fixed_input_domain=[(0.0, 2.0)])) == 0.5
    assert reach(_te_pt_tnp(fixed_input_reach=0.3)) == 0.3
    assert reach(build_model("te-pt-tnp", 1, 1, **SMALL_PT)) == 0.0
    with pytest.raises(ValueError, match="fixed_input_reach"):
        _te_pt_tnp(fixed_input_reach=-1.0)


def test_te_pt_tnp_reads_its_fixed_input_within_reach_of_the_context(float64):
    model = _te_pt_tnp(num_pseudo_tokens=4, fixed_input_reach=0.5).eval()
    enc = model.encoder
    xc = torch.tensor([[[0.0], [1.0]]])
    xu = torch.tensor([[[0.4], [1.5], [-0.6], [3.0]]])
    # near the context: at the pseudo-token itself; farther: moved to within 0.5 of the
    # nearest context point
    expected = [[[0.4], [1.5], [-0.5], [1.5]]]
    assert enc.fixed_input_locations(xu, xc, xc[:, :0]).tolist() == expected
    # an empty context: the targets are the data, as for the anchor; no data: no fixed input
    assert enc.fixed_input_locations(xu, xc[:, :0], xc).tolist() == expected
    assert enc.fixed_input_locations(xu, xc[:, :0], xc[:, :0]) is None
    perturb_symmetry_breaking(model)
    t = enc.pseudo_fixed_input_values(xu, xc, xc)
    assert t.shape == (1, 4, 8) and (t.abs().sum(-1) > 0).all()  # every pseudo-token carries t
    assert torch.equal(t[0, 1], t[0, 3])  # read at the same place


def _spread(model):
    # pseudo-tokens 2 apart over [-40, 40] around the anchor: wherever the anchor is, some lie
    # inside the domain (-2, 2) (learned offsets are unbounded)
    with torch.no_grad():
        model.encoder.pseudo_offsets.copy_(torch.linspace(-40, 40, 41)[:, None])


SPREAD = {"options": {**SMALL_PT, "num_pseudo_tokens": 41}, "prepare": _spread}


def _at_pseudo_tokens(self, xu, xc, xt):  # TE-PT-TNP~ before: t read at the pseudo-tokens
    return xu


def test_fallback_check_catches_te_pt_tnp_reading_t_at_its_pseudo_tokens(monkeypatch):
    assert check_model_contract("te-pt-tnp", approximate=True, checks=["fallback"],
                                **SPREAD).ok
    monkeypatch.setattr(TEPseudoTokenEncoder, "fixed_input_locations", _at_pseudo_tokens)
    with pytest.raises(ContractFailure, match="beyond the fixed inputs' reach"):
        check_model_contract("te-pt-tnp", approximate=True, checks=["fallback"], **SPREAD)


def test_spread_offsets_reach_a_one_sided_task_unless_t_is_read_near_the_data(float64, gen,
                                                                             monkeypatch):
    # the context mean is outside the domain, yet spread offsets bring pseudo-tokens into it
    model = _te_pt_tnp(num_pseudo_tokens=41).eval()
    perturb_symmetry_breaking(model, generator=gen)
    box = fixed_input_domain(model)
    task = tasks_beyond_reach(box, 1.0, 1, generator=gen)["one side"]
    monkeypatch.setattr(TEPseudoTokenEncoder, "fixed_input_locations", _at_pseudo_tokens)
    with torch.no_grad():
        model.encoder.pseudo_offsets.mul_(0.0)
    assert_falls_back(model, task)  # pseudo-tokens at the anchor: outside the domain
    _spread(model)
    with pytest.raises(AssertionError, match="differs from the equivariant component's"):
        assert_falls_back(model, task)
    monkeypatch.undo()
    assert_falls_back(model, task)  # read near the data: the fall-back holds again


def test_fallback_check_catches_an_understated_reach(monkeypatch):
    monkeypatch.setattr(TEPTTNP, "fixed_input_reach", lambda self, dtype=None: 0.0)
    with pytest.raises(ContractFailure, match=r"beyond the fixed inputs' reach \(reach 0"):
        check_model_contract("te-pt-tnp", approximate=True, checks=["fallback"], **SPREAD)
