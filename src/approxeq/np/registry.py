"""The model registry behind :func:`build_model`."""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable:
    """Decorator: register a builder ``f(dim_x, dim_y, **options) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().split("\n")[0]
        return fn

    return deco


def available_models() -> dict[str, str]:
    """Registered model names with a one-line description each."""
    _load_builtin_models()
    return dict(sorted(_DESCRIPTIONS.items()))


def build_model(name: str, dim_x: int, dim_y: int, **options) -> nn.Module:
    """Build a registered neural process.

    Args:
        name: a registered name, e.g. ``"cnp"``, ``"tnp"``, ``"te-tnp"``, ``"convcnp"``
            (see :func:`available_models`).
        dim_x: input dimension. dim_y: output dimension.
        **options: model options; ``approximate=True`` builds the approximately equivariant
            version of an equivariant model.

    Returns:
        An ``nn.Module`` whose ``forward(xc, yc, xt)`` returns a distribution with batch shape
        ``[batch, n_target, dim_y]``, with attributes ``symmetry`` (a :class:`~approxeq.groups.Group`
        or ``None``), ``dim_x`` and ``dim_y``.
    """
    _load_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(f"name: unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if not isinstance(dim_x, int) or dim_x < 1:
        raise ValueError(f"dim_x: expected a positive int, got {dim_x!r}")
    if not isinstance(dim_y, int) or dim_y < 1:
        raise ValueError(f"dim_y: expected a positive int, got {dim_y!r}")
    _check_option_names(name, _REGISTRY[name], options)
    model = _REGISTRY[name](dim_x, dim_y, **options)
    # recorded so that a checkpoint can rebuild the model without its config
    model.model_name = name
    model.build_options = dict(options)
    return model


def _check_option_names(name: str, builder: Callable[..., nn.Module], options: dict) -> None:
    """A ``ValueError`` that lists the accepted options, rather than Python's ``TypeError`` for
    an unexpected keyword (builders taking ``**options`` validate them themselves)."""
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(k for k, p in list(params.items())[2:]
                      if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                    inspect.Parameter.POSITIONAL_OR_KEYWORD))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"accepted options are {', '.join(accepted)}")


def _load_builtin_models() -> None:
    # Importing the model modules runs their @register_model decorators.
    import approxeq.np.models  # noqa: F401
