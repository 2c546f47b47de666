"""The runner shared by every neural-process experiment: per model, build it from its own seed,
train it (resuming), evaluate it once per checkpoint (cached in ``<label>/eval.json``), and
report. Subclasses give the task data (:meth:`~NeuralProcessExperiment.tasks`), the training
and validation tasks of a model, its evaluation, and the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from approxeq.data.base import TaskGenerator
from approxeq.experiments.base import (MODEL_EVAL, Experiment, ExperimentResult, Log,
                                       default_log, model_seed, read_json, select_models)
from approxeq.train.checkpoint import ModelSpec, load_checkpoint, load_model, write_json_atomic
from approxeq.train.config import ConfigError, ExperimentConfig, ModelConfig, save_experiment
from approxeq.train.distributed import is_main_process, resolve_device
from approxeq.train.loop import train

CONFIG = "config.yaml"


def finished_step(run_dir: Path) -> int:
    """The step of ``run_dir/last.pt`` (0 when there is none)."""
    last = run_dir / "last.pt"
    return load_checkpoint(last).step if last.is_file() else 0


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
                    progress: bool, log: Log, device: str | None
                    ) -> tuple[nn.Module, dict, float]:
    """Train one neural process of an experiment into ``run_dir``, or load it when an earlier
    run finished it.

    Args:
        mc: the model's configuration (label, options, resolved ``train``).
        spec: its build spec (stored in the checkpoints).
        generator: makes the training task generator (called only when training).
        val_generator: makes the generator of the fixed validation set (default: the
            training generator).
        device: overrides ``mc.train.device``.

    Returns:
        ``(model at its best checkpoint in eval mode, history, training seconds)``.
    """
    tcfg = mc.train if device is None else mc.train.replace(device=device)
    done = finished_step(run_dir)
    if done >= tcfg.steps and (run_dir / "best.pt").is_file():
        log(f"[{mc.label}] finished earlier ({done} steps): skipping training")
        model = load_model(run_dir / "best.pt", map_location=resolve_device(tcfg.device))
        return model.eval(), read_json(run_dir / "history.json") or {}, 0.0
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
                   progress=progress, log=log, spec=spec)
    return result.load_best().eval(), result.history, result.seconds


class NeuralProcessExperiment(Experiment):
    """The template of the neural-process experiments (see the module docstring). A subclass
    implements :meth:`tasks`, :meth:`train`, :meth:`evaluate`, :meth:`signature` and
    :meth:`report`; ``reserved`` labels cannot name a model."""

    reserved: tuple[str, ...] = ()
    distributed = True

    def summary(self, result: ExperimentResult) -> str:
        from approxeq.experiments.report import format_table, results_table

        return format_table(results_table(result.metrics), markdown=False)

    def signature(self, config: ExperimentConfig, tasks: Any) -> Any:
        """What a cached evaluation must match to be reused (the test protocol)."""
        raise NotImplementedError

    def run(self, config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
            log: Log | None = None, figures: Callable | None = None,
            device: str | None = None, only: Sequence[str] | None = None) -> ExperimentResult:
        """Train, evaluate and report every model of ``config`` in ``out_dir``.

        Args:
            config: a resolved experiment.
            out_dir: the run directory (created). Rerunning resumes: finished models are
                skipped, unfinished ones continue from their ``last.pt``.
            progress: progress bars while training. log: status messages (default stderr).
            figures: the experiment's figure hook (see the subclass); ``None``: no figures.
            device: overrides every model's ``train.device``.
            only: train and evaluate only these labels; the others appear in the results
                only if an earlier run evaluated them with the same protocol.
        """
        start = time.monotonic()
        main = is_main_process()  # under DDP the other ranks only train
        log = (log or default_log) if main else (lambda _message: None)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        chosen = select_models(config, only, reserved=self.reserved)
        if main:
            save_experiment(config, out_dir / CONFIG)
        tasks = self.tasks(config, out_dir, log) if main else self.train_tasks_only(config)
        signature = self.signature(config, tasks)
        result = ExperimentResult(out_dir=out_dir, metrics={})
        entries: dict[str, Any] = {}
        for mc in chosen:
            run_dir = out_dir / mc.label
            model, history = self.train(config, mc, tasks, run_dir, progress=progress, log=log,
                                        device=device)
            result.models[mc.label], result.histories[mc.label] = model, history
            if not main:
                continue
            step = finished_step(run_dir)
            cached = read_json(run_dir / MODEL_EVAL)
            if (isinstance(cached, dict) and cached.get("signature") == signature
                    and cached.get("step") == step):
                entries[mc.label] = cached["entry"]
            else:
                entries[mc.label] = self.evaluate(config, mc, model, tasks, run_dir)
                write_json_atomic(run_dir / MODEL_EVAL, {"signature": signature, "step": step,
                                                         "entry": entries[mc.label]})
            self.log_entry(mc.label, entries[mc.label], log)
        if main:
            self.report(config, out_dir, entries, tasks, result, figures)
        result.seconds = time.monotonic() - start
        return result

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
    seconds = load_checkpoint(run_dir / "last.pt").extra.get("seconds")
    if seconds is not None:
        info["train_seconds"] = seconds
    return info


__all__ = ["NeuralProcessExperiment", "build_seeded", "finished_step", "model_info",
           "train_one_model"]
