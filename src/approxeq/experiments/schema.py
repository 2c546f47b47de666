"""The experiment YAML schema: typed experiment configurations, resolved for one size.

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

Precedence, lowest first: :class:`~approxeq.train.config.TrainConfig` defaults ← top-level
``train`` ← the size ← the model's ``train`` ← the size's ``models[label].train``. Unknown keys
raise a :class:`~approxeq.train.config.ConfigError` naming the key and the file. PyYAML is the
optional extra ``config``. The training configuration itself (:class:`TrainConfig`) belongs to
:mod:`approxeq.train.config`; this module is the experiment layer's.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from approxeq.train.config import (
    TRAIN_FIELDS,
    ConfigError,
    TrainConfig,
    merge_train,
    train_config_from_dict,
)
from approxeq.train.config_checks import _check_keys, _check_mapping, _coerce_field
from approxeq.train.config_files import read_yaml, require_yaml


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


@dataclass
class _Size:
    """One size of an experiment file, split into its parts."""

    where: str
    train: dict[str, Any]
    model_options: dict[str, Any]
    models: dict[str, Any]
    task: dict[str, Any]


def _resolve_size(data: Mapping[str, Any], sizes: Mapping[str, Any], size: str,
                  source: str) -> _Size:
    if sizes and size not in sizes:
        raise ConfigError(f"{source}: unknown size {size!r}; sizes: {', '.join(sizes)}")
    size_data = dict(_check_mapping(sizes.get(size), f"sizes.{size}", source))
    where = f"sizes.{size}"
    model_options = dict(_check_mapping(size_data.pop("model_options", None),
                                        f"{where}.model_options", source))
    models = dict(_check_mapping(size_data.pop("models", None), f"{where}.models", source))
    task = dict(_check_mapping(size_data.pop("task", None), f"{where}.task", source))
    if set(size_data) - set(TRAIN_FIELDS):
        _check_keys(size_data, set(TRAIN_FIELDS) | _SIZE_RESERVED, where, source)
    train_base = merge_train({}, data.get("train") or {}, "train", source)
    return _Size(where, merge_train(train_base, size_data, where, source), model_options,
                 models, task)


def _task_config(data: Any, size: _Size, source: str) -> TaskConfig:
    task_data = _check_mapping(data, "task", source)
    _check_keys(task_data, _TASK_KEYS, "task", source)
    if not isinstance(task_data.get("name"), str):
        raise ConfigError(f"{source}: task.name: expected a string, got {task_data.get('name')!r}")
    task_options = dict(_check_mapping(task_data.get("options"), "task.options", source))
    task_options.update(size.task)
    task = TaskConfig(
        name=task_data["name"],
        dim_x=_coerce_field("dim_x", task_data.get("dim_x", 1), "int", source, "task"),
        dim_y=_coerce_field("dim_y", task_data.get("dim_y", 1), "int", source, "task"),
        options=copy.deepcopy(task_options))
    if task.dim_x < 1 or task.dim_y < 1:
        raise ConfigError(f"{source}: task.dim_x and task.dim_y must be >= 1, "
                          f"got {task.dim_x}, {task.dim_y}")
    return task


def _model_config(entry: Any, i: int, models: list[ModelConfig], size: _Size,
                  source: str) -> ModelConfig:
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
    options.update(size.model_options)
    override = _check_mapping(size.models.get(label), f"{size.where}.models.{label}", source)
    _check_keys(override, _SIZE_MODEL_KEYS, f"{size.where}.models.{label}", source)
    options.update(_check_mapping(override.get("options"),
                                  f"{size.where}.models.{label}.options", source))
    model_train = merge_train(size.train, entry.get("train") or {}, f"{where}.train", source)
    model_train = merge_train(model_train, override.get("train") or {},
                              f"{size.where}.models.{label}.train", source)
    return ModelConfig(label=label, name=entry["name"], options=copy.deepcopy(options),
                       train=train_config_from_dict(model_train, source,
                                                    where=f"{where}.train"))


def _model_configs(data: Any, size: _Size, source: str) -> list[ModelConfig]:
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source}: models: expected a non-empty list of "
                          "{label, name, options}, got " + repr(data))
    models: list[ModelConfig] = []
    for i, entry in enumerate(data):
        models.append(_model_config(entry, i, models, size, source))
    for label in size.models:
        if not any(m.label == label for m in models):
            raise ConfigError(f"{source}: unknown model label {label!r} in {size.where}.models; "
                              f"labels: {[m.label for m in models]}")
    return models


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
    resolved = _resolve_size(data, sizes, size, source)
    train = train_config_from_dict(resolved.train, source, where=resolved.where)
    task = _task_config(data["task"], resolved, source)
    models = _model_configs(data["models"], resolved, source)
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


def load_experiment(path: str | os.PathLike, size: str = "quick") -> ExperimentConfig:
    """Load an experiment YAML and resolve it for ``size``.

    Args:
        path: the YAML file.
        size: one of the file's ``sizes`` (any name is accepted when it defines none).

    Raises:
        ImportError: if PyYAML is missing (``pip install 'approxeq[config]'``).
        ConfigError: naming the key and the file, for unknown or malformed keys.
    """
    return experiment_from_dict(read_yaml(path), size=size, source=str(path))


def save_experiment(config: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write the resolved ``config`` as YAML, atomically; :func:`load_experiment` with
    ``size=config.size`` reads back an equal config (apart from ``source``)."""
    from approxeq.files import write_text_atomic

    yaml = require_yaml()
    return write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


__all__ = ["ExperimentConfig", "ModelConfig", "TaskConfig", "experiment_from_dict",
           "load_experiment", "save_experiment"]
