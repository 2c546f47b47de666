"""The checks behind :mod:`approxeq.train.config`: the :class:`ConfigError` of a malformed
configuration, unknown keys named with the closest valid key, and the coercion of YAML values
to a field's type. Every experiment's own settings are checked with these too."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration file or dict is malformed; the message names the key and the source."""


def _check_mapping(value: Any, where: str, source: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(value).__name__}")
    return value


def closest_key(key: Any, allowed: Iterable[str]) -> str:
    """`` (did you mean 'KEY'?)`` naming the allowed key closest to a mistyped ``key``
    (:func:`difflib.get_close_matches`), or ``""`` when none is close."""
    import difflib

    close = difflib.get_close_matches(str(key), sorted(map(str, allowed)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_keys_error(keys: Iterable[Any], allowed: Iterable[str], where: str,
                       source: str | None = None) -> ConfigError:
    """The :class:`ConfigError` for keys of ``where`` that are not ``allowed``: each key named
    with the closest allowed one, then the allowed keys."""
    allowed = sorted(map(str, allowed))
    named = ", ".join(f"{k!r}{closest_key(k, allowed)}" for k in keys)
    prefix = f"{source}: " if source else ""
    return ConfigError(f"{prefix}unknown key {named} in {where}; allowed: {', '.join(allowed)}")


def dataclass_from_mapping(cls: type, data: Any, where: str, source: str | None = None,
                           **fixed: Any) -> Any:
    """``cls(**data, **fixed)`` for a dataclass ``cls``: a ``data`` that is not a mapping, keys
    that are not fields of ``cls`` (each named with the closest field) and the constructor's
    own refusals are each a :class:`ConfigError` naming ``where``."""
    import dataclasses

    prefix = f"{source}: " if source else ""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}{where}: expected a mapping of {cls.__name__} settings, "
                          f"got {type(data).__name__} {data!r}")
    fields = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in fixed]
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise unknown_keys_error(unknown, fields, where, source)
    try:
        return cls(**data, **fixed)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix}{where}: {err}") from None


def keyword_hint(err: BaseException, *functions: Any) -> str:
    """For a ``TypeError`` "unexpected keyword argument 'KEY'" raised by one of ``functions``
    (callables or classes, whose constructors' parameters along the MRO count too), the
    closest parameter name as `` (did you mean 'NAME'?)``; else ``""``."""
    import inspect
    import re

    found = re.search(r"unexpected keyword argument '([^']+)'", str(err))
    if not found:
        return ""
    names: set[str] = set()
    for f in functions:
        for target in ([c.__init__ for c in f.__mro__] if isinstance(f, type) else [f]):
            try:
                names |= set(inspect.signature(target).parameters)
            except (TypeError, ValueError):
                continue
    return closest_key(found.group(1), names - {"self", "args", "kwargs"})


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str, source: str) -> None:
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise unknown_keys_error(unknown, allowed, where, source)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _coerce_field(name: str, value: Any, annotation: str, source: str, where: str) -> Any:
    # YAML 1.1 reads "5e-4" (no dot) as a string, so numbers given that way are accepted.
    def fail(expected: str):
        return ConfigError(f"{source}: {where}.{name}: expected {expected}, got {value!r}")

    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise fail(annotation)
    if annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if annotation == "int | str" and isinstance(value, str) and not _is_number(value):
        return value  # a keyword such as prefetch's "auto", checked by the dataclass itself
    if annotation.startswith("int"):
        if isinstance(value, bool):
            raise fail("an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise fail("an int") from None
            if number.is_integer():
                return int(number)
        raise fail("an int")
    if annotation.startswith("float"):
        if isinstance(value, bool):
            raise fail("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise fail("a number") from None
        raise fail("a number")
    if annotation.startswith("str"):
        if isinstance(value, str):
            return value
        raise fail("a string")
    return value


__all__ = ["ConfigError", "closest_key", "dataclass_from_mapping", "keyword_hint",
           "unknown_keys_error"]
