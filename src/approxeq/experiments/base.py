"""One interface for every experiment (:class:`Experiment`, and the template of the
experiments that train by one function of their settings, :class:`SettingsExperiment`) and the
parts every runner shares (model selection, per-model seeding, ``--steps``).

An experiment is a YAML file in one schema (:mod:`approxeq.experiments.schema`): ``name``,
``description``, ``task`` (``name`` picks the runner, ``options`` its settings), ``models``,
``train``, ``sizes`` and ``extra``. :mod:`approxeq.experiments.registry` finds the file of a
name and the :class:`Experiment` of a resolved configuration.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from approxeq.experiments.schema import ExperimentConfig, ModelConfig
from approxeq.train.config import ConfigError, unknown_keys_error
from approxeq.train.rundir import BEST, EXPERIMENT, METRICS, RESULTS

Log = Callable[[str], None]


@dataclass
class ExperimentResult:
    """What an experiment run returns.

    Attributes:
        out_dir: the run directory. metrics: the content of ``metrics.json``.
        models: the trained models (best checkpoints), by label.
        histories: their ``history.json`` contents, by label.
        figures: the figure files written. seconds: wall time of the call.
    """

    out_dir: Path
    metrics: dict[str, Any]
    models: dict[str, nn.Module] = field(default_factory=dict)
    histories: dict[str, dict] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


class UnsupportedStage(ValueError):
    """A stage that an experiment does not implement (e.g. re-evaluating a run that keeps no
    checkpoints); its message is one line naming the experiment and the stage."""


class Experiment(ABC):
    """An experiment runner: ``tasks → train → evaluate → report``.

    :meth:`run` is the whole job: it resolves the task data once (:meth:`tasks`), then trains
    (:meth:`train`) and evaluates (:meth:`evaluate`) each chosen model, and writes the results
    (:meth:`report`). Subclasses implement the four stages, or :meth:`run` itself when their
    stages do not split per model. Around a run: :meth:`summary` and :meth:`results_table`
    show its results, :meth:`figures` names the function that draws its figures, and
    :meth:`reevaluate` scores a finished run again from its checkpoints. A stage a subclass
    does not implement raises :class:`UnsupportedStage` naming the experiment and the stage.
    ``task_names`` are the ``task.name`` values it runs.
    """

    name: ClassVar[str]
    task_names: ClassVar[tuple[str, ...]] = ()
    #: whether the runner trains under ``torchrun`` (one process group for all its models)
    distributed: ClassVar[bool] = False
    #: whether :meth:`reevaluate` scores runs on a gridded data file (``--data FILE --var
    #: NAME``): such an evaluation goes to this runner whatever the run (it refuses others)
    evaluates_fields: ClassVar[bool] = False
    #: what :meth:`reevaluate` re-evaluates, for the message that lists them (``""``: nothing)
    reevaluates: ClassVar[str] = ""

    def unsupported(self, stage: str, why: str = "") -> UnsupportedStage:
        """The error for a ``stage`` this experiment does not implement."""
        return UnsupportedStage(f"experiment {self.name!r} does not implement the stage "
                                f"{stage!r}" + (f": {why}" if why else ""))

    def summary(self, result: ExperimentResult) -> str:
        """A plain-text summary of a finished run for the terminal (default: its
        ``results.md``)."""
        path = result.out_dir / RESULTS
        return path.read_text() if path.is_file() else ""

    def results_table(self, metrics: Mapping[str, Any]) -> list[list[str]]:
        """The rows of the results table of ``metrics`` (a ``metrics.json``, or what
        ``approxeq eval`` wrote), header first, for
        :func:`~approxeq.experiments.report.format_table`."""
        from approxeq.experiments.report import results_table

        return results_table(dict(metrics))

    def figures(self) -> Callable | None:
        """The function that draws this experiment's figures, as :meth:`run` takes it
        (``figures=``), or ``None`` when it draws none. Imports ``approxeq.plot`` (and so
        matplotlib) only when called."""
        return None

    def handles(self, config: ExperimentConfig) -> bool:
        """Whether this runner runs ``config`` (by default: its ``task.name``)."""
        return config.task.name in self.task_names

    def tasks(self, config: ExperimentConfig, out_dir: Path, log: Log) -> Any:
        """The fixed data of the run (test sets, normalisers, loaded graphs ...)."""
        raise self.unsupported("tasks")

    def train(self, config: ExperimentConfig, mc: ModelConfig, tasks: Any, run_dir: Path, *,
              progress: bool, log: Log, device: str | None) -> tuple[nn.Module, dict]:
        """Train one model (resuming from ``run_dir``); return it and its history."""
        raise self.unsupported("train")

    def evaluate(self, config: ExperimentConfig, mc: ModelConfig, model: nn.Module, tasks: Any,
                 run_dir: Path) -> dict[str, Any]:
        """The ``metrics.json`` entry of one trained model."""
        raise self.unsupported("evaluate")

    def report(self, config: ExperimentConfig, out_dir: Path, entries: dict[str, Any],
               tasks: Any, result: ExperimentResult, figures: Callable | None) -> None:
        """Write ``metrics.json``, ``results.md``, ``experiment.json`` and figures; fill
        ``result.metrics`` and ``result.figures``."""
        raise self.unsupported("report")

    def reevaluate(self, run_dir: Path, config: ExperimentConfig | None, *,
                   data: str | Path | None = None, var: str | None = None,
                   aux: str | Path | None = None, out: str | Path | None = None,
                   checkpoint: str = BEST, device: str | None = None,
                   skip_missing: bool = False, log: Log | None = None
                   ) -> tuple[dict[str, Any], Path | None]:
        """Score the finished run ``run_dir`` (trained with ``config``; ``None`` when it holds
        no ``config.yaml``: a model directory, or a run of several seeds) again from its
        checkpoints, without touching its training results (``approxeq eval``): on its own
        test sets, on a saved task file (``data``) or on a gridded field (``data`` and
        ``var``, with auxiliary fields ``aux``). Returns ``(metrics, path written)``."""
        from approxeq.experiments.registry import reevaluable

        kind = config.task.name if config is not None else self.name
        raise self.unsupported("reevaluate", f"this run was trained on task {kind!r}, which "
                               "approxeq eval cannot re-evaluate from its checkpoints; it "
                               f"re-evaluates {reevaluable()}")

    def override_steps(self, config: ExperimentConfig, steps: int | None) -> ExperimentConfig:
        """``config`` with every model trained for ``steps`` steps (``None``: unchanged)."""
        return with_steps(config, steps)

    @abstractmethod
    def run(self, config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
            log: Log | None = None, figures: Callable | None = None,
            device: str | None = None, only: Sequence[str] | None = None,
            restart: bool = False) -> ExperimentResult:
        """Run the experiment into ``out_dir`` (locked for the run); see the subclass."""


class SettingsExperiment(Experiment):
    """An experiment whose models are trained and evaluated by one function of its settings
    (the task options, with ``models`` as ``[label, base, strategy]`` triples; see
    :func:`settings_of`). It runs in a single process."""

    #: files a run writes besides ``metrics.json``, ``results.md`` and ``experiment.json``
    #: that a ``restart`` removes (e.g. pretrained weights)
    outputs: ClassVar[tuple[str, ...]] = ()

    def run_settings(self, config: ExperimentConfig, settings: dict[str, Any], out_dir: Path,
                     log: Log) -> dict[str, Any]:
        """Run with ``settings``; return what ``metrics.json`` holds."""
        raise NotImplementedError

    def run_fingerprint(self, config: ExperimentConfig, settings: dict[str, Any]
                        ) -> dict[str, Any]:
        """What produced a run (``fingerprint.json``; :func:`settings_fingerprint`)."""
        return settings_fingerprint(self.name, config.size, settings)

    def override_steps(self, config: ExperimentConfig, steps: int | None) -> ExperimentConfig:
        """``--steps`` sets the training epochs (experiments without training ignore it)."""
        if steps is None or "epochs" not in config.task.options:
            return config
        from dataclasses import replace

        task = replace(config.task, options={**config.task.options, "epochs": int(steps)})
        return replace(config, task=task)

    def run(self, config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
            log: Log | None = None, figures: Callable | None = None,
            device: str | None = None, only: Sequence[str] | None = None,
            restart: bool = False) -> ExperimentResult:
        """Run every model (or those in ``only``) and write ``metrics.json``, ``results.md``
        and ``experiment.json`` in ``out_dir``, which is locked for the run (a second run into
        it is refused with :class:`~approxeq.train.rundir.RunDirError`).

        ``out_dir/fingerprint.json`` records what produced the run (:meth:`run_fingerprint`:
        the settings, the torch thread count, the library version). A rerun with another
        fingerprint is refused naming each change, unless ``restart``, which removes the
        earlier run's results first; ``figures`` is unused."""
        import os
        import time

        if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            raise ConfigError(f"{config.name} runs in a single process; launch it without "
                              "torchrun")
        start = time.monotonic()
        settings = settings_of(config, only)
        if device is not None:
            settings["device"] = device
        out_dir = Path(out_dir)
        metrics = locked_settings_run(
            out_dir, self.run_fingerprint(config, settings),
            lambda: self.run_settings(config, settings, out_dir, log or default_log),
            label=config.name, restart=restart, outputs=self.outputs)
        return ExperimentResult(out_dir=Path(out_dir), metrics=metrics,
                                seconds=time.monotonic() - start)


