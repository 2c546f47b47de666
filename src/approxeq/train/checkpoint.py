"""Checkpoints that are never left half-written (they are written with
:mod:`approxeq.files`, the library's one atomic writer).

A checkpoint is a plain dict saved with :func:`torch.save`; it holds only tensors, numbers,
strings, lists and dicts, so it loads with ``weights_only=True``. It records the model's *build
spec* (registry name, ``dim_x``, ``dim_y``, options), so :func:`load_model` rebuilds a trained
model from the file alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxeq.files import (  # noqa: F401  (the writers checkpoints use, re-exported)
    atomic_open,
    save_atomic,
    write_json_atomic,
    write_text_atomic,
)

CHECKPOINT_FORMAT = "approxeq-checkpoint"
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Model build specs
# --------------------------------------------------------------------------------------------

@dataclass
class ModelSpec:
    """How to rebuild a model with :func:`approxeq.np.build_model`.

    Attributes:
        name: registry name, e.g. ``"te-tnp"``.
        dim_x, dim_y: input and output dimensions.
        options: keyword options of the builder (plain Python values).
    """

    name: str
    dim_x: int
    dim_y: int
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """Build the model and attach this spec to it as ``model.build_spec``."""
        from approxeq.np import build_model

        model = build_model(self.name, self.dim_x, self.dim_y, **self.options)
        model.build_spec = self
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dim_x": self.dim_x, "dim_y": self.dim_y,
                "options": dict(self.options)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        return ModelSpec(d["name"], int(d["dim_x"]), int(d["dim_y"]), dict(d.get("options") or {}))


def build_model_with_spec(name: str, dim_x: int, dim_y: int, **options) -> nn.Module:
    """:func:`approxeq.np.build_model` that also records its build spec on the model
    (``model.build_spec``), so checkpoints of it can be reloaded with :func:`load_model`."""
    return ModelSpec(name, dim_x, dim_y, options).build()


def model_spec_of(model: nn.Module) -> ModelSpec | None:
    """The build spec of ``model`` if it is known, else ``None``.

    Looks for ``model.build_spec`` (set by :meth:`ModelSpec.build`), then for the attributes
    ``model_name`` (set by :func:`approxeq.np.build_model`), ``dim_x``, ``dim_y`` and an optional
    ``build_options`` dict. DDP wrappers are looked through.
    """
    model = getattr(model, "module", model) if isinstance(
        model, nn.parallel.DistributedDataParallel) else model
    spec = getattr(model, "build_spec", None)
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        return ModelSpec.from_dict(spec)
    name = getattr(model, "model_name", None)
    dim_x, dim_y = getattr(model, "dim_x", None), getattr(model, "dim_y", None)
    if isinstance(name, str) and isinstance(dim_x, int) and isinstance(dim_y, int):
        return ModelSpec(name, dim_x, dim_y, dict(getattr(model, "build_options", None) or {}))
    return None


# --------------------------------------------------------------------------------------------
# Weights saved by earlier module layouts
# --------------------------------------------------------------------------------------------

_TOKEN_LAYOUT = {"token_embedding.": "encoder.token_embedding.",
                 "aux_embedding.": "encoder.aux_embedding.",
                 "fixed_input.": "encoder.fixed_input.",
                 "pseudo_tokens": "encoder.pseudo_tokens",
                 "pseudo_offsets": "encoder.pseudo_offsets"}

#: ``{model class: {old prefix: new prefix}}`` of ``state_dict`` keys: the layouts the models
#: had before their parts moved into a :class:`~approxeq.np.NeuralProcess`'s encoder. A class
#: also covers its subclasses (the E-TNP is a TE-TNP).
LEGACY_LAYOUTS: dict[str, dict[str, str]] = {
    "CNP": {"encoder.": "encoder.mlp."},
    "TNP": _TOKEN_LAYOUT,
    "PTTNP": _TOKEN_LAYOUT,
    "TETNP": _TOKEN_LAYOUT,
    "TEPTTNP": {**_TOKEN_LAYOUT, "fixed_input.": "encoder.pseudo_fixed_input."},
    "LPSTNP": {
        "symmetrized.base.tnp.token_embedding.":
            "encoder.symmetrized.base.tnp.encoder.token_embedding.",
        "symmetrized.base.tnp.aux_embedding.":
            "encoder.symmetrized.base.tnp.encoder.aux_embedding.",
        "symmetrized.": "encoder.symmetrized.",
        "fixed_input.": "encoder.fixed_input.",
    },
}


def _legacy_layout(module: nn.Module) -> dict[str, str]:
    for cls in type(module).__mro__:
        if cls.__module__.startswith("approxeq.") and cls.__name__ in LEGACY_LAYOUTS:
            return LEGACY_LAYOUTS[cls.__name__]
    return {}


def upgrade_state_dict(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the keys of an earlier layout of ``model`` (and of its submodels) renamed
    to the current ones (see :data:`LEGACY_LAYOUTS`); a current state dict comes back as it is.

    Only keys the model does not have are renamed, and only to keys it has that ``state`` lacks,
    so nothing current is ever overwritten. Models are visited outermost first.
    """
    expected = set(model.state_dict(keep_vars=True))
    state = dict(state)
    for prefix, module in model.named_modules(remove_duplicate=False):
        layout = _legacy_layout(module)
        prefix = prefix + "." if prefix else ""
        for key in [k for k in state if layout and k.startswith(prefix) and k not in expected]:
            rest = key[len(prefix):]
            for old, new in layout.items():
                renamed = prefix + new + rest[len(old):]
                if rest.startswith(old) and renamed in expected and renamed not in state:
                    state[renamed] = state.pop(key)
                    break
    return state


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, corrupt, or not an approxeq checkpoint.
    The message names the file and what to do."""


@dataclass
class Checkpoint:
    """The content of a checkpoint file.

    Attributes:
        step: optimisation steps done when it was written.
        model_state: the model's ``state_dict``.
        optimizer_state: the optimiser's ``state_dict`` (``None`` in ``best.pt``).
        rng_states: one dict of random-number-generator states per rank (task generator,
            global torch RNG, CUDA RNG, Python ``random``), empty in ``best.pt``.
        best_val: best validation log-likelihood so far (``None`` before any validation).
        best_step: the step it was reached at.
        spec: the model's build spec, if known.
        config: the training configuration as a dict, if saved.
        history: loss and validation curves up to ``step``.
        extra: free-form additions.
    """

    step: int
    model_state: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    rng_states: list[dict[str, Any]] = field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    spec: ModelSpec | None = None
    config: dict[str, Any] | None = None
    history: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                    rng_states: list[dict[str, Any]] | None = None,
                    best_val: float | None = None, best_step: int | None = None,
                    spec: ModelSpec | None = None, config: dict[str, Any] | None = None,
                    history: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (see the module docstring) and return its path.

    Args:
        path: target file, conventionally ``last.pt`` or ``best.pt`` in a run directory.
        model: the model (a DDP wrapper is unwrapped).
        optimizer: saved when given, for exact resumption.
        step: optimisation steps done.
        rng_states: per-rank RNG states (see :func:`approxeq.train.loop.capture_rng_state`).
        best_val, best_step: best validation score so far and its step.
        spec: build spec; by default :func:`model_spec_of` ``(model)``.
        config: the training configuration as a dict.
        history: loss/validation curves.
        extra: anything else (plain values and tensors only).
    """
    spec = spec if spec is not None else model_spec_of(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": int(step),
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": list(rng_states or []),
        "best_val": None if best_val is None else float(best_val),
        "best_step": None if best_step is None else int(best_step),
        "spec": spec.to_dict() if spec is not None else None,
        "config": config,
        "history": history,
        "extra": dict(extra or {}),
    }
    return save_atomic(payload, path)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, *,
                    optimizer: torch.optim.Optimizer | None = None,
                    map_location: str | torch.device | None = "cpu",
                    strict: bool = True) -> Checkpoint:
    """Read a checkpoint; optionally load its states into ``model`` and ``optimizer``.

    The file is read with ``weights_only=True`` (no arbitrary code runs on load).

    Raises:
        FileNotFoundError: naming ``path`` if it does not exist.
        CheckpointError: naming ``path`` if it is truncated, corrupt or not an approxeq
            checkpoint (a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no checkpoint at {path}")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip or pickle
        raise CheckpointError(
            f"path: {path} is not a readable checkpoint: it is truncated, empty or corrupt "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}). "
            "Delete it to train that model again (or rerun with --restart)") from None
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"path: {path} is not an approxeq checkpoint "
                         f"(expected a dict with format={CHECKPOINT_FORMAT!r})")
    if raw.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"path: {path} has checkpoint version {raw['version']}, newer than "
                         f"this approxeq supports ({CHECKPOINT_VERSION}); upgrade approxeq")
    ckpt = Checkpoint(
        step=int(raw["step"]), model_state=raw["model"], optimizer_state=raw.get("optimizer"),
        rng_states=list(raw.get("rng") or []), best_val=raw.get("best_val"),
        best_step=raw.get("best_step"),
        spec=ModelSpec.from_dict(raw["spec"]) if raw.get("spec") else None,
        config=raw.get("config"), history=raw.get("history"), extra=raw.get("extra") or {})
    if model is not None:
        model = _unwrap(model)
        model.load_state_dict(upgrade_state_dict(model, ckpt.model_state), strict=strict)
    if optimizer is not None:
        if ckpt.optimizer_state is None:
            raise ValueError(f"optimizer: {path} holds no optimiser state (a best.pt?); "
                             "resume from last.pt")
        optimizer.load_state_dict(ckpt.optimizer_state)
    return ckpt


def load_model(path: str | os.PathLike, *, map_location: str | torch.device | None = "cpu",
               eval_mode: bool = True) -> nn.Module:
    """Rebuild the model stored in a checkpoint with :func:`approxeq.np.build_model` and load
    its weights; no configuration file is needed.

    Raises:
        ValueError: if the checkpoint has no build spec (the model was not built through the
            registry); then build the model yourself and use :func:`load_checkpoint`.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    if ckpt.spec is None:
        raise ValueError(f"path: {path} records no model build spec; build the model yourself "
                         "and call load_checkpoint(path, model)")
    model = ckpt.spec.build()
    model.load_state_dict(upgrade_state_dict(model, ckpt.model_state))
    if map_location is not None:
        model.to(map_location)
    return model.eval() if eval_mode else model


__all__ = [
    "Checkpoint", "CheckpointError", "ModelSpec", "atomic_open", "build_model_with_spec",
    "load_checkpoint",
    "load_model", "model_spec_of", "save_atomic", "save_checkpoint", "upgrade_state_dict",
    "write_json_atomic", "write_text_atomic",
]
