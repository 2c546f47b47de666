"""Type and range checks of model build options, from the builders' keyword annotations.

Every registered builder declares its options as annotated keyword arguments (``width: int =
128``, ``cnn: Literal["conv", "unet"] = "conv"``, ``num_fixed_inputs: int | None = None``).
:func:`check_options` checks a value against its annotation and against the range
:data:`OPTION_RANGES` declares for its name (one table: an option means the same in every
model), and refuses it in one line naming the option, what was expected and what was given, the
style of the tensor checks. It runs before the builder, for options from Python and from YAML
alike.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers: ``low``/``high`` (``None`` = unbounded), each included
    unless ``open_low``/``open_high``."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.open_high
                                      else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return (f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.open_high else ']'}")


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, open_low=True)
PROBABILITY = Range(0, 1, open_high=True)

#: the allowed range of every numeric option, by name
OPTION_RANGES: dict[str, Range] = {
    "width": AT_LEAST_1, "num_layers": AT_LEAST_1, "num_heads": AT_LEAST_1,
    "num_pseudo_tokens": AT_LEAST_1, "channels": AT_LEAST_1, "kernel_size": AT_LEAST_1,
    "num_fixed_inputs": AT_LEAST_1, "fixed_input_hidden": AT_LEAST_1, "num_basis": AT_LEAST_1,
    "chunk_size": AT_LEAST_1, "n_samples_train": AT_LEAST_1, "n_samples_eval": AT_LEAST_1,
    "noise_dim": AT_LEAST_1, "frame_hidden": AT_LEAST_1, "frame_layers": AT_LEAST_1,
    "grid_levels": AT_LEAST_1, "grid_coarsest": AT_LEAST_1, "grid_finest": AT_LEAST_1,
    "grid_features": AT_LEAST_1, "grid_smoothness": NON_NEGATIVE, "fixed_input_lr": POSITIVE,
    "fourier_features": NON_NEGATIVE, "dim_aux": NON_NEGATIVE, "min_std": NON_NEGATIVE,
    "margin": NON_NEGATIVE, "noise_scale": NON_NEGATIVE, "fixed_input_reach": NON_NEGATIVE,
    "points_per_unit": POSITIVE, "memory_budget_mb": POSITIVE, "max_grid_mb": POSITIVE,
    "fixed_input_dropout": PROBABILITY, "aux_dropout": PROBABILITY,
}


def describe(value: Any) -> str:
    """A value as an error message shows it: ``the string 'false'``, ``nan``, ``[1, 2]``."""
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    return f"{value!r} (a {type(value).__name__})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parts(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (the annotation itself otherwise)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _check_box(name: str, value: Any) -> None:
    """A box ``[(low, high), ...]`` of finite numbers with ``low < high``."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            _is_number(v) and math.isfinite(v) for v in pair) and pair[0] < pair[1]
        for pair in value)
    if not ok:
        raise ValueError(f"{name}: expected a box [(low, high), ...] of finite numbers with "
                         f"low < high, one pair per input dimension, got {describe(value)}")


def check_option(name: str, value: Any, annotation: Any) -> None:
    """Check one option against its annotation and :data:`OPTION_RANGES`; raise a
    ``ValueError`` naming the option, what was expected and what was given."""
    parts = _parts(annotation)
    if value is None:
        if type(None) in parts:
            return
        raise ValueError(f"{name}: expected {_kind(parts)}, got None")
    kinds = [p for p in parts if p is not type(None)]
    if len(kinds) != 1:
        return  # not a form the builders use: the builder checks it itself
    kind = kinds[0]
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices or type(value) is not type(choices[0]):
            raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, "
                             f"got {describe(value)}")
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected a bool, got {describe(value)}")
        return
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {describe(value)}")
        return
    if typing.get_origin(kind) in (Sequence, list, tuple):
        _check_box(name, value)
        return
    if kind in (int, float):
        rng = OPTION_RANGES.get(name)
        what = "an int" if kind is int else "a number"
        bound = f" {rng}" if rng is not None else ""
        if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"{name}: expected an int{bound}, got {describe(value)}")
        if kind is float and not _is_number(value):
            raise ValueError(f"{name}: expected a number{bound}, got {describe(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number{bound}, got {describe(value)}")
        if rng is not None and value not in rng:
            raise ValueError(f"{name}: expected {what}{bound}, got {describe(value)}")


def _kind(parts: tuple[Any, ...]) -> str:
    names = {bool: "a bool", int: "an int", float: "a number", str: "a string"}
    return " or ".join(names.get(p, getattr(p, "__name__", str(p))) for p in parts)


def accepted_options(builder: Callable[..., Any]) -> list[str]:
    """The option names a builder ``f(dim_x, dim_y, *, ...)`` accepts."""
    params = list(inspect.signature(builder).parameters.items())[2:]
    return sorted(k for k, p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                     inspect.Parameter.POSITIONAL_OR_KEYWORD))


