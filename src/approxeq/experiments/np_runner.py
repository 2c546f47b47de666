"""The runner shared by every neural-process experiment: per model, build it from its own seed,
train it (resuming), evaluate it once per checkpoint (cached in ``<label>/eval.json``), and
report. Subclasses give the task data (:meth:`~NeuralProcessExperiment.tasks`), the training
and validation tasks of a model, its evaluation, and the report.

A run holds its output directory under a :class:`~approxeq.train.rundir.RunLock` from start to
end, and reuses nothing that another configuration produced: the directory records the
experiment's fingerprint (its task) and each model's directory the model's (build spec, the
training settings that shape its checkpoints, task, library version). They are compared before
any checkpoint is resumed or reused; a mismatch, or an unreadable checkpoint, is refused naming
what is wrong, or with ``restart=True`` that model is trained again from scratch. Under DDP
only rank 0 takes the lock, checks and writes; the other ranks learn its verdict."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from approxeq.data.base import TaskGenerator
from approxeq.experiments.base import (
    Experiment,
    ExperimentResult,
    Log,
    default_log,
    model_seed,
    select_models,
)
from approxeq.experiments.schema import ExperimentConfig, ModelConfig, save_experiment
from approxeq.np.batch import Batch
from approxeq.np.registry import check_model
from approxeq.train.checkpoint import CheckpointError, ModelSpec, load_checkpoint, load_model
from approxeq.train.config import ConfigError, TrainConfig
from approxeq.train.distributed import DistInfo, broadcast_object, init_distributed, resolve_device
from approxeq.train.loop import train
from approxeq.train.rundir import (
    BEST,
    CONFIG,
    HISTORY,
    LAST,
    RunDirError,
    RunLock,
    cache_evaluation,
    cached_evaluation,
    fault_point,
    finished_step,
    layout_problem,
    make_fingerprint,
    prepare_run_dirs,
    read_json,
    with_cached_entries,
)

#: the training settings a model's checkpoints depend on. ``steps`` is not one (a larger count
#: extends a finished run), nor is ``val_every`` (``--steps`` clips it; validation does not
#: change the weights), nor are devices, logging and checkpoint intervals. The torch thread
#: count is part of the fingerprint too (sums split over another number of threads round
#: differently, and training grows the difference), as ``num_threads``: the configured count,
#: or when the YAML leaves it unset the count the run trains on.
TRAIN_FINGERPRINT_FIELDS = ("batch_size", "lr", "weight_decay", "grad_clip", "seed",
                            "val_tasks", "val_seed", "eval_batch_size")


def model_fingerprint(spec: ModelSpec, train_config: TrainConfig,
                      task: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fingerprint of one model's run directory (see :mod:`approxeq.train.rundir`): its
    build spec, the :data:`TRAIN_FINGERPRINT_FIELDS` of its training, its torch thread count
    (and its precision when it is not float32), the task and the library version."""
    t = train_config.to_dict()
    fields = {k: t[k] for k in TRAIN_FINGERPRINT_FIELDS}
    fields["num_threads"] = t.get("num_threads") or torch.get_num_threads()
    if t.get("precision", "float32") != "float32":
        # only when set, so that the fingerprints of float32 runs stay those already on disk
        fields["precision"] = t["precision"]
    return make_fingerprint(spec=spec.to_dict(), train=fields, task=task)


def _group_info(device: str | None) -> DistInfo:
    # The process group of a distributed session if there is one; a single process otherwise.
    if dist.is_available() and dist.is_initialized():
        return init_distributed(device or "auto")
    return DistInfo()