def settings_fingerprint(runner: str, size: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint of a run of a :class:`SettingsExperiment`: the runner, the size, every
    setting but the device (a pretrained backbone's settings included; ``models`` by label),
    the torch thread count (sums split over another number of threads round differently) and
    the library version."""
    import torch

    from approxeq.train.rundir import make_fingerprint

    task = {k: v for k, v in settings.items() if k != "device"}
    if isinstance(task.get("models"), list):  # by label, so a change names the model
        task["models"] = {m[0]: "/".join(map(str, m[1:])) for m in task["models"]}
    return make_fingerprint(spec=None, train={"num_threads": torch.get_num_threads()},
                            task=task, extra={"experiment": runner, "size": size})


def locked_settings_run(out_dir: Path, fingerprint: Mapping[str, Any], run: Callable[[], Any],
                        *, label: str, restart: bool = False, outputs: Sequence[str] = ()
                        ) -> Any:
    """``run()`` with ``out_dir`` locked and checked against ``fingerprint`` (recorded in
    ``out_dir/fingerprint.json``; another one is refused naming each change, or with
    ``restart`` the earlier results and ``outputs`` are removed first).

    Raises:
        RunDirError: another run holds ``out_dir``, or it holds a run of other settings.
    """
    from approxeq.train.rundir import RunLock, check_fingerprint

    with RunLock(out_dir):
        done = check_fingerprint(out_dir, fingerprint, restart=restart, label=label)
        if done == "restarted":
            for name in (*outputs, METRICS, RESULTS, EXPERIMENT):
                (out_dir / name).unlink(missing_ok=True)
        return run()


def settings_of(config: ExperimentConfig, only: Sequence[str] | None = None) -> dict[str, Any]:
    """The runner settings of a graph or n-body experiment: its task options, and ``models``
    as ``[label, base, strategy]`` triples from its model list (``only``: these labels; the
    task option ``models``, a list of labels, narrows a size's list)."""
    cfg = copy.deepcopy(config.task.options)
    chosen = select_models(config, only)
    labels = cfg.pop("models", None)
    if labels is not None:
        unknown = [x for x in labels if not any(m.label == x for m in config.models)]
        if unknown:
            raise ConfigError(f"task.options.models: unknown label(s) {unknown}; labels: "
                              f"{[m.label for m in config.models]}")
        chosen = [m for m in chosen if m.label in labels]
    cfg["models"] = [[m.label, m.name, str(m.options.get("strategy", "none"))] for m in chosen]
    return cfg


def task_options_with_defaults(config: ExperimentConfig, task_name: str,
                               defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML's ``task.options`` over ``defaults``, for an experiment of task ``task_name``.

    Raises:
        ConfigError: if the task is another one, or an option is not one of ``defaults``.
    """
    if config.task.name != task_name:
        raise ConfigError(f"task.name: expected {task_name!r} for this experiment, got "
                          f"{config.task.name!r}")
    unknown = [key for key in config.task.options if key not in defaults]
    if unknown:
        raise unknown_keys_error(unknown, defaults, "task.options")
    return {**defaults, **config.task.options}


# --------------------------------------------------------------------------------------------
# Shared parts
# --------------------------------------------------------------------------------------------

def default_log(message: str) -> None:
    """Status messages go to stderr."""
    print(message, file=sys.stderr, flush=True)


def model_seed(seed: int, label: str) -> int:
    """The seed a model is built from: a stable hash (SHA-256, not Python's salted ``hash``)
    of the experiment seed and the model's label, so that a model's initial weights depend on
    nothing else (not on which models ran before it, nor on ``--only``)."""
    digest = hashlib.sha256(f"{int(seed)}/{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def with_steps(config: ExperimentConfig, steps: int | None) -> ExperimentConfig:
    """``config`` with every model trained for ``steps`` steps (``None``: unchanged).

    Validation and checkpoint intervals are clipped to ``steps`` so that a tiny run still
    validates and checkpoints at its end.
    """
    if steps is None:
        return config
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps: expected a positive int, got {steps!r}")
    from dataclasses import replace

    def clip(t):
        changes: dict[str, Any] = {"steps": steps}
        if t.val_every > steps:
            changes["val_every"] = steps
        if t.checkpoint_every is not None and t.checkpoint_every > steps:
            changes["checkpoint_every"] = steps
        return t.replace(**changes)

    models = [replace(m, train=clip(m.train)) for m in config.models]
    return replace(config, models=models, train=clip(config.train))


def select_models(config: ExperimentConfig, only: Sequence[str] | None,
                  reserved: Sequence[str] = ()) -> list[ModelConfig]:
    """The model configs to run (all, or those labelled in ``only``), after checking that every
    label can name a run directory."""
    labels = [m.label for m in config.models]
    if only:
        unknown = [o for o in only if o not in labels]
        if unknown:
            raise ConfigError(f"only: unknown model label(s) {unknown}; labels: {labels}")
    chosen = [m for m in config.models if not only or m.label in only]
    for m in chosen:
        if "/" in m.label or m.label in ("", ".", "..", *reserved):
            raise ConfigError(f"models: label {m.label!r} cannot name a run directory")
    return chosen


__all__ = [
    "Experiment", "ExperimentResult", "Log", "SettingsExperiment", "UnsupportedStage",
    "default_log", "model_seed", "select_models", "settings_of", "with_steps",
]
