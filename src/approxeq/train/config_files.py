"""Reading and writing configuration files (YAML, the ``config`` extra): experiments and
training configurations; the dataclasses and their validation are in :mod:`.config`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from approxeq.train.config import (
    ExperimentConfig,
    TrainConfig,
    experiment_from_dict,
    train_config_from_dict,
)
from approxeq.train.config_checks import ConfigError


def _require_yaml():
    try:
        import yaml
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading YAML configurations needs PyYAML: pip install 'approxeq[config]'") from err
    return yaml


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file (needs the ``config`` extra)."""
    yaml = _require_yaml()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no configuration file at {path}")
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        except UnicodeDecodeError as err:  # a binary file (a checkpoint, an archive ...)
            raise ConfigError(f"{path}: not a YAML text file: byte {err.start} is not UTF-8 "
                              f"text (is it a binary file?)") from None


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


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Load a YAML file holding only :class:`TrainConfig` fields."""
    return train_config_from_dict(read_yaml(path) or {}, source=str(path), where="the top level")


def save_experiment(config: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write the resolved ``config`` as YAML, atomically; :func:`load_experiment` with
    ``size=config.size`` reads back an equal config (apart from ``source``)."""
    from approxeq.files import write_text_atomic

    yaml = _require_yaml()
    return write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


__all__ = ["load_experiment", "load_train_config", "read_yaml", "save_experiment"]
