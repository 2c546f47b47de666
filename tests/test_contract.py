"""The model contract, run on every registered model; and proof that each check can fail."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from approxeq.approximate import FixedInput, equivariance_error
from approxeq.groups import (
    Cyclic,
    DirectProduct,
    Euclidean,
    LatticeEuclidean,
    Permutation,
    Translation,
)
from approxeq.np import available_models, registry
from approxeq.testing import (
    CHECKS,
    ContractFailure,
    ContractSkip,
    ContractSpec,
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_group_laws,
    assert_not_equivariant,
    check_model_contract,
    contract_cases,
    default_atol,
    elements_to_check,
    finite_order,
    precision,
    random_task,
    register_contract_spec,
    run_contract_check,
)
from approxeq.testing import specs as contract_specs

CASES = contract_cases()
VECTOR_CASES = contract_specs.vector_contract_cases()


def test_every_registered_model_has_small_contract_settings():
    missing = sorted(set(available_models()) - set(contract_specs.CONTRACT_SPECS))
    assert not missing, f"add small options for {missing} to approxeq.testing.specs"
    ids = {c.id for c in CASES}
    assert {"te-tnp", "te-tnp-approximate", "convcnp-approximate", "cnp"} <= ids
    assert "cnp-approximate" not in ids  # not equivariant: no approximate version
    assert "relaxed-convcnp-approximate" not in ids  # approximate already by default


@pytest.mark.parametrize("case, check", [(case, check) for case in CASES + VECTOR_CASES
                                         for check in case.checks], ids=lambda v: str(v))
def test_model_contract(case, check):
    try:
        run_contract_check(case, check)
    except ContractSkip as skip:
        pytest.skip(str(skip))


# ----------------------------------------------------------------------------- a model to break

class KernelNP(nn.Module):
    """A translation-equivariant NP: a kernel smoother of the context outputs with a learned
    lengthscale, mean offset and std from the kernel density. ``bug`` plants one defect."""

    def __init__(self, dim_x: int, dim_y: int, *, approximate: bool = False,
                 bug: str | None = None) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.bug = dim_x, dim_y, bug
        self.symmetry = Translation(dim_x)
        self.log_lengthscale = nn.Parameter(torch.tensor(math.log(0.7)))
        self.head = nn.Linear(1, 2 * dim_y)
        self.fixed_input = None
        if approximate:
            self.fixed_input = (nn.Linear(dim_x, dim_y) if bug == "approximate"
                                else FixedInput(dim_x, dim_y, hidden=8, p=0.0))
        if bug == "dtype":
            self.proj = torch.eye(2 * dim_y)  # a plain tensor: .to() does not move it
        if bug == "checkpoint":
            self.register_buffer("scale", torch.rand(1) + 0.5, persistent=False)
        if bug != "reach":
            self.fixed_input_reach = 0.0  # the fixed input is read at the targets only

    def forward(self, xc, yc, xt):
        d2 = ((xt[:, :, None] - xc[:, None]) ** 2).sum(-1)  # [b, nt, nc]
        w = torch.exp(-0.5 * d2 / self.log_lengthscale.exp() ** 2)
        density = w.sum(-1, keepdim=True)  # [b, nt, 1]
        h = self.head(density)
        if self.bug == "dtype":
            h = h @ self.proj
        if self.bug == "checkpoint":
            h = h * self.scale
        mean = (w @ yc) / (density + 1e-2) + h[..., :self.dim_y]
        if self.fixed_input is not None:
            mean = mean + self.fixed_input(xt)
        if self.bug == "equivariance":
            mean = mean + 0.1 * xt.sum(-1, keepdim=True)
        if self.bug == "permutation" and yc.shape[1] > 0:
            mean = mean + yc[:, :1]
        std = nn.functional.softplus(h[..., self.dim_y:]) + 1e-3
        if self.bug == "shapes":  # [nt, b, dim_y]
            return Normal(mean.transpose(0, 1), std.transpose(0, 1))
        return Normal(mean, std)


@pytest.fixture
def kernel_np(monkeypatch):
    """Registers ``kernel-np`` (options ``approximate``, ``bug``) for one test."""
    monkeypatch.setitem(registry._REGISTRY, "kernel-np", KernelNP)
    monkeypatch.setitem(registry._DESCRIPTIONS, "kernel-np", "kernel smoother (test model)")
    monkeypatch.setattr(contract_specs, "CONTRACT_SPECS", dict(contract_specs.CONTRACT_SPECS))
    return "kernel-np"


def test_a_correct_model_passes_the_whole_contract(kernel_np):
    for approximate in (False, True):
        report = check_model_contract(kernel_np, approximate=approximate, dim_y=2)
        expected = {c for c in CHECKS if c not in ("aux", "device")}
        if not approximate:
            expected -= {"approximate", "fallback"}
        assert set(report.passed) == expected, report.summary()
        assert report.ok and "does not apply" in report.skipped["aux"]  # no dim_aux option


@pytest.mark.parametrize("bug, check, message", [
    ("equivariance", "equivariance", "not equivariant: kernel-np under T"),
    ("permutation", "permutation", "context points were reordered"),
    ("shapes", "shapes", r"batch shape \(5, 3, 2\), expected \(3, 5, 2\)"),
    ("dtype", "dtype", "dtype|Double|Float"),
    ("checkpoint", "checkpoint", "after the checkpoint round trip"),
])
def test_each_check_catches_its_defect(kernel_np, bug, check, message):
    spec = ContractSpec({"bug": bug}, dim_y=2)
    with pytest.raises(ContractFailure, match=message):
        check_model_contract(kernel_np, spec=spec, checks=[check])
    report = check_model_contract(kernel_np, spec=spec, raise_on_failure=False)
    assert check in report.failed and not report.ok
    clean = check_model_contract(kernel_np, spec=ContractSpec(dim_y=2), checks=[check])
    assert clean.passed == [check]


def test_fallback_check_needs_a_declared_reach(kernel_np):
    with pytest.raises(ContractFailure, match=r"reach is unknown \(inf\): declare "
                                              "fixed_input_reach"):
        check_model_contract(kernel_np, approximate=True, spec=ContractSpec({"bug": "reach"}),
                             checks=["fallback"])


def test_approximate_check_needs_symmetry_breaking_modules(kernel_np):
    spec = ContractSpec({"bug": "approximate"})
    with pytest.raises(ContractFailure, match="no symmetry-breaking parameters"):
        check_model_contract(kernel_np, approximate=True, spec=spec, checks=["approximate"])


def test_equivariance_failure_message_holds_the_table(kernel_np):
    with pytest.raises(ContractFailure) as info:
        check_model_contract(kernel_np, options={"bug": "equivariance"}, checks=["equivariance"])
    text = str(info.value)
    assert "mean err" in text and "std err" in text and "atol 1.0e-08" in text
    assert "FAILED equivariance" in text


def test_contract_options_are_validated(kernel_np):
    with pytest.raises(ValueError, match="checks: unknown 'colour'"):
        check_model_contract(kernel_np, checks=["colour"])
    with pytest.raises(ValueError, match="options: leave out 'approximate'"):
        ContractSpec({"approximate": True})
    with pytest.raises(ValueError, match="dim_x"):
        ContractSpec(dim_x=0)


def test_registered_spec_is_used_and_not_silently_replaced(kernel_np):
    register_contract_spec(kernel_np, options={"bug": "permutation"})
    assert check_model_contract(kernel_np, checks=["permutation"],
                                raise_on_failure=False).failed
    with pytest.raises(ValueError, match="has a contract spec already"):
        register_contract_spec(kernel_np, ContractSpec())
    register_contract_spec(kernel_np, ContractSpec(), replace_existing=True)
    assert check_model_contract(kernel_np, checks=["permutation"]).ok


def test_device_check_is_skipped_without_an_accelerator(kernel_np):
    if torch.cuda.is_available():
        assert check_model_contract(kernel_np, checks=["device"]).passed == ["device"]
    else:
        report = check_model_contract(kernel_np, checks=["device"])
        assert "no accelerator" in report.skipped["device"]
    # the same code path, to the CPU
    assert check_model_contract(kernel_np, checks=["device"], device="cpu").passed == ["device"]


def test_threads_are_restored_after_a_check(kernel_np):
    threads = torch.get_num_threads()
    check_model_contract(kernel_np, checks=["shapes"])
    assert torch.get_num_threads() == threads


# ----------------------------------------------------------------------------- the asserts

def test_assert_equivariant_reports_table_and_float32_hint(kernel_np, gen):
    model = KernelNP(1, 1, bug="equivariance")
    task = random_task(generator=gen)
    with pytest.raises(AssertionError, match=r"(?s)not equivariant.*element.*mean err.*hint"):
        assert_equivariant(model, Translation(1), task, atol=1e-8)
    report = assert_not_equivariant(model, Translation(1), task)
    assert report.max_error > 1e-3 and len(report.mean_err) == 6


def test_default_tolerance_follows_dtype(float64, gen):
    model = KernelNP(1, 1)
    task = random_task(generator=gen)
    report = assert_equivariant(model, Translation(1), task)
    assert report.max_error < 1e-12 and report.scale > 1e-3
    assert default_atol(torch.float64) < default_atol(torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        default_atol(torch.int64)
    with pytest.raises(AssertionError, match="unexpectedly equivariant"):
        assert_not_equivariant(model, Translation(1), task)


def test_small_finite_groups_are_checked_on_every_element():
    assert finite_order(Cyclic(5)) == 5
    assert finite_order(DirectProduct(Cyclic(4), Permutation(3))) == 24
    assert finite_order(Permutation(9)) == math.factorial(9)
    assert finite_order(Translation(2)) is None
    assert elements_to_check(Cyclic(6)).shape[0] == 6
    assert elements_to_check(Permutation(6), n_elements=5).shape[0] == 5  # 720 > 64: sampled


def test_context_permutation_assert(float64, gen):
    task = random_task(nc=6, generator=gen)
    assert assert_context_permutation_invariant(KernelNP(1, 1), task) < 1e-12
    with pytest.raises(AssertionError, match="6 context points were reordered"):
        assert_context_permutation_invariant(KernelNP(1, 1, bug="permutation"), task)
    with pytest.raises(ValueError, match=r"task: expected a tuple \(xc, yc, xt\)"):
        assert_context_permutation_invariant(KernelNP(1, 1), task[:2])


def test_report_matches_equivariance_error(float64, gen):
    model, task = KernelNP(2, 1, bug="equivariance"), random_task(dim_x=2, generator=gen)
    elements = Translation(2).sample(3, generator=gen)
    ours = assert_not_equivariant(model, Translation(2), task, elements=elements)
    theirs = equivariance_error(model, Translation(2), *task, elements=elements)
    assert torch.equal(ours.mean_err, theirs.mean_err)


class BrokenShift(Translation):
    """Translations whose inverse is wrong."""

    def inverse(self, g):
        return g


def test_group_laws_hold_for_the_library_groups_and_catch_a_broken_one():
    for group in (Translation(2), Cyclic(4), Euclidean(2), LatticeEuclidean(4, spacing=0.5)):
        assert_group_laws(group)
    assert_group_laws(Permutation(4), torch.randn(16, 4, 2, dtype=torch.float64), kind="nodes")
    with pytest.raises(AssertionError, match=r"T\(2\): inverse is not an inverse"):
        assert_group_laws(BrokenShift(2))
    with pytest.raises(ValueError, match="x: expected batch size n = 16"):
        assert_group_laws(Translation(2), torch.zeros(3, 5, 2))


# ----------------------------------------------------------------------------- precision

def test_precision_sets_and_restores_dtype_and_seed():
    before = torch.get_default_dtype()
    state = torch.get_rng_state()
    with precision(torch.float64, seed=3) as gen:
        assert torch.get_default_dtype() == torch.float64
        a = torch.rand(2)
        b = torch.rand(2, generator=gen)
    assert torch.get_default_dtype() == before and torch.equal(torch.get_rng_state(), state)
    with precision(torch.float64, seed=3) as gen:
        assert torch.equal(torch.rand(2), a) and torch.equal(torch.rand(2, generator=gen), b)
    with pytest.raises(RuntimeError, match="boom"), precision(torch.float64):
        raise RuntimeError("boom")
    assert torch.get_default_dtype() == before
    with pytest.raises(ValueError, match="dtype: expected a floating"), precision(torch.int32):
        pass


def test_random_task_shapes_and_validation():
    xc, yc, xt = random_task(3, 0, 4, 2, 5, dtype=torch.float64)
    assert xc.shape == (3, 0, 2) and yc.shape == (3, 0, 5) and xt.shape == (3, 4, 2)
    assert xt.dtype == torch.float64 and torch.equal(random_task()[0], random_task()[0])
    with pytest.raises(ValueError, match="nc: expected an int >= 0, got -1"):
        random_task(nc=-1)


@pytest.mark.parametrize("name", contract_specs.VECTOR_MODELS)
def test_a_scalar_treatment_of_a_vector_field_fails_the_contract(name):
    # the model is built for two scalar outputs but declares them a vector: its prediction for
    # a rotated scene is not the rotated prediction, and the suite must say so
    from approxeq.groups.representation import OutputRep

    def declare_vector(model):
        base_prepare(model)
        model.y_rep = OutputRep.parse("vector", 2, 2)

    spec = contract_specs.contract_spec(name)
    base_prepare = spec.prepare or (lambda model: None)
    report = check_model_contract(name, checks=["equivariance"], raise_on_failure=False,
                                  dim_y=2, prepare=declare_vector)
    assert "equivariance" in report.failed, report.summary()
