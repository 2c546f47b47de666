"""What the model-contract suite builds: small options per registered model, and the cases
(model name × exact/approximate) with the checks that apply to each.

The built-in models have entries in :data:`CONTRACT_SPECS`; a user's own model gets one with
:func:`register_contract_spec` (or passes a :class:`ContractSpec` straight to
:func:`~approxeq.testing.check_model_contract`). A model without an entry is built with its
builder's defaults, which is correct but may be slow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.approximate.component import is_approximate
from approxeq.groups.base import Group
from approxeq.np.registry import available_models, build_model
from approxeq.symmetrize import ProbabilisticSymmetrization

#: every check of the suite, in the order they run
CHECKS: tuple[str, ...] = ("attributes", "shapes", "equivariance", "approximate", "fallback",
                           "permutation", "aux", "gradients", "dtype", "device", "checkpoint")

ElementsFn = Callable[[Group, torch.dtype], Tensor]


@dataclass(frozen=True)
class ContractSpec:
    """How the contract suite builds and checks one registered model.

    Attributes:
        options: small build options (a width of 8-16, one or two layers) that keep every
            check fast; ``approximate`` is added by the suite, never put it here.
        dim_x, dim_y: the dimensions the model is built with.
        approximate_options: options added with ``approximate=True`` only.
        atol: tolerance of the float64 equivariance and context-permutation checks (raise it
            only for a model with documented randomness at evaluation).
        margin: how far an approximate model outside its equivariant component must be from
            equivariant.
        n_elements: random group elements per equivariance check (a finite group of at most
            64 elements is checked on every element).
        elements: optional ``f(group, dtype) -> [k, *element_shape]`` elements checked in
            addition, e.g. every rotation of a lattice group with a few shifts.
        task_scale: context and target inputs are uniform on ``[-task_scale, task_scale]``
            (inside the default fixed-input box ``(-2, 2)``, where fixed inputs are non-zero).
        dim_aux: auxiliary channels used by the ``aux`` check.
        prepare: optional ``f(model)`` called on every model the suite builds (also one rebuilt
            from a checkpoint), e.g. to switch off randomness at evaluation.
        seed: seeds each check.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    dim_x: int = 1
    dim_y: int = 1
    approximate_options: Mapping[str, Any] = field(default_factory=dict)
    atol: float = 1e-8
    margin: float = 1e-4
    n_elements: int = 6
    elements: ElementsFn | None = None
    task_scale: float = 1.5
    dim_aux: int = 2
    prepare: Callable[[nn.Module], None] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if "approximate" in self.options:
            raise ValueError("options: leave out 'approximate'; the suite checks the exact and "
                             "the approximate model as separate cases")
        for name in ("dim_x", "dim_y", "n_elements", "dim_aux"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def _lattice_with_shifts(group: Group, dtype: torch.dtype) -> Tensor:
    # every point-group element, unshifted and shifted by a lattice vector
    shifts = torch.tensor([[0, 0], [2, -3]], dtype=dtype)
    return group.with_shifts(shifts)  # type: ignore[attr-defined]


def _no_frame_jitter(model: nn.Module) -> None:
    # the 1e-6 tie-breaking jitter of a probabilistic frame is drawn afresh and not moved with
    # the task, so it alone breaks exact equivariance by about 1e-5
    for module in model.modules():
        if isinstance(module, ProbabilisticSymmetrization):
            module.jitter = 0.0


_TRANSFORMER = {"width": 8, "num_layers": 1, "num_heads": 2}
_GRID = {"channels": 8, "num_layers": 2, "kernel_size": 3, "points_per_unit": 8}

#: small, fast contract settings of the built-in models (see :class:`ContractSpec`)
CONTRACT_SPECS: dict[str, ContractSpec] = {
    "cnp": ContractSpec({"width": 8, "num_layers": 1}, dim_x=1, dim_y=2),
    "tnp": ContractSpec(_TRANSFORMER, dim_x=2),
    "pt-tnp": ContractSpec({**_TRANSFORMER, "num_pseudo_tokens": 3}, dim_x=2, dim_y=2),
    "te-tnp": ContractSpec(_TRANSFORMER, dim_x=2),
    "te-pt-tnp": ContractSpec({**_TRANSFORMER, "num_pseudo_tokens": 3}, dim_x=1, dim_y=2),
    "convcnp": ContractSpec(_GRID, dim_x=1, dim_y=2),
    "relaxed-convcnp": ContractSpec({**_GRID, "num_basis": 2}, dim_x=1),
    "equivcnp": ContractSpec({"channels": 4, "num_layers": 2, "kernel_size": 3,
                              "points_per_unit": 3, "margin": 0.7}, dim_x=2,
                             elements=_lattice_with_shifts),
    "e-tnp": ContractSpec(_TRANSFORMER, dim_x=2),
    # a deterministic frame (no noise, no jitter): the check with a transformed noise draw is in
    # the LPS-TNP's own tests
    "lps-tnp": ContractSpec({**_TRANSFORMER, "frame_hidden": 4, "noise_scale": 0.0,
                             "n_samples_train": 1, "n_samples_eval": 2}, dim_x=2,
                            prepare=_no_frame_jitter),
}


def register_contract_spec(name: str, spec: ContractSpec | None = None, *,
                           replace_existing: bool = False, **fields: Any) -> ContractSpec:
    """Give the contract suite small settings for the registered model ``name``: a
    :class:`ContractSpec`, or its fields as keywords (``options={"width": 8}, dim_x=2``).

    Returns the spec. Raises ``ValueError`` if ``name`` has one already, unless
    ``replace_existing``.
    """
    if spec is not None and fields:
        raise ValueError("spec: give a ContractSpec or its fields as keywords, not both")
    if name in CONTRACT_SPECS and not replace_existing:
        raise ValueError(f"name: {name!r} has a contract spec already; pass "
                         "replace_existing=True to change it")
    spec = spec if spec is not None else ContractSpec(**fields)
    CONTRACT_SPECS[name] = spec
    return spec


def contract_spec(name: str) -> ContractSpec:
    """The spec of ``name``: its registered one, else the builder's defaults in 1-D."""
    return CONTRACT_SPECS.get(name, ContractSpec())


@dataclass(frozen=True)
class ContractCase:
    """One model configuration of the suite: the model ``name`` built with its spec's options,
    exact (``approximate=False``: the builder's default) or with ``approximate=True``.

    ``checks`` are the checks that apply (e.g. no ``equivariance`` check for a model whose
    ``symmetry`` is ``None``, no ``aux`` check for a model without ``dim_aux``).
    """

    name: str
    approximate: bool = False
    spec: ContractSpec = field(default_factory=ContractSpec)
    checks: tuple[str, ...] = CHECKS

    @property
    def id(self) -> str:
        base = f"{self.name}-approximate" if self.approximate else self.name
        y_rep = self.spec.options.get("y_rep", "scalar")
        return base if y_rep == "scalar" else f"{base}-{_rep_id(y_rep)}"

    def __str__(self) -> str:
        return self.id

    def options(self, **extra: Any) -> dict[str, Any]:
        """The build options: the spec's, ``approximate=True`` with the spec's approximate
        options for an approximate case, then ``extra``."""
        opts = dict(self.spec.options)
        if self.approximate:
            opts.update(approximate=True, **self.spec.approximate_options)
        opts.update(extra)
        return opts

    def build(self, **extra: Any) -> nn.Module:
        """``build_model(name, dim_x, dim_y, **options(**extra))`` in the current default dtype
        and with the current global seed, then the spec's ``prepare``."""
        model = build_model(self.name, self.spec.dim_x, self.spec.dim_y,
                            **self.options(**extra))
        if self.spec.prepare is not None:
            self.spec.prepare(model)
        return model

    def with_spec(self, **changes: Any) -> ContractCase:
        return replace(self, spec=replace(self.spec, **changes))


def _builds(case: ContractCase, **extra: Any) -> nn.Module | None:
    """The model if the builder accepts these options, ``None`` if it rejects them."""
    try:
        return case.build(**extra)
    except (ValueError, TypeError):
        return None


def applicable_checks(case: ContractCase, model: nn.Module | None = None) -> tuple[str, ...]:
    """The checks that apply to ``case`` (built once to find out, unless ``model`` is given).
    A model that fails to build gets every check, so that each reports the failure."""
    if model is None:
        model = _builds(case)
        if model is None:
            return CHECKS
    symmetric = getattr(model, "symmetry", None) is not None
    approximate = case.approximate or is_approximate(model)
    aux = _builds(case, dim_aux=case.spec.dim_aux) is not None
    skip = {"equivariance": not symmetric, "approximate": not approximate,
            "fallback": not approximate, "aux": not aux}
    return tuple(c for c in CHECKS if not skip.get(c, False))


def contract_cases(names: Iterable[str] | None = None, *,
                   specs: Mapping[str, ContractSpec] | None = None) -> list[ContractCase]:
    """Every case of the suite for the registered models ``names`` (default: all of
    :func:`~approxeq.np.available_models`): each model with its builder's default, plus
    ``approximate=True`` where the builder accepts it and the default is not already
    approximate. ``specs`` overrides :func:`contract_spec` per name.

    Builds each model once or twice (small options: milliseconds each).
    """
    names = list(available_models()) if names is None else list(names)
    cases: list[ContractCase] = []
    for name in names:
        spec = (specs or {}).get(name) or contract_spec(name)
        exact = ContractCase(name, False, spec)
        with torch.random.fork_rng(devices=[]):
            model = _builds(exact)
            cases.append(replace(exact, checks=applicable_checks(exact, model)))
            if model is not None and not is_approximate(model):
                approx = ContractCase(name, True, spec)
                approx_model = _builds(approx)
                if approx_model is not None:
                    cases.append(replace(approx, checks=applicable_checks(approx, approx_model)))
    return cases


def _rep_id(y_rep: Any) -> str:
    return y_rep if isinstance(y_rep, str) else "+".join(map(str, y_rep))


#: the models whose outputs can be a vector field that turns with the scene, and the output
#: representations the suite checks them with (one vector; a vector beside a scalar)
VECTOR_MODELS = ("e-tnp", "equivcnp", "lps-tnp")
VECTOR_REPS: tuple[Any, ...] = ("vector", ["vector", "scalar"])


def vector_contract_cases(names: Iterable[str] = VECTOR_MODELS, *,
                          reps: Iterable[Any] = VECTOR_REPS) -> list[ContractCase]:
    """The suite's cases of vector-valued models: each model of ``names`` with each output
    representation of ``reps`` (``y_rep``, with ``dim_y`` to match), exact and approximate.
    Their equivariance checks act on the outputs with ``ρ(g)``, so a model that treated the
    components as scalars would fail them."""
    cases: list[ContractCase] = []
    for name in names:
        base = contract_spec(name)
        for y_rep in reps:
            dim_y = 2 if y_rep == "vector" else sum(2 if r == "vector" else 1 for r in y_rep)
            spec = replace(base, options={**base.options, "y_rep": y_rep}, dim_y=dim_y)
            specs = {name: spec}
            cases += contract_cases([name], specs=specs)
    return cases


__all__ = [
    "CHECKS", "CONTRACT_SPECS", "ContractCase", "ContractSpec", "VECTOR_MODELS",
    "applicable_checks", "contract_cases", "contract_spec", "register_contract_spec",
    "vector_contract_cases",
]
