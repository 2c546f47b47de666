"""The model contract: what every neural process of the registry promises, as checks a user can
run on their own registered model.

=================  ===========================================================================
check              what it asserts
=================  ===========================================================================
``attributes``     ``symmetry`` (a group or ``None``), ``dim_x``, ``dim_y``, ``model_name`` and
                   ``build_options`` are set as :func:`~approxeq.np.build_model` promises
``shapes``         a distribution with batch shape ``[b, nt, dim_y]``, finite mean, positive
                   std and log-density, for empty and small context sets; the prediction
                   depends on the context (so equivariance checks cannot pass vacuously)
``equivariance``   float64: exactly equivariant to ``model.symmetry`` (its equivariant
                   component for approximate models) on random elements, on every element of
                   a small finite group, and with an empty context
``approximate``    float64, fixed inputs made non-zero: exact inside
                   :func:`~approxeq.approximate.equivariant_component`, measurably not
                   equivariant outside it
``fallback``       float64, fixed inputs made non-zero: a task whose locations all lie beyond
                   the model's reach (:func:`~approxeq.approximate.reach`) from the fixed
                   inputs' domain is predicted exactly as by the equivariant component
``permutation``    float64: invariant to the order of the context points
``aux``            built with ``dim_aux``: ``aux_c``/``aux_t`` are checked and used, ignored
                   inside the equivariant component, and equivariance holds when they move
                   with their points
``gradients``      every parameter receives a finite gradient from the log-likelihood
``dtype``          ``.to(torch.float64)`` gives float64 predictions matching float32 ones
                   (with auxiliary inputs where the model takes them)
``device``         ``.to(device)`` on an accelerator predicts there, matching the CPU
                   (skipped without one)
``checkpoint``     :func:`~approxeq.train.save_checkpoint` then
                   :func:`~approxeq.train.load_model` rebuilds the model from its build spec
                   with the same predictions
=================  ===========================================================================
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from approxeq.approximate.component import equivariant_component
from approxeq.groups.base import Group
from approxeq.groups.representation import output_rep
from approxeq.testing.equivariance import (
    assert_context_permutation_invariant,
    assert_equivariant,
    assert_not_equivariant,
    random_task,
)
from approxeq.testing.fallback import check_fallback
from approxeq.testing.perturb import perturb_symmetry_breaking
from approxeq.testing.precision import precision
from approxeq.testing.specs import (
    CHECKS,
    ContractCase,
    ContractSpec,
    applicable_checks,
    contract_spec,
)


class ContractSkip(Exception):
    """A check that cannot run here (e.g. ``device`` without an accelerator)."""


class ContractFailure(AssertionError):
    """One or more contract checks failed; the message lists each with its reason."""


@dataclass
class ContractReport:
    """What :func:`check_model_contract` found: ``passed``, ``skipped`` (check → reason) and
    ``failed`` (check → message) checks of ``case``."""

    case: ContractCase
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        head = (f"model contract of {self.case.id}: {len(self.passed)} passed, "
                f"{len(self.failed)} failed, {len(self.skipped)} skipped")
        lines = [head]
        lines += [f"  FAILED {c}: {m}" for c, m in self.failed.items()]
        lines += [f"  skipped {c}: {r}" for c, r in self.skipped.items()]
        return "\n".join(lines)


def _aux_field(x: Tensor, dim_aux: int) -> Tensor:
    """A smooth field of absolute location, ``[b, n, dim_aux]``: auxiliary values that change
    when the points move, as elevation does."""
    s = x.sum(-1, keepdim=True)
    k = torch.arange(1, dim_aux + 1, dtype=x.dtype, device=x.device)
    return torch.sin(k * s) + 0.5 * torch.cos(k * x[..., :1] ** 2)


def _aux_kwargs(case: ContractCase, xc: Tensor, xt: Tensor) -> dict[str, Tensor]:
    k = case.spec.dim_aux
    return {"aux_c": _aux_field(xc, k), "aux_t": _aux_field(xt, k)}


def _predict(model: nn.Module, task: tuple[Tensor, Tensor, Tensor], seed: int,
             **kwargs: Any) -> Distribution:
    # reseeded so that a model with randomness at evaluation gives comparable predictions
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model(*task, **kwargs)


def _task(case: ContractCase, gen: torch.Generator, nc: int = 7, nt: int = 5,
          batch: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    return random_task(batch, nc, nt, case.spec.dim_x, case.spec.dim_y,
                       scale=case.spec.task_scale, generator=gen)


def _elements(case: ContractCase, group: Group) -> Tensor | None:
    if case.spec.elements is None:
        return None
    return case.spec.elements(group, torch.get_default_dtype())


def _assert_close(actual: Tensor, expected: Tensor, what: str, *, atol: float,
                  rtol: float = 0.0) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)}, expected "
                             f"{tuple(expected.shape)}")
    err = (actual - expected.to(actual)).abs()
    bound = atol + rtol * expected.to(actual).abs()
    if not bool((err <= bound).all()):
        raise AssertionError(f"{what}: largest difference {float(err.max()):.3e} "
                             f"(atol {atol:.1e}, rtol {rtol:.1e})")


def _equivariance_checks(case: ContractCase, model: nn.Module, gen: torch.Generator, *,
                         with_aux: bool = False) -> None:
    """Equivariance to ``model.symmetry`` with a non-empty and an empty context; with
    ``with_aux`` auxiliary values are attached to the points and move with them."""
    group = model.symmetry
    elements = _elements(case, group)
    for task in (_task(case, gen, nc=8, nt=6), _task(case, gen, nc=0, nt=6)):
        kwargs = _aux_kwargs(case, task[0], task[2]) if with_aux else None
        assert_equivariant(model, group, task, atol=case.spec.atol,
                           n_elements=case.spec.n_elements, generator=gen, model_kwargs=kwargs,
                           output_action=output_rep(model))
        if elements is not None:
            assert_equivariant(model, group, task, atol=case.spec.atol, elements=elements,
                               model_kwargs=kwargs, output_action=output_rep(model))


def check_attributes(case: ContractCase, device: torch.device | None) -> None:
    model = case.build()
    symmetry = getattr(model, "symmetry", AttributeError)
    if symmetry is AttributeError:
        raise AssertionError("model has no attribute 'symmetry' (set it to its group, or None)")
    if symmetry is not None and not isinstance(symmetry, Group):
        raise AssertionError(f"symmetry: expected an approxeq.groups.Group or None, got "
                             f"{type(symmetry).__name__}")
    for attr, expected in (("dim_x", case.spec.dim_x), ("dim_y", case.spec.dim_y),
                           ("model_name", case.name)):
        if getattr(model, attr, None) != expected:
            raise AssertionError(f"{attr}: expected {expected!r}, got "
                                 f"{getattr(model, attr, None)!r}")
    if getattr(model, "build_options", None) != case.options():
        raise AssertionError(f"build_options: expected {case.options()!r}, got "
                             f"{getattr(model, 'build_options', None)!r}")


def check_shapes(case: ContractCase, device: torch.device | None) -> None:
    gen = torch.Generator().manual_seed(case.spec.seed)
    model = case.build().eval()
    dy = case.spec.dim_y
    for nc, nt in ((7, 5), (0, 4), (1, 1)):
        task = _task(case, gen, nc=nc, nt=nt, batch=3)
        with torch.no_grad():
            pred = model(*task)
        where = f"with {nc} context and {nt} target points"
        if not isinstance(pred, Distribution):  # a broken contract, not a bad argument
            raise AssertionError(  # noqa: TRY004
                f"{where}: forward returned {type(pred).__name__}, expected a "
                "torch.distributions.Distribution")
        if tuple(pred.batch_shape) != (3, nt, dy):
            raise AssertionError(f"{where}: batch shape {tuple(pred.batch_shape)}, expected "
                                 f"{(3, nt, dy)} = [batch, n_target, dim_y]")
        mean, std = pred.mean, pred.stddev
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise AssertionError(f"{where}: predictive mean or std not finite, or std <= 0")
        y = torch.randn(3, nt, dy, generator=gen)
        if not torch.isfinite(pred.log_prob(y)).all():
            raise AssertionError(f"{where}: log_prob of standard normal targets is not finite")
    xc, yc, xt = _task(case, gen)
    with torch.no_grad():
        a, b = _predict(model, (xc, yc, xt), 0).mean, _predict(model, (xc, yc + 1.0, xt), 0).mean
    if not (a - b).abs().max() > 1e-6:
        raise AssertionError("the prediction does not depend on the context outputs yc: "
                             "equivariance checks of a constant model would pass vacuously")


def check_equivariance(case: ContractCase, device: torch.device | None) -> None:
    with precision(torch.float64, seed=case.spec.seed) as gen:
        model = case.build()
        if model.symmetry is None:
            raise ContractSkip("symmetry is None")
        with equivariant_component(model):
            _equivariance_checks(case, model, gen)


def check_approximate(case: ContractCase, device: torch.device | None) -> None:
    with precision(torch.float64, seed=case.spec.seed) as gen:
        # eval: fixed-input dropout would decide by chance whether the break is seen
        model = case.build().eval()
        if perturb_symmetry_breaking(model, generator=gen) == 0:
            raise AssertionError("no symmetry-breaking parameters (no FixedInput, relaxed "
                                 "weights or other SymmetryBreaking module) although the "
                                 "model is built as approximately equivariant")
        if model.symmetry is None:
            raise AssertionError("an approximate model needs symmetry = the group of its "
                                 "equivariant component, got None")
        task = _task(case, gen, nc=8, nt=6)
        elements = _elements(case, model.symmetry)
        with equivariant_component(model):
            assert_equivariant(model, model.symmetry, task, atol=case.spec.atol,
                               n_elements=case.spec.n_elements, generator=gen,
                               output_action=output_rep(model))
            if elements is not None:
                assert_equivariant(model, model.symmetry, task, atol=case.spec.atol,
                                   elements=elements, output_action=output_rep(model))
        assert_not_equivariant(model, model.symmetry, task, margin=case.spec.margin,
                               n_elements=case.spec.n_elements, generator=gen,
                               elements=elements, output_action=output_rep(model))


def check_permutation(case: ContractCase, device: torch.device | None) -> None:
    with precision(torch.float64, seed=case.spec.seed) as gen:
        model = case.build()
        assert_context_permutation_invariant(model, _task(case, gen, nc=9, nt=5),
                                             atol=case.spec.atol, generator=gen)


def check_aux(case: ContractCase, device: torch.device | None) -> None:
    k = case.spec.dim_aux
    with precision(torch.float64, seed=case.spec.seed) as gen:
        model = case.build(dim_aux=k).eval()
        perturb_symmetry_breaking(model, generator=gen)
        task = _task(case, gen, nc=8, nt=6)
        aux = _aux_kwargs(case, task[0], task[2])
        with torch.no_grad():
            pred = _predict(model, task, 0, **aux)
            if tuple(pred.batch_shape) != (2, 6, case.spec.dim_y):
                raise AssertionError(f"with aux_c/aux_t: batch shape {tuple(pred.batch_shape)}, "
                                     f"expected {(2, 6, case.spec.dim_y)}")
            for bad, what in (({"aux_c": aux["aux_c"]}, "aux_t missing"),
                              ({"aux_c": aux["aux_c"][:, :3], "aux_t": aux["aux_t"]},
                               "aux_c with 3 of 8 context points")):
                try:
                    model(*task, **bad)
                except ValueError as err:
                    if "aux" not in str(err):
                        raise AssertionError(f"{what}: the ValueError does not name the "
                                             f"argument: {err}") from err
                else:
                    raise AssertionError(f"{what}: expected a ValueError naming the argument")
            moved = {"aux_c": aux["aux_c"] + 1.0, "aux_t": aux["aux_t"] - 1.0}
            if not (_predict(model, task, 0, **moved).mean - pred.mean).abs().max() > 1e-6:
                raise AssertionError("the prediction does not depend on aux_c/aux_t")
            with equivariant_component(model):
                _assert_close(_predict(model, task, 0, **moved).mean,
                              _predict(model, task, 0, **aux).mean,
                              "inside equivariant_component, changing aux_c/aux_t",
                              atol=case.spec.atol)
        if model.symmetry is not None:
            with equivariant_component(model) if case.approximate else nullcontext():
                # auxiliary values attached to the points and moved with them
                _equivariance_checks(case, model, gen, with_aux=True)


def check_gradients(case: ContractCase, device: torch.device | None) -> None:
    gen = torch.Generator().manual_seed(case.spec.seed)
    model = case.build().eval()  # eval: no dropout of fixed inputs hides their gradient
    xc, yc, xt = _task(case, gen)
    yt = torch.randn(2, xt.shape[1], case.spec.dim_y, generator=gen)
    model(xc, yc, xt).log_prob(yt).mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    if missing:
        raise AssertionError(f"no finite gradient reaches {len(missing)} parameter(s): "
                             f"{', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))


def check_dtype(case: ContractCase, device: torch.device | None) -> None:
    with precision(torch.float32, seed=case.spec.seed) as gen:
        extra = {"dim_aux": case.spec.dim_aux} if "aux" in case.checks else {}
        model = case.build(**extra).eval()
        task32 = _task(case, gen)
        aux32 = _aux_kwargs(case, task32[0], task32[2]) if extra else {}
        with torch.no_grad():
            ref = _predict(model, task32, 0, **aux32)
            model.to(torch.float64)
            task64 = tuple(t.double() for t in task32)
            aux64 = {k: v.double() for k, v in aux32.items()}
            yt = torch.randn(2, task64[2].shape[1], case.spec.dim_y, dtype=torch.float64,
                             generator=gen)
            try:
                pred = _predict(model, task64, 0, **aux64)
                logp = pred.log_prob(yt)
            except (RuntimeError, TypeError, ValueError) as err:
                raise AssertionError(f"after model.to(torch.float64), a float64 prediction "
                                     f"failed: {type(err).__name__}: {err}") from err
    for name, t in (("mean", pred.mean), ("stddev", pred.stddev), ("log_prob", logp)):
        if t.dtype != torch.float64:
            raise AssertionError(f"after model.to(torch.float64) the predictive {name} is "
                                 f"{t.dtype}, expected torch.float64")
    with_aux = " (with aux_c/aux_t)" if extra else ""
    _assert_close(pred.mean, ref.mean, f"float64 vs float32 predictive mean{with_aux}",
                  atol=1e-4, rtol=1e-3)
    _assert_close(pred.stddev, ref.stddev, f"float64 vs float32 predictive std{with_aux}",
                  atol=1e-4, rtol=1e-3)


def _accelerator(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    raise ContractSkip("no accelerator (pass device=... to check one)")


def check_device(case: ContractCase, device: torch.device | None) -> None:
    dev = _accelerator(device)
    with precision(torch.float64, seed=case.spec.seed) as gen:
        extra = {"dim_aux": case.spec.dim_aux} if "aux" in case.checks else {}
        model = case.build(**extra).eval()
        task = _task(case, gen)
        aux = _aux_kwargs(case, task[0], task[2]) if extra else {}
        with torch.no_grad():
            ref = _predict(model, task, 0, **aux)
            model.to(dev)
            moved = tuple(t.to(dev) for t in task)
            aux_dev = {k: v.to(dev) for k, v in aux.items()}
            try:
                pred = _predict(model, moved, 0, **aux_dev)
                with equivariant_component(model):
                    _predict(model, moved, 0, **aux_dev)
            except (RuntimeError, TypeError, ValueError) as err:
                raise AssertionError(f"after model.to({dev}), a prediction there failed: "
                                     f"{type(err).__name__}: {err}") from err
    if pred.mean.device.type != dev.type or pred.stddev.device.type != dev.type:
        raise AssertionError(f"after model.to({dev}) the prediction is on "
                             f"{pred.mean.device}, expected {dev}")
    _assert_close(pred.mean.cpu(), ref.mean, f"predictive mean on {dev} vs cpu", atol=1e-6,
                  rtol=1e-6)
    _assert_close(pred.stddev.cpu(), ref.stddev, f"predictive std on {dev} vs cpu", atol=1e-6,
                  rtol=1e-6)


def check_checkpoint(case: ContractCase, device: torch.device | None) -> None:
    from approxeq.train.checkpoint import load_model, model_spec_of, save_checkpoint

    gen = torch.Generator().manual_seed(case.spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.spec.seed)
        model = case.build().eval()
        perturb_symmetry_breaking(model, generator=gen)
        spec = model_spec_of(model)
        if spec is None:
            raise AssertionError("no build spec: the model lacks model_name/dim_x/dim_y/"
                                 "build_options (build it with approxeq.np.build_model)")
        with tempfile.TemporaryDirectory() as tmp:
            path = save_checkpoint(Path(tmp) / "best.pt", model, step=1)
            torch.manual_seed(case.spec.seed + 1)  # a rebuild must not rely on the init seed
            rebuilt = load_model(path)
            if case.spec.prepare is not None:
                case.spec.prepare(rebuilt)
    task = _task(case, gen)
    with torch.no_grad():
        before, after = _predict(model, task, 0), _predict(rebuilt, task, 0)
    if type(rebuilt) is not type(model):
        raise AssertionError(f"rebuilt a {type(rebuilt).__name__}, expected "
                             f"{type(model).__name__}")
    _assert_close(after.mean, before.mean, "predictive mean after the checkpoint round trip",
                  atol=0.0)
    _assert_close(after.stddev, before.stddev, "predictive std after the checkpoint round trip",
                  atol=0.0)


#: every check by name (see the module docstring)
CONTRACT_CHECKS: dict[str, Callable[[ContractCase, torch.device | None], None]] = {
    "attributes": check_attributes, "shapes": check_shapes, "equivariance": check_equivariance,
    "approximate": check_approximate, "fallback": check_fallback,
    "permutation": check_permutation, "aux": check_aux,
    "gradients": check_gradients, "dtype": check_dtype, "device": check_device,
    "checkpoint": check_checkpoint,
}
assert tuple(CONTRACT_CHECKS) == CHECKS


def run_contract_check(case: ContractCase, check: str, *,
                       device: torch.device | str | None = None) -> None:
    """Run one check of the suite on ``case``.

    Raises:
        ValueError: if ``check`` is not one of :data:`CHECKS`.
        AssertionError: if the model breaks the contract (the message says how).
        ContractSkip: if the check cannot run here or does not apply to the case.
    """
    if check not in CONTRACT_CHECKS:
        raise ValueError(f"check: expected one of {', '.join(CHECKS)}, got {check!r}")
    if check not in case.checks:
        raise ContractSkip(f"{check} does not apply to {case.id}")
    # the suite's models are tiny: intra-op threads only add synchronisation, which costs
    # 100x on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # seeded, and the caller's RNG left alone
            torch.manual_seed(case.spec.seed)
            CONTRACT_CHECKS[check](case, None if device is None else torch.device(device))
    finally:
        torch.set_num_threads(threads)


def check_model_contract(name: str, *, approximate: bool = False,
                         spec: ContractSpec | None = None, checks: Iterable[str] | None = None,
                         device: torch.device | str | None = None,
                         raise_on_failure: bool = True, **spec_fields: Any) -> ContractReport:
    """Run the model-contract suite on the registered model ``name``.

    Args:
        name: a name registered with :func:`approxeq.np.register_model`.
        approximate: check the model built with ``approximate=True``.
        spec: small settings (:class:`ContractSpec`); default the registered ones
            (:func:`~approxeq.testing.register_contract_spec`), else the builder's defaults.
        checks: a subset of :data:`CHECKS` (default: every check that applies).
        device: accelerator for the ``device`` check (default CUDA if available, else the
            check is skipped).
        raise_on_failure: raise :class:`ContractFailure` listing every failed check.
        **spec_fields: override fields of the spec, e.g. ``options={"width": 8}, dim_x=2``.

    Returns:
        The :class:`ContractReport`.

    Example::

        report = check_model_contract("te-tnp", options={"width": 8, "num_layers": 1,
                                                         "num_heads": 2})
        print(report.summary())
    """
    spec = spec or contract_spec(name)
    if spec_fields:
        spec = replace(spec, **spec_fields)
    case = ContractCase(name, approximate, spec)
    case = ContractCase(name, approximate, spec, applicable_checks(case))
    wanted = list(CHECKS) if checks is None else list(checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ValueError(f"checks: unknown {', '.join(map(repr, unknown))}; expected some of "
                         f"{', '.join(CHECKS)}")
    report = ContractReport(case)
    for check in wanted:
        try:
            run_contract_check(case, check, device=device)
        except ContractSkip as skip:
            report.skipped[check] = str(skip)
        except Exception as err:  # noqa: BLE001 - every failure is reported, not just the first
            report.failed[check] = f"{type(err).__name__}: {err}"
        else:
            report.passed.append(check)
    if raise_on_failure and report.failed:
        raise ContractFailure(report.summary())
    return report


__all__ = [
    "CONTRACT_CHECKS", "ContractFailure", "ContractReport", "ContractSkip",
    "check_model_contract", "perturb_symmetry_breaking", "run_contract_check",
]
