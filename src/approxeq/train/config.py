"""The training configuration (:class:`TrainConfig`), checked field by field, and the helpers
that build one from mappings (a YAML's ``train`` section, a size, a model's overrides).

The experiment schema built on it (an experiment's task, models and sizes) is
:mod:`approxeq.experiments.schema`; the YAML readers are :mod:`approxeq.train.config_files`.
Unknown keys and wrong types raise a :class:`ConfigError` naming the key and the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from approxeq.train.config_checks import (
    ConfigError,
    _check_keys,
    _check_mapping,
    _coerce_field,
    closest_key,
    unknown_keys_error,
)

#: the values of ``TrainConfig.precision`` (see :mod:`approxeq.train.speed`)
_PRECISIONS = ("float32", "bf16", "fp16")




@dataclass
class TrainConfig:
    """How one model is trained. Steps (optimiser updates) are the unit; there are no epochs.

    Attributes:
        steps: total optimiser steps.
        batch_size: tasks per step and per process (under DDP the global batch is
            ``batch_size * world_size``).
        lr: AdamW learning rate. weight_decay: AdamW weight decay.
        grad_clip: maximum global gradient norm (``None`` or 0: no clipping).
        val_every: validate every this many steps and at the last step (0: never).
        val_tasks: tasks in the fixed validation set. test_tasks: tasks in the fixed test set.
        eval_batch_size: tasks per batch when evaluating.
        val_seed, test_seed: seeds of the fixed validation and test sets, far from the
            training seeds (the training task stream of rank ``r`` is seeded with
            ``seed + r``).
        seed: seeds the training task stream and the global torch RNG (dropout, fixed-input
            masks).
        checkpoint_every: write ``last.pt`` every this many steps and at the end (``None``:
            as ``val_every``, or only at the end if that is 0).
        log_every: the loss curve in ``history.json`` holds means over windows of this many
            steps.
        num_threads: ``torch.set_num_threads`` for the run (``None``: leave as is).
        device: ``"auto"`` (CUDA if available, the rank's own GPU under DDP), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.
        find_unused_parameters: passed to DDP, for models with parameters unused in a step.
        dist_init_method: how DDP ranks find each other: ``None`` for ``env://`` (what
            ``torchrun`` sets up), or a ``file://`` path on a filesystem every rank sees, which
            needs no free port.
        dist_timeout_s: seconds a rank waits for the others (rendezvous and collectives)
            before it fails.
        prefetch: training batches drawn ahead in a background thread while the step runs
            (0: drawn in the loop; ``"auto"``, the default: 2 where a core is free for the
            thread or the step runs on an accelerator, else 0, see
            :func:`~approxeq.train.speed.prefetch_depth`). The batches, and so the trained
            weights, are the same bit for bit whatever the depth; checkpoints store the task
            stream's state after the last batch used, so resuming is exact too. Validation
            and test sets are not affected. The task generator then runs in that thread: one
            that draws from the global RNG instead of the generator it is given needs 0.
        precision: ``"float32"``, ``"bf16"`` or ``"fp16"``: the training forward pass and
            loss run under ``torch.autocast`` with that dtype; parameters, gradients and the
            optimiser state stay float32, and evaluation (validation, test) always runs in
            float32. ``"fp16"`` scales the loss (``torch.amp.GradScaler``); a device without
            autocast for the dtype is refused with an error naming ``precision``. Needs a
            float32 model.
        compile: train through ``torch.compile(model)`` (needs a C++ compiler on CPU); the
            first steps are slow while it compiles, and each new input shape can recompile.
            Checkpoints hold the plain model's weights. Evaluation runs the plain model.
        fused_optimizer: AdamW's fused implementation (``torch.optim.AdamW(fused=True)``):
            one kernel for every parameter instead of a loop over them, about a tenth of the
            optimiser's time on a CPU; it rounds differently in float32, so a run is not the
            default's bit for bit (off by default: the published tables were made without it).
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.0
    grad_clip: float | None = 0.5
    val_every: int = 200
    val_tasks: int = 256
    test_tasks: int = 1024
    eval_batch_size: int = 64
    val_seed: int = 1_000_003
    test_seed: int = 2_000_003
    seed: int = 0
    checkpoint_every: int | None = None
    log_every: int = 10
    num_threads: int | None = None
    device: str = "auto"
    find_unused_parameters: bool = False
    dist_init_method: str | None = None
    dist_timeout_s: float = 1800.0
    prefetch: int | str = "auto"
    precision: str = "float32"
    compile: bool = False
    fused_optimizer: bool = False

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "eval_batch_size", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: expected a positive int, got {value!r}")
        for name in ("val_every", "val_tasks", "test_tasks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}: expected an int >= 0, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr: expected a positive float, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError(f"grad_clip: expected None or >= 0, got {self.grad_clip!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every: expected None or a positive int, "
                              f"got {self.checkpoint_every!r}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads: expected None or a positive int, "
                              f"got {self.num_threads!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', "
                              f"got {self.device!r}")
        if self.dist_init_method is not None and "://" not in self.dist_init_method:
            raise ConfigError(f"dist_init_method: expected None or a URL such as "
                              f"'file:///shared/rendezvous', got {self.dist_init_method!r}")
        if self.prefetch != "auto" and (not isinstance(self.prefetch, int)
                                        or isinstance(self.prefetch, bool) or self.prefetch < 0):
            raise ConfigError(f"prefetch: expected 'auto' or an int >= 0 (batches drawn "
                              f"ahead), got {self.prefetch!r}")
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"precision: expected one of {', '.join(_PRECISIONS)}, "
                              f"got {self.precision!r}")
        for name in ("compile", "fused_optimizer"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got "
                                  f"{getattr(self, name)!r}")
        if not self.dist_timeout_s > 0:
            raise ConfigError(f"dist_timeout_s: expected a positive number of seconds, "
                              f"got {self.dist_timeout_s!r}")

    @property
    def checkpoint_interval(self) -> int:
        """Steps between ``last.pt`` writes (the last step is always written)."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return self.val_every if self.val_every > 0 else self.steps

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields changed (validated like a fresh one)."""
        return train_config_from_dict({**self.to_dict(), **overrides}, source="<replace>")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any], source: str = "<dict>") -> TrainConfig:
        return train_config_from_dict(data, source=source)


TRAIN_FIELDS = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def train_config_from_dict(data: Mapping[str, Any], source: str = "<dict>",
                           where: str = "train") -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping of field overrides.

    Raises:
        ConfigError: naming ``source`` and the key, for unknown keys and wrong types.
    """
    data = _check_mapping(data, where, source)
    _check_keys(data, set(TRAIN_FIELDS), where, source)
    values = {k: _coerce_field(k, v, TRAIN_FIELDS[k], source, where) for k, v in data.items()}
    try:
        return TrainConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {where}.{err}") from None


def merge_train(base: dict[str, Any], overrides: Mapping[str, Any], where: str,
                source: str) -> dict[str, Any]:
    """``base`` (field values) updated with the checked and coerced ``overrides`` (a mapping
    of :class:`TrainConfig` fields found at ``where`` of ``source``)."""
    overrides = _check_mapping(overrides, where, source)
    _check_keys(overrides, set(TRAIN_FIELDS), where, source)
    coerced = {k: _coerce_field(k, v, TRAIN_FIELDS[k], source, where)
               for k, v in overrides.items()}
    return {**base, **coerced}


__all__ = [
    "TRAIN_FIELDS", "ConfigError", "TrainConfig", "closest_key", "merge_train",
    "train_config_from_dict", "unknown_keys_error",
]
