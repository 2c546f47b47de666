"""The registry of experiments: which :class:`~approxeq.experiments.base.Experiment` runs a
configuration, and where the shipped configurations are.

A study registers its runner when it is imported (:func:`register_experiment`). The shipped
studies are the subpackages of :mod:`approxeq.experiments.studies`; they are found and imported
on the first lookup (:func:`discover_studies`), never named here. A user's own study is one
module named by the YAML's ``study`` key (``study: my_study``): a module importable from where
the command runs, or a file ``my_study.py`` beside the YAML. See ``docs/extending.md``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from approxeq.experiments.schema import ExperimentConfig
from approxeq.train.config import ConfigError

if TYPE_CHECKING:
    from approxeq.experiments.base import Experiment

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
STUDIES_PACKAGE = "approxeq.experiments.studies"

_REGISTRY: dict[str, Experiment] = {}
_discovered = False


def register_experiment(experiment: Experiment) -> Experiment:
    """Add a runner to the registry (by its ``name``); returns it. A study calls this at import
    time: ``MY_EXPERIMENT = register_experiment(MyExperiment())``."""
    _REGISTRY[experiment.name] = experiment
    return experiment


def discover_studies() -> list[str]:
    """Import every shipped study (each subpackage of :mod:`approxeq.experiments.studies`), so
    that each registers itself; returns their module names. Done once."""
    global _discovered
    package = importlib.import_module(STUDIES_PACKAGE)
    names = [f"{STUDIES_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
             if m.ispkg]
    if not _discovered:
        for name in names:
            importlib.import_module(name)
        _discovered = True
    return names


def import_study(study: str, source: str | None = None) -> None:
    """Import the user's study module ``study`` (the YAML's ``study`` key), which registers its
    runner. A module not importable as it stands is looked for beside the YAML ``source``
    (whose folder then joins ``sys.path``, so worker processes find it too).

    Raises:
        ConfigError: the module cannot be imported, naming it and why.
    """
    if study in sys.modules:
        return
    folder = Path(source).resolve().parent if source else None
    top = study.split(".")[0]
    if folder is not None and str(folder) not in sys.path and (
            (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file()):
        sys.path.insert(0, str(folder))
    try:
        importlib.import_module(study)
    except ImportError as err:
        where = f" (nor a file {top}.py beside {source})" if source else ""
        raise ConfigError(f"study: cannot import the module {study!r}{where}: {err}") from None


def experiment_for(config: ExperimentConfig) -> Experiment:
    """The registered runner of ``config``: the one whose :meth:`~Experiment.handles` accepts it
    (by default its ``task.name``), after importing ``config.study`` if it names one.

    Raises:
        ConfigError: no runner handles the task, naming the known tasks.
    """
    if config.study is not None:
        import_study(config.study, config.source)
    discover_studies()
    for runner in reversed(_REGISTRY.values()):  # a user's study before a shipped one
        if runner.handles(config):
            return runner
    known = sorted(n for r in _REGISTRY.values() for n in r.task_names)
    raise ConfigError(f"task.name: no experiment runs task {config.task.name!r}; known tasks: "
                      f"{', '.join(known)}")


def reevaluable() -> str:
    """What ``approxeq eval`` re-evaluates, in words: the ``reevaluates`` of every registered
    runner that has one (e.g. ``"GP runs, terrain runs and ..."``)."""
    discover_studies()
    runners = sorted((r for r in _REGISTRY.values() if r.reevaluates),
                     key=lambda r: (r.evaluates_fields, r.name))
    kinds = [r.reevaluates for r in runners]
    return ", ".join(kinds[:-1]) + (" and " if len(kinds) > 1 else "") + (kinds[-1] if kinds
                                                                           else "nothing")


def field_evaluator() -> Experiment:
    """The runner that scores runs on a gridded data file (``approxeq eval RUN --data FILE
    --var NAME``).

    Raises:
        ConfigError: none is registered.
    """
    discover_studies()
    for runner in _REGISTRY.values():
        if runner.evaluates_fields:
            return runner
    raise ConfigError("var: no experiment evaluates runs on a gridded data file")


def experiment_names() -> list[str]:
    """The names of the shipped experiments (``approxeq experiment NAME``)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def find_experiment(name: str | Path) -> Path:
    """The YAML file of an experiment: ``name`` itself when it is a file (a user's own
    experiment), else the shipped ``configs/<name>.yaml``.

    Raises:
        FileNotFoundError: naming the argument and the shipped experiments.
    """
    direct = Path(name).expanduser()
    if direct.is_file():
        return direct
    stem = direct.name
    for suffix in (".yaml", ".yml"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    shipped = CONFIGS_DIR / f"{stem}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"experiment {str(name)!r}: not a YAML file and not a shipped "
                            f"experiment; shipped: {', '.join(experiment_names())}")


def load_named_experiment(name: str | Path, size: str = "quick") -> ExperimentConfig:
    """:func:`~approxeq.experiments.schema.load_experiment` of :func:`find_experiment`
    ``(name)``."""
    from approxeq.experiments.schema import load_experiment

    return load_experiment(find_experiment(name), size=size)


__all__ = ["CONFIGS_DIR", "STUDIES_PACKAGE", "discover_studies", "experiment_for",
           "experiment_names", "field_evaluator", "find_experiment", "import_study",
           "load_named_experiment", "reevaluable", "register_experiment"]
