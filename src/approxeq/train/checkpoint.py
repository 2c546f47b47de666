"""Checkpoints and result files that are never left half-written.

Every write goes to a temporary file in the target's own directory, is flushed and fsynced, and
only then renamed over the target with :func:`os.replace` (atomic on POSIX and Windows). A crash
or an exception during the write leaves the previous file untouched and no partial file behind.

A checkpoint is a plain dict saved with :func:`torch.save`; it holds only tensors, numbers,
strings, lists and dicts, so it loads with ``weights_only=True``. It records the model's *build
spec* (registry name, ``dim_x``, ``dim_y``, options), so :func:`load_model` rebuilds a trained
model from the file alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

CHECKPOINT_FORMAT = "approxeq-checkpoint"
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------

# Temporary files are named ``.<target>.<host>-<pid>-<random>.tmp``: the host and the process id
# tell an orphan (its writer was killed) from a write that is still in progress elsewhere.
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]+\.tmp$")
# A temporary file written from another machine (a shared file system) is only taken for an
# orphan once it is this old, since whether its writer still runs cannot be checked from here.
_FOREIGN_ORPHAN_AGE_S = 24 * 3600.0
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
# Names (not paths, which may be spelled differently) of this process's writes in progress:
# threads may write into one directory at once.
_active_tmp: set[str] = set()


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on every platform.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask. Reading it with :func:`os.umask` means setting it for a moment, so
    Linux's ``/proc`` is asked first."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap, side-effect-free check: leave it to the age rule
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _remove_orphaned_tmp(directory: Path) -> None:
    """Remove temporary files that interrupted atomic writes (a kill, a power cut) left in
    ``directory``; those of writes still in progress, here or in another process, are kept."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        if match is None or entry.name in _active_tmp:
            continue
        pid = int(match["pid"])
        try:
            if match["host"] == _HOST:
                orphan = pid == os.getpid() or not _pid_alive(pid)
            else:
                orphan = now - entry.stat(follow_symlinks=False).st_mtime > _FOREIGN_ORPHAN_AGE_S
            if orphan and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            pass  # another process removed or replaced it meanwhile


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path`` atomically.

    If the body raises, the temporary file is removed and ``path`` keeps its previous content.
    The file gets the permissions of any newly created file (``0o666`` less the umask, so
    ``0644`` by default), not the private mode of the temporary file. Temporary files that
    earlier, interrupted writes left in the same directory are removed first.

    Args:
        path: the final file; its directory is created if missing.
        mode: ``"wb"`` (binary) or ``"w"`` (text, UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_tmp(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=".tmp",
                                    prefix=f".{path.name}.{_HOST}-{os.getpid()}-")
    tmp = Path(tmp_name)
    _active_tmp.add(tmp.name)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; results are meant to be read like any other file.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        _active_tmp.discard(tmp.name)
    _fsync_directory(path.parent)


def _json_ready(obj: Any) -> Any:
    """Tensors, numpy values and paths to plain JSON values; non-finite floats to ``None``."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_ready(obj.detach().cpu().tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()  # numpy scalar
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return _json_ready(obj.tolist())  # numpy array
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/inf
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically and return the path.

    Tensors, numpy arrays and scalars become lists and numbers; NaN and infinities become
    ``null`` so the file is strict JSON.
    """
    text = json.dumps(_json_ready(obj), indent=indent, allow_nan=False)
    with atomic_open(path, "w") as f:
        f.write(text + "\n")
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


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
        _unwrap(model).load_state_dict(ckpt.model_state, strict=strict)
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
    model.load_state_dict(ckpt.model_state)
    if map_location is not None:
        model.to(map_location)
    return model.eval() if eval_mode else model


__all__ = [
    "Checkpoint", "CheckpointError", "ModelSpec", "atomic_open", "build_model_with_spec",
    "load_checkpoint",
    "load_model", "model_spec_of", "save_atomic", "save_checkpoint", "write_json_atomic",
    "write_text_atomic",
]
