"""Typed training and experiment configurations, loaded from YAML.

An experiment file looks like this (every key but ``name``, ``task`` and ``models`` optional)::

    name: translation-1d
    description: TE-TNP vs its approximately equivariant version on a 1-D GP task
    study: mypackage.my_study  # optional: the module that defines and registers its runner
    task:
      name: eq                 # a task-generator name, resolved by the caller
      dim_x: 1
      dim_y: 1
      options: {lengthscale: 0.5}
    models:
      - {label: TNP, name: tnp, options: {}}
      - {label: TE-TNP, name: te-tnp}
      - label: ATE-TNP
        name: te-tnp
        options: {approximate: true}
        train: {lr: 3.0e-4}    # TrainConfig overrides for this model only
    train: {grad_clip: 0.5}    # TrainConfig overrides for every size
    sizes:
      quick:                   # TrainConfig overrides, plus three reserved keys:
        steps: 300
        val_tasks: 64
        model_options: {num_layers: 2}       # merged into every model's options
        models: {ATE-TNP: {options: {width: 32}, train: {steps: 200}}}  # per label
        task: {num_context: 16}              # merged into task.options
      paper:
        steps: 200000
    extra: {}                  # free-form, for the experiment's own use (plots, metrics)

Precedence, lowest first: :class:`TrainConfig` defaults ← top-level ``train`` ← the size ← the
model's ``train`` ← the size's ``models[label].train``. Unknown keys raise a
:class:`ConfigError` naming the key and the file. PyYAML is the optional extra ``config``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass
class TaskConfig:
    """The task distribution: a generator name the caller resolves (e.g. with
    ``approxeq.data.gp.gp_task(name, dim_x, **options)``), its dimensions and options."""

    name: str
    dim_x: int = 1
    dim_y: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dim_x": self.dim_x, "dim_y": self.dim_y,
                "options": copy.deepcopy(self.options)}


@dataclass
class ModelConfig:
    """One model of an experiment: a display ``label``, a registry ``name`` for
    :func:`approxeq.np.build_model`, its ``options``, and its fully resolved ``train`` config."""

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "options": copy.deepcopy(self.options),
                "train": self.train.to_dict()}


@dataclass
class ExperimentConfig:
    """An experiment resolved for one size.

    Attributes:
        name, description: identification.
        task: the task distribution.
        models: the models to train and compare, each with its own resolved ``train``.
        train: the size's training configuration before per-model overrides.
        size: the chosen size (e.g. ``"quick"`` or ``"paper"``).
        sizes: every size the file defines.
        extra: the file's free-form ``extra`` section.
        source: the file it came from (``None`` for a dict).
        study: the module to import for the experiment's runner (a user's own study, which
            registers itself on import); ``None`` for the shipped studies.
    """

    name: str
    task: TaskConfig
    models: list[ModelConfig]
    train: TrainConfig = field(default_factory=TrainConfig)
    size: str = "quick"
    sizes: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    study: str | None = None

    def model(self, label: str) -> ModelConfig:
        """The model with this label."""
        for m in self.models:
            if m.label == label:
                return m
        raise KeyError(f"label: no model {label!r} in experiment {self.name!r}; "
                       f"labels: {[m.label for m in self.models]}")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :func:`experiment_from_dict` (with ``size=self.size``) turns back
        into an equal config: every override is already applied."""
        data = {
            "name": self.name,
            "description": self.description,
            "task": self.task.to_dict(),
            "models": [m.to_dict() for m in self.models],
            "train": self.train.to_dict(),
            "sizes": {self.size: {}},
            "extra": copy.deepcopy(self.extra),
        }
        if self.study is not None:
            data["study"] = self.study
        return data


_TOP_KEYS = {"name", "description", "task", "models", "train", "sizes", "extra", "study"}
_TASK_KEYS = {"name", "dim_x", "dim_y", "options"}
_MODEL_KEYS = {"label", "name", "options", "train"}
_SIZE_RESERVED = {"model_options", "models", "task"}
_SIZE_MODEL_KEYS = {"options", "train"}


_TRAIN_FIELDS = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}


