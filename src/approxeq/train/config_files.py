"""Reading configuration files (YAML, the ``config`` extra): any YAML, and training
configurations; :class:`~approxeq.train.config.TrainConfig` and its validation are in
:mod:`.config`, the experiment files in :mod:`approxeq.experiments.schema`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from approxeq.train.config import TrainConfig, train_config_from_dict
from approxeq.train.config_checks import ConfigError


def require_yaml():
    """The ``yaml`` module (PyYAML), or an ``ImportError`` naming the extra to install."""
    try:
        import yaml
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading YAML configurations needs PyYAML: pip install 'approxeq[config]'") from err
    return yaml


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file (needs the ``config`` extra)."""
    yaml = require_yaml()
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


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Load a YAML file holding only :class:`TrainConfig` fields."""
    return train_config_from_dict(read_yaml(path) or {}, source=str(path), where="the top level")


__all__ = ["load_train_config", "read_yaml", "require_yaml"]
