"""Checks of the settings of the experiments that run from one function of their settings
(the graph experiments, n-body, PATTERN: each a
:class:`~approxeq.experiments.base.SettingsExperiment`), before anything is simulated or
trained.

A schema maps each setting to what it must be: ``"int>=1"``, ``"int>=0"``, ``"num>0"``,
``"num>=0"``, ``"str"``, ``"str?"`` (a string or null), ``"bool"``, ``"ints>=1"`` (a list of
ints >= 1), ``"list"``, ``"dtype"``, ``"any"``, or a function ``(value, where) -> value``
(e.g. a dataclass built by :func:`~approxeq.train.config_checks.dataclass_from_mapping`).
A key that is neither in the schema nor in the shipped YAML of the experiment is refused,
named with the closest valid key; a value of the wrong kind is refused naming the key, what
was expected and what was given (:class:`~approxeq.train.config.ConfigError`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from approxeq.train.config_checks import ConfigError, unknown_keys_error

Spec = str | Callable[[Any, str], Any]

_DTYPES = ("float32", "float64")


def _device(value: Any, where: str) -> Any:
    text = value if isinstance(value, str) else ""
    if value is None or text in ("auto", "cpu", "cuda", "mps") or (
            text.startswith("cuda:") and text[5:].isdigit()):
        return value
    raise ConfigError(f"{where}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got "
                      f"{value!r}")


#: settings every settings experiment takes (``models`` is filled in from the model list)
COMMON: dict[str, Spec] = {"device": _device, "dtype": "dtype", "models": "any"}


@functools.cache
def shipped_keys(experiment: str) -> frozenset[str]:
    """Every task option that any size of the shipped YAML of ``experiment`` sets."""
    from approxeq.experiments.registry import CONFIGS_DIR
    from approxeq.train.config_files import read_yaml

    path = CONFIGS_DIR / f"{experiment}.yaml"
    raw = read_yaml(path) if path.is_file() else {}
    keys = set((raw.get("task") or {}).get("options") or {})
    for size in (raw.get("sizes") or {}).values():
        keys |= set((size or {}).get("task") or {})
    return frozenset(keys)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_value(value: Any, spec: Spec, where: str) -> Any:
    """``value`` checked against ``spec`` (see the module docstring), as the runner uses it
    (numbers given as strings become floats)."""
    if callable(spec):
        return spec(value, where)
    if spec == "any":
        return value
    if spec.startswith("ints"):
        low = int(spec[6:])
        if not isinstance(value, (list, tuple)) or not value or not all(
                _is_int(v) and v >= low for v in value):
            raise ConfigError(f"{where}: expected a non-empty list of ints >= {low}, got "
                              f"{value!r}")
        return value
    if spec.startswith("int"):
        low = int(spec[5:])
        if not _is_int(value) or value < low:
            raise ConfigError(f"{where}: expected an int >= {low}, got {value!r}")
        return value
    if spec.startswith("num"):
        number, strict = _number(value), spec[3:] == ">0"
        if number is None or not number == number or (number <= 0 if strict else number < 0):
            raise ConfigError(f"{where}: expected a number {'>' if strict else '>='} 0, got "
                              f"{value!r}")
        return number
    if spec in ("str", "str?"):
        if isinstance(value, str) or (value is None and spec == "str?"):
            return value
        raise ConfigError(f"{where}: expected a string{' or null' if spec == 'str?' else ''}, "
                          f"got {value!r}")
    if spec == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if spec == "list":
        if isinstance(value, (list, tuple)):
            return value
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if spec == "dtype":
        if value in _DTYPES:
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(_DTYPES)}, got {value!r}")
    raise ValueError(f"spec: unknown kind {spec!r}")  # a mistake in a schema, not the user's


def check_settings(settings: dict[str, Any], schema: Mapping[str, Spec], experiment: str,
                   where: str = "task.options", required: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """Check ``settings`` (in place: numbers given as strings become floats) against
    ``schema`` and :data:`COMMON`; keys in neither but in the shipped YAML of ``experiment``
    pass unchecked; every key of ``required`` must be there. Returns ``settings``.

    Raises:
        ConfigError: naming the key, with the closest valid key for an unknown one.
    """
    full = {**COMMON, **schema}
    allowed = set(full) | shipped_keys(experiment)
    unknown = [key for key in settings if key not in allowed]
    if unknown:
        raise unknown_keys_error(unknown, allowed, where)
    missing = [key for key in required if key not in settings]
    if missing:
        raise ConfigError(f"{where}: missing setting(s) {', '.join(map(repr, missing))} of "
                          f"the {experiment} experiment (see its shipped YAML: approxeq/"
                          f"experiments/configs/{experiment}.yaml)")
    for key, spec in full.items():
        if key in settings:
            checked = check_value(settings[key], spec, f"{where}.{key}")
            if not callable(spec):  # a built object stays the runner's business
                settings[key] = checked
    return settings


#: the settings of the graph experiments (:mod:`approxeq.experiments.studies.graphs.study`)
GRAPH_SETTINGS: dict[str, Spec] = {
    "n_inits": "int>=1", "k_eval": "int>=1", "mlp_hidden": "ints>=1", "batch_size": "int>=1",
    "epochs": "int>=1", "warmup_epochs": "int>=0", "k_train": "int>=1", "lr": "num>0",
    "clip": "num>0", "entropy_weight": "num>=0", "tau": "num>0", "sinkhorn_iters": "int>=1",
    "eval_every": "int>=1", "folds": "int>=1", "n_controls": "int>=1"}
_GRAPH_REQUIRED = {
    "separation": ("n_inits", "k_eval", "mlp_hidden", "batch_size"),
    "classify": ("epochs", "warmup_epochs", "k_train", "k_eval", "mlp_hidden", "lr",
                 "batch_size", "clip", "entropy_weight", "tau", "sinkhorn_iters")}


def check_graph_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """:func:`check_settings` for graph experiment ``name`` (``graph8c``, ``exp-iso``,
    ``sr25``: separation; ``exp-classify``, ``csl``: classification)."""
    kind = "separation" if name in ("graph8c", "exp-iso", "sr25") else "classify"
    required = _GRAPH_REQUIRED[kind] + (("folds",) if name == "csl" else ())
    return check_settings(settings, GRAPH_SETTINGS, name, required=required)


def require_extra(module: str, extra: str, what: str) -> None:
    """Refuse, before anything trains, a run that needs an optional extra that is missing."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as err:  # timm raises RuntimeError for a mismatched torchvision
        raise ConfigError(f"{what} needs {module}, which cannot be imported ({err}); install "
                          f"it with pip install 'approxeq[{extra}]'") from None


__all__ = ["COMMON", "GRAPH_SETTINGS", "check_graph_settings", "check_settings", "check_value",
           "require_extra", "shipped_keys"]