def train_config_from_dict(data: Mapping[str, Any], source: str = "<dict>",
                           where: str = "train") -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping of field overrides.

    Raises:
        ConfigError: naming ``source`` and the key, for unknown keys and wrong types.
    """
    data = _check_mapping(data, where, source)
    _check_keys(data, set(_TRAIN_FIELDS), where, source)
    values = {k: _coerce_field(k, v, _TRAIN_FIELDS[k], source, where) for k, v in data.items()}
    try:
        return TrainConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {where}.{err}") from None


def _merge_train(base: dict[str, Any], overrides: Mapping[str, Any], where: str,
                 source: str) -> dict[str, Any]:
    overrides = _check_mapping(overrides, where, source)
    _check_keys(overrides, set(_TRAIN_FIELDS), where, source)
    coerced = {k: _coerce_field(k, v, _TRAIN_FIELDS[k], source, where)
               for k, v in overrides.items()}
    return {**base, **coerced}


def experiment_from_dict(data: Mapping[str, Any], size: str = "quick",
                         source: str = "<dict>") -> ExperimentConfig:
    """Resolve an experiment mapping (the parsed YAML) for ``size``; see the module docstring.

    Raises:
        ConfigError: for unknown keys, missing required keys, wrong types, duplicate labels or
            an unknown size, naming the key and ``source``.
    """
    data = _check_mapping(data, "the top level", source)
    _check_keys(data, _TOP_KEYS, "the top level", source)
    for key in ("name", "task", "models"):
        if key not in data:
            raise ConfigError(f"{source}: missing required key {key!r} at the top level")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name: expected a non-empty string, got {name!r}")

    sizes = _check_mapping(data.get("sizes"), "sizes", source)
    if sizes and size not in sizes:
        raise ConfigError(f"{source}: unknown size {size!r}; sizes: {', '.join(sizes)}")
    size_data = dict(_check_mapping(sizes.get(size), f"sizes.{size}", source))
    size_where = f"sizes.{size}"
    size_model_options = dict(_check_mapping(size_data.pop("model_options", None),
                                             f"{size_where}.model_options", source))
    size_models = dict(_check_mapping(size_data.pop("models", None), f"{size_where}.models",
                                      source))
    size_task = dict(_check_mapping(size_data.pop("task", None), f"{size_where}.task", source))
    if set(size_data) - set(_TRAIN_FIELDS):
        allowed = set(_TRAIN_FIELDS) | _SIZE_RESERVED
        _check_keys(size_data, allowed, size_where, source)

    train_base = _merge_train({}, data.get("train") or {}, "train", source)
    train_size = _merge_train(train_base, size_data, size_where, source)
    train = train_config_from_dict(train_size, source, where=size_where)

    task_data = _check_mapping(data["task"], "task", source)
    _check_keys(task_data, _TASK_KEYS, "task", source)
    if not isinstance(task_data.get("name"), str):
        raise ConfigError(f"{source}: task.name: expected a string, got {task_data.get('name')!r}")
    task_options = dict(_check_mapping(task_data.get("options"), "task.options", source))
    task_options.update(size_task)
    task = TaskConfig(
        name=task_data["name"],
        dim_x=_coerce_field("dim_x", task_data.get("dim_x", 1), "int", source, "task"),
        dim_y=_coerce_field("dim_y", task_data.get("dim_y", 1), "int", source, "task"),
        options=copy.deepcopy(task_options))
    if task.dim_x < 1 or task.dim_y < 1:
        raise ConfigError(f"{source}: task.dim_x and task.dim_y must be >= 1, "
                          f"got {task.dim_x}, {task.dim_y}")

    models_data = data["models"]
    if not isinstance(models_data, list) or not models_data:
        raise ConfigError(f"{source}: models: expected a non-empty list of "
                          "{label, name, options}, got " + repr(models_data))
    models: list[ModelConfig] = []
    for i, entry in enumerate(models_data):
        where = f"models[{i}]"
        entry = _check_mapping(entry, where, source)
        _check_keys(entry, _MODEL_KEYS, where, source)
        if not isinstance(entry.get("name"), str):
            raise ConfigError(f"{source}: {where}.name: expected a model registry name, "
                              f"got {entry.get('name')!r}")
        label = entry.get("label", entry["name"])
        if not isinstance(label, str):
            raise ConfigError(f"{source}: {where}.label: expected a string, got {label!r}")
        if any(m.label == label for m in models):
            raise ConfigError(f"{source}: {where}.label: duplicate label {label!r}")
        options = dict(_check_mapping(entry.get("options"), f"{where}.options", source))
        options.update(size_model_options)
        override = _check_mapping(size_models.get(label), f"{size_where}.models.{label}", source)
        _check_keys(override, _SIZE_MODEL_KEYS, f"{size_where}.models.{label}", source)
        options.update(_check_mapping(override.get("options"),
                                      f"{size_where}.models.{label}.options", source))
        model_train = _merge_train(train_size, entry.get("train") or {}, f"{where}.train", source)
        model_train = _merge_train(model_train, override.get("train") or {},
                                   f"{size_where}.models.{label}.train", source)
        models.append(ModelConfig(label=label, name=entry["name"], options=copy.deepcopy(options),
                                  train=train_config_from_dict(model_train, source,
                                                               where=f"{where}.train")))
    for label in size_models:
        if not any(m.label == label for m in models):
            raise ConfigError(f"{source}: unknown model label {label!r} in {size_where}.models; "
                              f"labels: {[m.label for m in models]}")

    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{source}: description: expected a string, got {description!r}")
    extra = dict(_check_mapping(data.get("extra"), "extra", source))
    study = data.get("study")
    if study is not None and (not isinstance(study, str) or not study.strip()):
        raise ConfigError(f"{source}: study: expected a module name such as "
                          f"'mypackage.my_study', got {study!r}")
    return ExperimentConfig(name=name, task=task, models=models, train=train, size=size,
                            sizes=tuple(sizes) or (size,), description=description,
                            extra=copy.deepcopy(extra), source=None if source == "<dict>"
                            else source, study=study)


# the file readers and writers live in config_files.py; their names stay importable from here
from approxeq.train.config_files import (  # noqa: E402 -- they use the definitions above
    load_experiment,
    load_train_config,
    read_yaml,
    save_experiment,
)

__all__ = [
    "ConfigError", "ExperimentConfig", "ModelConfig", "TaskConfig", "TrainConfig",
    "closest_key", "experiment_from_dict", "load_experiment", "load_train_config", "read_yaml",
    "save_experiment", "train_config_from_dict", "unknown_keys_error",
]