def check_options(model_name: str, builder: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse unknown option names (listing the accepted ones) and values of the wrong type or
    out of range, before ``builder`` runs."""
    accepted = accepted_options(builder)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        import difflib

        def named(key: str) -> str:
            close = difflib.get_close_matches(key, list(accepted), n=1)
            return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)

        raise ValueError(f"{model_name}: unknown option(s) {', '.join(map(named, unknown))}; "
                         f"accepted options are {', '.join(accepted)}")
    hints = typing.get_type_hints(builder)
    for name, value in options.items():
        if name in hints:
            check_option(name, value, hints[name])


#: what each build option means, in one line (an option means the same in every model);
#: ``approxeq models NAME`` prints these next to each builder's defaults
OPTION_MEANINGS: dict[str, str] = {
    "approximate": "add learned fixed inputs: the approximately equivariant version",
    "width": "hidden width of the tokens and MLPs",
    "num_layers": "number of layers (attention blocks, CNN blocks or UNet levels)",
    "num_heads": "attention heads (width must be a multiple of it)",
    "num_pseudo_tokens": "pseudo-tokens of a pseudo-token TNP",
    "variant": "pseudo-token encoder: 'perceiver' or 'ist' (induced set transformer)",
    "min_std": "floor of the predictive standard deviation",
    "cnn": "the grid network: 'conv' (a stack of convolutions) or 'unet'",
    "layout": "'approxeq', or 'neuralprocesses' for the exact network of neuralprocesses' ConvGNP",
    "points_per_unit": "grid density (grid points per input unit; sets the lattice)",
    "channels": "channels C of the grid network",
    "kernel_size": "convolution kernel size, in grid points",
    "margin": "room left around the data on the grid, in input units",
    "banded_setconv": "set convolutions over the grid points near each input only (1-D, opt-in)",
    "max_grid_mb": "memory budget (MiB) of the grid's activations; larger tasks are refused",
    "memory_budget_mb": "memory budget (MiB) of one attention call; larger ones are chunked",
    "chunk_size": "target points per attention chunk (default: from memory_budget_mb)",
    "split_first_layer": "TE logit MLP's first layer split per query and key (False: on the "
                         "pairs; same function, the faster form depends on the CPU)",
    "num_fixed_inputs": "channels B of the learned fixed input (approximate models)",
    "fixed_input_domain": "box [(low, high), ...] outside which the fixed input is zero",
    "fixed_input_dropout": "per-task probability of dropping the fixed input in training",
    "fixed_input_reach": "how far from the context a pseudo-token's fixed input is read",
    "fixed_input_mode": "'sum' the fixed input into the channels or 'concat' it as extra ones",
    "fixed_input_hidden": "MLP width of the fixed input (default: channels)",
    "fourier_features": "Fourier features of the location fed to the fixed input (0: none)",
    "fixed_input_kind": "the fixed input's parameterisation: 'mlp' (the paper's MLP of the "
                        "location), 'grid' (a learned multi-resolution grid over the domain box "
                        "into an MLP head) or 'grid-linear' (the grid into a linear map)",
    "grid_levels": "levels of the fixed input's grid, coarse to fine (fixed_input_kind 'grid*')",
    "grid_coarsest": "cells per axis of the grid's coarsest level, across the domain box",
    "grid_finest": "cells per axis of the grid's finest level (levels geometric in between)",
    "grid_features": "learned values per vertex and level of the grid",
    "grid_smoothness": "weight of the grid's roughness penalty in the training loss (0: none)",
    "fixed_input_lr": "learning-rate multiplier of the fixed input's parameters (1: the run's lr)",
    "num_basis": "filter banks per relaxed convolution",
    "dim_aux": "channels of known auxiliary fields (aux_c, aux_t) the model reads (0: none)",
    "aux_dropout": "per-task probability of dropping the auxiliary embedding in training",
    "group": "the point group of the group CNN: 'D4', 'C4', 'D8' or 'C8'",
    "pool": "pooling over the group axis: 'mean' or 'max'",
    "aggregate": "how the symmetrised draws combine: 'gaussian' or 'mixture'",
    "n_samples_train": "symmetrisation draws per task in training",
    "n_samples_eval": "symmetrisation draws per task in evaluation",
    "noise_dim": "vector-noise channels per anchor point of the frame network",
    "noise_scale": "std of the frame network's noise (0: a deterministic canonicaliser)",
    "frame_hidden": "hidden width of the frame network",
    "frame_layers": "layers of the frame network",
    "y_rep": "the outputs' representation: 'scalar', 'vector' (dim_y = 2, turns with the scene) "
             "or a list such as ['vector', 'scalar']",
    "vector_covariance": "covariance of each vector output: 'isotropic' (s² I) or 'full' "
                         "(s² I + u uᵀ, predicted equivariantly)",
}


def option_meaning(name: str) -> str:
    """The one-line meaning of a build option (empty when the table does not know it)."""
    return OPTION_MEANINGS.get(name, "")
