"""The model registry behind :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from approxeq.groups.representation import OutputRep
from approxeq.np.options import accepted_options, check_options

if TYPE_CHECKING:
    from approxeq.np.base import NeuralProcess

_REGISTRY: dict[str, Callable[..., NeuralProcess]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable:
    """Decorator: register a builder ``f(dim_x, dim_y, *, option=default, ...) ->
    NeuralProcess`` under ``name``.

    Options are explicit, annotated keyword arguments; :func:`build_model` checks names, types
    and ranges (:mod:`approxeq.np.options`) before calling the builder. A builder returning a
    :class:`~approxeq.np.base.NeuralProcess` gets its build spec recorded through
    :meth:`~approxeq.np.base.NeuralProcess.set_build_spec`; any other ``nn.Module`` gets the
    same two attributes (``model_name``, ``build_options``), so that checkpoints rebuild it too.
    """

    def deco(fn: Callable[..., NeuralProcess]) -> Callable[..., NeuralProcess]:
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


def _unknown_model(name: object) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), sorted(_REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"name: unknown model {name!r}{hint}; available: {', '.join(sorted(_REGISTRY))}"


def model_options(name: str) -> list[str]:
    """The option names the builder of ``name`` accepts."""
    _load_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(_unknown_model(name))
    return accepted_options(_REGISTRY[name])


def check_model(name: str, **options) -> None:
    """Refuse, without building anything, what :func:`build_model` would refuse by name: an
    unknown model, unknown options (each named with the closest accepted one) and option
    values of the wrong type or out of range (``ValueError``)."""
    _load_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(_unknown_model(name))
    check_options(name, _REGISTRY[name], options)


def build_model(name: str, dim_x: int, dim_y: int, **options) -> NeuralProcess | nn.Module:
    """Build a registered neural process.

    Args:
        name: a registered name, e.g. ``"cnp"``, ``"tnp"``, ``"te-tnp"``, ``"convcnp"``
            (see :func:`available_models`).
        dim_x: input dimension. dim_y: output dimension.
        **options: model options (see :func:`model_options`), checked for names, types and
            ranges; ``approximate=True`` builds the approximately equivariant version of an
            equivariant model; ``y_rep`` (``"scalar"``, ``"vector"`` or a list such as
            ``["vector", "scalar"]``) the representation of the outputs, for the models that
            take it.

    Returns:
        A :class:`~approxeq.np.base.NeuralProcess` whose ``forward(xc, yc, xt)`` returns a
        distribution with batch shape ``[batch, n_target, dim_y]``, with attributes ``symmetry``
        (a :class:`~approxeq.groups.Group` or ``None``), ``y_rep`` (an
        :class:`~approxeq.groups.OutputRep`: with ``symmetry``, the action ``ρ(g)`` on the
        outputs, ``model.y_rep.action(model.symmetry)``), ``dim_x``, ``dim_y`` and its build
        spec ``model_name``, ``build_options``.
    """
    from approxeq.np.base import NeuralProcess

    _load_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(_unknown_model(name))
    for arg, value in (("dim_x", dim_x), ("dim_y", dim_y)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg}: expected a positive int, got {value!r}")
    check_options(name, _REGISTRY[name], options)
    # the output representation is checked here, once, for every builder that takes it
    rep = OutputRep.parse(options.get("y_rep", "scalar"), dim_x, dim_y)
    if isinstance(options.get("y_rep"), OutputRep):  # recorded as the option a config writes
        options = {**options, "y_rep": list(rep.kinds)}
    model = _REGISTRY[name](dim_x, dim_y, **options)
    if isinstance(model, nn.Module) and not isinstance(getattr(model, "y_rep", None), OutputRep):
        model.y_rep = rep
    # recorded so that a checkpoint can rebuild the model without its config
    if isinstance(model, NeuralProcess):
        model.set_build_spec(name, options)
    elif isinstance(model, nn.Module):
        # a user's model that does not derive from NeuralProcess keeps the same contract
        model.model_name, model.build_options = name, dict(options)
    return model


def _load_builtin_models() -> None:
    # Importing the model modules runs their @register_model decorators.
    import approxeq.np.models  # noqa: F401