def on_main(fn: Callable[[], Any], info: DistInfo) -> Any:
    """``fn()`` on rank 0 only; a :class:`RunDirError` or :class:`CheckpointError` it raises is
    raised on every rank (so no rank waits at a barrier for a run that was refused)."""
    value, error = None, None
    if info.is_main:
        try:
            value = fn()
        except (RunDirError, CheckpointError) as err:
            error = err
    shared = broadcast_object(None if error is None else (type(error).__name__, str(error)),
                              info)
    if error is not None:
        raise error
    if shared is not None:
        raise (CheckpointError if shared[0] == "CheckpointError" else RunDirError)(shared[1])
    return value


def size_models(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` narrowed to the labels of its task option ``models`` (how a size runs part of
    an experiment's model list, e.g. ``sizes.quick.task.models: [ConvCNP, ConvCNP~]``), with
    that option removed, so that fingerprints and the saved ``config.yaml`` describe the models
    that run; ``config`` itself when it has no such option.

    Raises:
        ConfigError: the option is not a list of labels, or names an unknown label.
    """
    labels = config.task.options.get("models")
    if labels is None:
        return config
    known = [m.label for m in config.models]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"task.options.models: expected a non-empty list of model labels, "
                          f"got {labels!r}")
    unknown = [x for x in labels if x not in known]
    if unknown:
        raise ConfigError(f"task.options.models: unknown label(s) {unknown}; labels: {known}")
    from dataclasses import replace

    options = {k: v for k, v in config.task.options.items() if k != "models"}
    return replace(config, models=[m for m in config.models if m.label in labels],
                   task=replace(config.task, options=options))


def build_seeded(spec: ModelSpec, seed: int, label: str) -> nn.Module:
    """``spec.build()`` with the global RNG seeded from :func:`model_seed` ``(seed, label)``,
    so the initial weights depend only on the spec, the seed and the label. The caller's RNG
    state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(seed, label))
        return spec.build()


def train_one_model(mc: ModelConfig, spec: ModelSpec, run_dir: Path,
                    generator: Callable[[], TaskGenerator],
                    val_generator: Callable[[], TaskGenerator] | None = None, *,
                    progress: bool, log: Log, device: str | None,
                    fingerprint: Mapping[str, Any] | None = None, restart: bool = False,
                    val_extra: Callable[[nn.Module, Sequence[Batch]], Mapping[str, float]]
                    | None = None) -> tuple[nn.Module, dict, float]:
    """Train one neural process of an experiment into ``run_dir``, or load it when an earlier
    run finished it.

    Before anything is reused, ``run_dir`` is checked (by rank 0 under DDP): its checkpoints
    must be readable and, when ``fingerprint`` is given (see :func:`model_fingerprint`),
    produced by the same configuration (:func:`prepare_run_dirs`).

    Args:
        mc: the model's configuration (label, options, resolved ``train``).
        spec: its build spec (stored in the checkpoints).
        generator: makes the training task generator (called only when training).
        val_generator: makes the generator of the fixed validation set (default: the
            training generator).
        device: overrides ``mc.train.device``.
        fingerprint: what ``run_dir`` must have been produced by (``None``: not checked).
        restart: train from scratch when ``run_dir`` cannot be reused, instead of refusing.
        val_extra: extra numbers recorded at each validation check (see
            :func:`~approxeq.train.train`).

    Returns:
        ``(model at its best checkpoint in eval mode, history, training seconds)``.

    Raises:
        RunDirError: ``run_dir`` was produced by another configuration (without ``restart``).
        CheckpointError: one of its checkpoints is unreadable (without ``restart``).
    """
    tcfg = mc.train if device is None else mc.train.replace(device=device)
    on_main(lambda: prepare_run_dirs([(run_dir, fingerprint, mc.label)], restart=restart,
                                     log=log), _group_info(device))
    try:
        done = finished_step(run_dir)
        if done >= tcfg.steps and (run_dir / BEST).is_file():
            log(f"[{mc.label}] finished earlier ({done} steps): skipping training")
            model = load_model(run_dir / BEST, map_location=resolve_device(tcfg.device))
            return model.eval(), read_json(run_dir / HISTORY) or {}, 0.0
    except CheckpointError as err:
        raise CheckpointError(f"model {mc.label!r}: {err}") from None
    try:
        model = build_seeded(spec, tcfg.seed, mc.label)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"models: cannot build {mc.label!r} ({mc.name} with options "
                          f"{mc.options}): {err}") from None
    train_tasks = generator()
    val = None
    if tcfg.val_every > 0 and tcfg.val_tasks > 0:
        source = val_generator() if val_generator is not None else train_tasks
        val = source.fixed_set(tcfg.val_tasks, tcfg.eval_batch_size, tcfg.val_seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[{mc.label}] {mc.name} {mc.options or ''} ({n_params:,} parameters): "
        f"{tcfg.steps} steps" + (f", resuming from step {done}" if done else ""))
    result = train(model, train_tasks, tcfg, run_dir, val_set=val, resume=True,
                   progress=progress, log=log, spec=spec, val_extra=val_extra)
    return result.load_best().eval(), result.history, result.seconds


def model_options(mc: ModelConfig, domain: Sequence[Sequence[float]] | None) -> dict[str, Any]:
    """``mc.options`` with the fixed inputs' domain set to ``domain`` (the training region's
    box in normalised inputs, ``[(lo, hi)] * 2``) unless the YAML sets one, for approximate
    models and RelaxedConvCNP; ``domain=None``: unchanged."""
    options = dict(mc.options)
    if domain is not None and (options.get("approximate") or mc.name == "relaxed-convcnp"):
        options.setdefault("fixed_input_domain", [list(d) for d in domain])
    return options


class NeuralProcessExperiment(Experiment):
    """The template of the neural-process experiments (see the module docstring). A subclass
    implements :meth:`tasks`, :meth:`train`, :meth:`evaluate`, :meth:`signature` and
    :meth:`report`; ``reserved`` labels cannot name a model."""

    reserved: tuple[str, ...] = ()
    distributed = True

    #: whether :meth:`reevaluate` scores a finished run on the experiment's own test sets,
    #: rebuilt from its ``config.yaml`` (see :mod:`approxeq.experiments.run_eval`), and the
    #: keyword arguments :meth:`evaluate` then takes
    reevaluates_own_tests: ClassVar[bool] = False
    reevaluate_options: ClassVar[Mapping[str, Any]] = {}

    def summary(self, result: ExperimentResult) -> str:
        from approxeq.experiments.report import format_table

        return format_table(self.results_table(result.metrics), markdown=False)

    def reevaluate(self, run_dir: Path, config: ExperimentConfig | None, *,
                   data: str | Path | None = None, var: str | None = None,
                   aux: str | Path | None = None, out: str | Path | None = None,
                   checkpoint: str = BEST, device: str | None = None,
                   skip_missing: bool = False, log: Log | None = None
                   ) -> tuple[dict[str, Any], Path | None]:
        """With :attr:`reevaluates_own_tests`: the run (one directory, or ``seed-*``
        directories) scored again on its own test sets
        (:func:`~approxeq.experiments.run_eval.evaluate_experiment_run`); ``data`` is refused.
        Otherwise: not supported."""
        if not self.reevaluates_own_tests:
            return super().reevaluate(run_dir, config, data=data, var=var, aux=aux, out=out,
                                      checkpoint=checkpoint, device=device,
                                      skip_missing=skip_missing, log=log)
        if data is not None:
            kind = config.task.name if config is not None else self.name
            raise ValueError(f"data: a {kind} run is evaluated on its own test sets, rebuilt "
                             f"from its {CONFIG}; drop --data")
        from approxeq.experiments.run_eval import evaluate_experiment_run

        return evaluate_experiment_run(run_dir, out=out, checkpoint=checkpoint, device=device,
                                       skip_missing=skip_missing, log=log)

    def check_models(self, chosen: list[ModelConfig]) -> list[ModelConfig]:
        """``chosen``, once every model's name and options are known to build: a misspelt
        model or option is named before any data are made or any model trains."""
        for mc in chosen:
            try:
                check_model(mc.name, **mc.options)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"models: cannot build {mc.label!r}: {err}") from None
        return chosen

    def signature(self, config: ExperimentConfig, tasks: Any) -> Any:
        """What a cached evaluation must match to be reused (the test protocol)."""
        raise self.unsupported("signature")

    def model_spec(self, config: ExperimentConfig, mc: ModelConfig) -> ModelSpec:
        """The build spec of a model of ``config``."""
        return ModelSpec(mc.name, config.task.dim_x, config.task.dim_y, dict(mc.options))

    def fingerprint(self, config: ExperimentConfig, mc: ModelConfig) -> dict[str, Any]:
        """What produced the checkpoints of ``mc``'s directory (:func:`model_fingerprint`)."""
        return model_fingerprint(self.model_spec(config, mc), mc.train, config.task.to_dict())

    def experiment_fingerprint(self, config: ExperimentConfig) -> dict[str, Any]:
        """What the run directory's shared files (``config.yaml``, the results) describe: the
        experiment's runner and task. A rerun with another task is refused even for models
        that have no directory yet (``only``)."""
        return make_fingerprint(spec=None, train=None, task=config.task.to_dict(),
                                extra={"experiment": self.name})

    def run(self, config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
            log: Log | None = None, figures: Callable | None = None,
            device: str | None = None, only: Sequence[str] | None = None,
            restart: bool = False) -> ExperimentResult:
        """Train, evaluate and report every model of ``config`` in ``out_dir``.

        Args:
            config: a resolved experiment.
            out_dir: the run directory (created). Rerunning resumes: finished models are
                skipped, unfinished ones continue from their ``last.pt``, both only if their
                ``fingerprint.json`` matches ``config``. The directory is locked for the run.
            progress: progress bars while training. log: status messages (default stderr).
            figures: the experiment's figure hook (see the subclass); ``None``: no figures.
            device: overrides every model's ``train.device``.
            only: train and evaluate only these labels; the others appear in the results
                only if an earlier run evaluated them with the same protocol and configuration.
            restart: train again from scratch every chosen model whose directory was produced
                by another configuration or holds an unreadable checkpoint (without it, such a
                run is refused before anything is written).

        Raises:
            RunDirError: another run holds ``out_dir``, or a changed configuration (the
                message names each change).
            CheckpointError: an unreadable checkpoint, naming the model and the file.
        """
        start = time.monotonic()
        config = size_models(config)
        info = _group_info(device)
        main = info.is_main  # under DDP the other ranks only train
        log = (log or default_log) if main else (lambda _message: None)
        out_dir = Path(out_dir)
        chosen = self.check_models(select_models(config, only, reserved=self.reserved))
        fingerprints = {mc.label: self.fingerprint(config, mc) for mc in config.models}
        lock = RunLock(out_dir)

        def prepare() -> None:
            lock.acquire()
            if (problem := layout_problem(out_dir, 1)) is not None:
                raise RunDirError(problem)
            prepare_run_dirs([(out_dir, self.experiment_fingerprint(config), "run")] +
                             [(out_dir / mc.label, fingerprints[mc.label], mc.label)
                              for mc in chosen], restart=restart, log=log)

        try:
            on_main(prepare, info)
            return self._run_locked(config, out_dir, chosen, fingerprints, main=main,
                                    progress=progress, log=log, figures=figures, device=device,
                                    start=start)
        finally:
            lock.release()

    def _run_locked(self, config: ExperimentConfig, out_dir: Path, chosen: list[ModelConfig],
                    fingerprints: dict[str, Any], *, main: bool, progress: bool, log: Log,
                    figures: Callable | None, device: str | None, start: float,
                    tasks: Any = None) -> ExperimentResult:
        if main:
            save_experiment(config, out_dir / CONFIG)
        if tasks is None:
            tasks = self.tasks(config, out_dir, log) if main else self.train_tasks_only(config)
        signature = self.signature(config, tasks)
        result = ExperimentResult(out_dir=out_dir, metrics={})
        entries: dict[str, Any] = {}
        for mc in chosen:
            model, history, entry = self.run_unit(
                config, mc, tasks, out_dir / mc.label, fingerprints[mc.label], signature,
                main=main, progress=progress, log=log, device=device)
            result.models[mc.label], result.histories[mc.label] = model, history
            if entry is not None:
                entries[mc.label] = entry
                self.log_entry(mc.label, entry, log)
        if main:
            fault_point("report")
            # the models left out (``only``) keep their evaluations while still valid
            entries = with_cached_entries([m.label for m in config.models], out_dir, entries,
                                          signature,
                                          fingerprints=fingerprints)
            result.seconds = time.monotonic() - start  # the wall time so far, for report
            self.report(config, out_dir, entries, tasks, result, figures)
        result.seconds = time.monotonic() - start
        return result

    def run_unit(self, config: ExperimentConfig, mc: ModelConfig, tasks: Any, run_dir: Path,
                 fingerprint: Mapping[str, Any], signature: Any, *, main: bool = True,
                 progress: bool, log: Log, device: str | None
                 ) -> tuple[nn.Module, dict, dict[str, Any] | None]:
        """Train one model into ``run_dir`` (or load it, finished) and evaluate it once per
        checkpoint: the evaluation is cached in ``run_dir/eval.json`` with the test protocol
        (``signature``), the step and the model's ``fingerprint``, and reused while all three
        match. This is the unit that ``--jobs N`` runs in a worker process.

        Returns:
            ``(model, history, metrics.json entry)``; the entry is ``None`` off the main rank.
        """
        model, history = self.train(config, mc, tasks, run_dir, progress=progress, log=log,
                                    device=device)
        if not main:
            return model, history, None
        fault_point("trained")
        step = finished_step(run_dir)
        cached = cached_evaluation(run_dir, signature, step, fingerprint)
        if cached is not None:
            return model, history, cached
        # evaluated on the thread count it trained with: sums split over another count can
        # round differently, and a unit must score the same in a worker as here
        before = torch.get_num_threads()
        if mc.train.num_threads is not None:
            torch.set_num_threads(mc.train.num_threads)
        try:
            entry = self.evaluate(config, mc, model, tasks, run_dir)
        finally:
            torch.set_num_threads(before)
        fault_point("evaluated")
        cache_evaluation(run_dir, signature, step, fingerprint, entry)
        fault_point("cached")
        return model, history, entry

    def train_tasks_only(self, config: ExperimentConfig) -> Any:
        """What the non-main DDP ranks need of :meth:`tasks` (they only train)."""
        return None

    def log_entry(self, label: str, entry: dict[str, Any], log: Log) -> None:
        log(f"[{label}] log-lik {entry['loglik']:.3f} ± {entry['loglik_se']:.3f}")


def model_info(mc: ModelConfig, model: nn.Module, step: int, run_dir: Path) -> dict[str, Any]:
    """The description of a trained model in its ``metrics.json`` entry."""
    from approxeq.approximate import is_approximate

    info = {"name": mc.name, "options": mc.options, "steps": step,
            "parameters": sum(p.numel() for p in model.parameters()),
            "symmetry": repr(getattr(model, "symmetry", None)),
            "approximate": is_approximate(model)}
    seconds = load_checkpoint(run_dir / LAST).extra.get("seconds")
    if seconds is not None:
        info["train_seconds"] = seconds
    return info


__all__ = ["NeuralProcessExperiment", "TRAIN_FINGERPRINT_FIELDS", "build_seeded",
           "model_fingerprint", "model_info", "model_options", "on_main", "size_models",
           "train_one_model"]
