"""The training loop: AdamW on the neural-process loss, periodic validation, checkpoints and
exact resumption, in one process or under ``torchrun`` (DDP).

A run directory holds

* ``last.pt``: everything needed to continue (model, optimiser, step, the RNG states of every
  rank, best score, curves), written every ``checkpoint_every`` steps and at the end;
* ``best.pt``: the model at the best validation log-likelihood so far (the final model when
  there is no validation);
* ``history.json``: the training-loss curve (means over ``log_every`` steps), the validation
  curve, the configuration and the model's build spec.

Runs are repeatable: rank ``r`` draws its tasks from a ``torch.Generator`` seeded with
``seed + r`` and seeds the global torch RNG (dropout, fixed-input masks) the same way. Both
states are stored in ``last.pt``, so a run resumed after a crash ends with bit-identical
parameters to an uninterrupted one. Validation runs under a forked RNG, so how often it runs
does not change the training trajectory. Where a core is free (or on an accelerator) training
batches are drawn ahead in a background thread (``TrainConfig.prefetch``) without changing them;
the precision and compile options are in :mod:`approxeq.train.speed`.
"""

from __future__ import annotations

import gc
import math
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxeq.approximate.component import parameter_groups
from approxeq.data.base import TaskGenerator
from approxeq.files import write_json_atomic
from approxeq.nn.placement import model_dtype_device
from approxeq.np.batch import Batch
from approxeq.train.checkpoint import (
    Checkpoint,
    ModelSpec,
    load_checkpoint,
    model_spec_of,
    save_checkpoint,
)
from approxeq.train.config import TrainConfig
from approxeq.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    init_distributed,
    unwrap_model,
    wrap_model,
)
from approxeq.train.evaluation import (  # noqa: F401  (evaluate, make_*_set: public here)
    batch_to,
    evaluate,
    evaluate_sharded,
    make_test_set,
    make_val_set,
)
from approxeq.train.progress import Progress
from approxeq.train.rng import capture_rng_state, restore_rng_state, seed_everything
from approxeq.train.rundir import BEST, HISTORY, LAST, fault_point
from approxeq.train.speed import BatchStream, StepRunner, prefetch_depth

# Fields whose change between a checkpoint and a resumed run alters the result.
_TRAJECTORY_FIELDS = ("batch_size", "lr", "weight_decay", "grad_clip", "seed", "precision")


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank).

    Attributes:
        model: the trained model (not DDP-wrapped), in its final state.
        out_dir: the run directory.
        step: steps done.
        best_val: best validation log-likelihood per target (``None`` without validation).
        best_step: the step of ``best_val`` (the last step without validation).
        history: the content of ``history.json``.
        resumed_from: the step of the checkpoint the run resumed from, or ``None``.
        seconds: wall-clock seconds of this call.
    """

    model: nn.Module
    out_dir: Path
    step: int
    best_val: float | None
    best_step: int | None
    history: dict[str, Any]
    resumed_from: int | None = None
    seconds: float = 0.0

    @property
    def last_path(self) -> Path:
        return self.out_dir / LAST

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST

    @property
    def history_path(self) -> Path:
        return self.out_dir / HISTORY

    def load_best(self) -> nn.Module:
        """Load ``best.pt``'s weights into :attr:`model` and return it."""
        load_checkpoint(self.best_path, self.model,
                        map_location=model_dtype_device(self.model)[1])
        return self.model


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def _new_history() -> dict[str, Any]:
    return {"train": {"step": [], "loss": []}, "val": {"step": [], "seconds": []}}


def _make_logger(log: bool | Callable[[str], None], info: DistInfo, progress: Progress
                 ) -> Callable[[str], None]:
    if not info.is_main or log is False:
        return lambda message: None
    if callable(log):
        return log
    if progress.enabled:
        return progress.write
    return lambda message: print(message, file=sys.stderr, flush=True)


def train(model: nn.Module, generator: TaskGenerator, config: TrainConfig,
          out_dir: str | Path, *, val_set: Sequence[Batch] | None = None, resume: bool = True,
          progress: bool = True, log: bool | Callable[[str], None] = True,
          spec: ModelSpec | None = None,
          callback: Callable[[int, float], None] | None = None,
          val_extra: Callable[[nn.Module, Sequence[Batch]], Mapping[str, float]] | None = None
          ) -> TrainResult:
    """Train a neural process by minimising :func:`approxeq.np.np_loss` with AdamW.

    Works unchanged in one process and under ``torchrun`` (see
    :mod:`approxeq.train.distributed`): each rank draws its own tasks, gradients are averaged,
    and only rank 0 writes files, logs and shows progress.

    Args:
        model: a neural process ``forward(xc, yc, xt) -> Distribution``; moved to
            ``config.device`` and trained in place.
        generator: the training task distribution; ``sample(batch_size, torch.Generator)``.
            When batches are drawn ahead (``config.prefetch`` > 0, or ``"auto"`` where a core
            is free) it is called from a background thread, so it must draw its randomness
            from the generator it is given only (as every task generator of approxeq does):
            one that uses the global RNG needs ``prefetch=0``.
        config: steps, batch size, optimiser, validation and checkpoint schedule, seed.
        out_dir: run directory for ``last.pt``, ``best.pt`` and ``history.json`` (created).
        val_set: fixed validation batches (the same on every rank); default
            :func:`make_val_set` of ``generator`` (none if ``config.val_tasks`` or
            ``config.val_every`` is 0).
        resume: continue from ``out_dir/last.pt`` if it exists (a finished run returns at
            once; a larger ``config.steps`` extends it). ``False`` starts afresh.
        progress: show a progress bar (rank 0).
        log: ``True`` prints messages to stderr (rank 0), ``False`` is silent, a callable
            receives each message.
        spec: the model's build spec, stored in checkpoints so :func:`load_model` can rebuild
            it; default :func:`~approxeq.train.checkpoint.model_spec_of` ``(model)``.
        callback: called on every rank after each step with ``(step, loss)``; an exception
            it raises stops training (``last.pt`` keeps the last checkpoint).
        val_extra: called on every rank at each validation check with ``(model, val_set)``;
            the numbers it returns join the check's entries in ``history.json``
            (``history["val"][name]``), e.g. an approximate model's component score or what
            its fixed inputs learned. It must leave the model's mode and the RNG as it found
            them.

    Returns:
        :class:`TrainResult`, with the model in its final state (see
        :meth:`TrainResult.load_best`).

    Raises:
        FloatingPointError: if the training loss becomes NaN or infinite (the previous
            ``last.pt`` is kept).
    """
    start_time = time.monotonic()
    out_dir = Path(out_dir)
    info = init_distributed(config.device, timeout_s=config.dist_timeout_s,
                            init_method=config.dist_init_method)
    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(model, generator, config, out_dir, info, val_set=val_set, resume=resume,
                      show_progress=progress, log=log, spec=spec, callback=callback,
                      val_extra=val_extra, start_time=start_time)
    except BaseException as err:
        if info.is_distributed:
            # The failed run's frames hold the DDP wrapper. Freed later, after the group is
            # destroyed (say when the caller drops the exception), it can block in gloo's
            # teardown while the other ranks are already at their next rendezvous.
            traceback.clear_frames(err.__traceback__)
            gc.collect()
        raise
    finally:
        if config.num_threads is not None:
            torch.set_num_threads(previous_threads)
        cleanup_distributed(info)


class _Run:
    """One training run (see :func:`train`) as its steps: set-up (:meth:`__init__`),
    :meth:`resume`, :meth:`start`, :meth:`one_step`, :meth:`log_loss`, :meth:`validate`,
    :meth:`checkpoint`, :meth:`finish`. It holds what a step changes and ``last.pt`` restores:
    the step, the best score, the curves and the running loss window."""

    def __init__(self, model: nn.Module, generator: TaskGenerator, config: TrainConfig,
                 out_dir: Path, info: DistInfo, *, val_set: Sequence[Batch] | None,
                 spec: ModelSpec | None, callback: Callable[[int, float], None] | None,
                 val_extra: Callable[[nn.Module, Sequence[Batch]], Mapping[str, float]] | None,
                 start_time: float) -> None:
        self.model = unwrap_model(model)
        self.spec = spec if spec is not None else model_spec_of(self.model)
        self.model.to(info.device)
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.generator, self.config, self.out_dir, self.info = generator, config, out_dir, info
        self.config_dict = config.to_dict()
        self.callback, self.val_extra, self.start_time = callback, val_extra, start_time

        self.validating = config.val_every > 0 and (val_set is not None or config.val_tasks > 0)
        if self.validating and val_set is None:
            val_set = make_val_set(generator, config)
        if self.validating and len(val_set) == 0:
            raise ValueError("val_set: expected at least one batch, got an empty sequence")
        self.val_set = val_set

        self.task_rng = seed_everything(config.seed + info.rank)
        # one group unless a fixed input asks for its own lr multiplier or no decay on its grid
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, config.lr, config.weight_decay), lr=config.lr,
            weight_decay=config.weight_decay,
            **({"fused": True} if config.fused_optimizer else {}))
        self.history = _new_history()
        self.step, self.best_val, self.best_step, self.resumed_from = 0, None, None, None
        self.window_sum, self.window_count = 0.0, 0
        self.seconds_before = 0.0
        self.last_path = out_dir / LAST

    def resume(self) -> tuple[Checkpoint | None, list[str]]:
        """Continue from ``last.pt`` if there is one: weights, optimiser, step, scores, curves
        and every rank's random streams. Returns the checkpoint and the messages to log."""
        config, info = self.config, self.info
        if not self.last_path.is_file():
            return None, []
        try:
            ckpt = load_checkpoint(self.last_path, self.model, optimizer=self.optimizer,
                                   map_location=info.device)
        except RuntimeError as err:
            raise RuntimeError(f"out_dir: {self.last_path} holds a different model than the one "
                               "given; use another out_dir or resume=False") from err
        self.step, self.best_val, self.best_step = ckpt.step, ckpt.best_val, ckpt.best_step
        self.resumed_from = ckpt.step
        self.history = ckpt.history or _new_history()
        self.seconds_before = float(ckpt.extra.get("seconds", 0.0))
        messages = []
        if len(ckpt.rng_states) == info.world_size:
            state = ckpt.rng_states[info.rank]
            restore_rng_state(state, self.task_rng, info.device)
            self.window_sum, self.window_count = state.get("loss_window", (0.0, 0))
        else:
            # A different number of processes cannot replay the same task streams.
            self.task_rng = seed_everything(config.seed + info.rank + 7919 * self.step)
            messages.append(f"resuming with {info.world_size} process(es) from a checkpoint "
                            f"written by {len(ckpt.rng_states)}: training continues, but not "
                            "bit-identically")
        defaults = TrainConfig().to_dict()  # for fields older checkpoints do not hold
        changed = [k for k in _TRAJECTORY_FIELDS
                   if ckpt.config is not None and ckpt.config.get(k, defaults[k])
                   != self.config_dict[k]]
        if changed:
            messages.append(f"resuming with changed {', '.join(changed)}: the run is no longer "
                            "equivalent to an uninterrupted one")
        return ckpt, messages

    def start(self, ckpt: Checkpoint | None, messages: Sequence[str], *, show_progress: bool,
              log: bool | Callable[[str], None]) -> None:
        """Wrap the model for DDP, set up the step runner, the progress bar, the log and the
        stream of training batches."""
        config, info = self.config, self.info
        ddp_model = wrap_model(self.model, info,
                               find_unused_parameters=config.find_unused_parameters)
        self.runner = StepRunner(ddp_model, info.device, precision=config.precision,
                                 compile=config.compile)
        if ckpt is not None:
            self.runner.load_state_dict(ckpt.extra)
        self.model.train()
        self.bar = Progress(config.steps, min(self.step, config.steps),
                            enabled=show_progress and info.is_main,
                            desc=self.out_dir.name or "train")
        self.say = _make_logger(log, info, self.bar)
        for message in messages:
            self.say(message)
        if self.resumed_from is not None:
            self.say(f"resumed from {self.last_path} at step {self.resumed_from}")
        self.dtype, _ = model_dtype_device(self.model)
        self.stream = BatchStream(self.generator, config.batch_size, self.task_rng,
                                  prefetch=prefetch_depth(config.prefetch, info.device),
                                  num_batches=max(config.steps - self.step, 0))

    def elapsed(self) -> float:
        """Seconds of training, the interrupted runs before this one included."""
        return self.seconds_before + time.monotonic() - self.start_time

    def due(self, every: int) -> bool:
        """Whether the current step is one of every ``every`` steps, or the last."""
        return self.step % every == 0 or self.step == self.config.steps

    def one_step(self) -> None:
        """Draw a batch, take one optimiser step, and add its loss to the running window."""
        self.step += 1
        batch = batch_to(self.stream.next(), self.dtype, self.info.device)
        try:
            loss = self.runner.loss(batch)
        except ValueError as err:
            # torch.distributions rejects NaN parameters with an obscure message.
            if all(torch.isfinite(p).all() for p in self.model.parameters()):
                raise
            raise FloatingPointError(
                f"model parameters are NaN or infinite at step {self.step}; the last checkpoint "
                "is kept (try a lower lr or grad_clip)") from err
        self.optimizer.zero_grad(set_to_none=True)
        self.runner.update(loss, self.optimizer, self.model.parameters(), self.config.grad_clip)
        loss_value = float(loss.detach())
        self.window_sum += loss_value
        self.window_count += 1
        if self.callback is not None:
            self.callback(self.step, loss_value)

    def window_mean(self) -> float:
        """The mean loss of the running window over every rank (an error if not finite)."""
        mean = all_reduce_mean(torch.tensor([self.window_sum / self.window_count],
                                            dtype=torch.float64), self.info).item()
        _check_finite(mean, self.step, self.window_count)
        return mean

    def log_loss(self) -> None:
        """Every ``log_every`` steps, record the window's mean loss; move the progress bar."""
        if not self.due(self.config.log_every):
            self.bar.update(self.step)
            return
        mean = self.window_mean()
        self.history["train"]["step"].append(self.step)
        self.history["train"]["loss"].append(mean)
        self.window_sum, self.window_count = 0.0, 0
        self.bar.update(self.step, loss=mean)

    def validate(self) -> None:
        """Score the validation set, record the scores, and write ``best.pt`` on a new best."""
        summary = evaluate_sharded(self.model, self.val_set, self.info,
                                    self.config.val_seed).summary()
        val = self.history["val"]
        val["step"].append(self.step)
        val["seconds"].append(self.elapsed())
        if self.val_extra is not None:
            summary.update(self.val_extra(self.model, self.val_set))
        for key, value in summary.items():
            if key != "n_tasks":
                val.setdefault(key, []).append(value)
        improved = math.isfinite(summary["loglik"]) and (
            self.best_val is None or summary["loglik"] > self.best_val)
        if improved:
            self.best_val, self.best_step = summary["loglik"], self.step
            if self.info.is_main:
                save_checkpoint(self.out_dir / BEST, self.model, step=self.step,
                                best_val=self.best_val, best_step=self.best_step,
                                spec=self.spec, config=self.config_dict)
                fault_point("best")
        self.bar.update(self.step, val=summary["loglik"])

    def checkpoint(self) -> None:
        """Write ``last.pt`` (and, at the end of a run without scores, ``best.pt``)."""
        if self.window_count:  # never checkpoint a diverged model
            self.window_mean()
        if self.step == self.config.steps and self.best_val is None:
            # Without (finite) validation scores the final model is the best we know.
            self.best_step = self.step
            if self.info.is_main:
                save_checkpoint(self.out_dir / BEST, self.model, step=self.step, spec=self.spec,
                                config=self.config_dict)
        self.write_last()

    def write_last(self) -> None:
        info = self.info
        states = all_gather_objects(
            {**capture_rng_state(self.task_rng, info.device, task_state=self.stream.rng_state()),
             "loss_window": (self.window_sum, self.window_count)}, info)
        if info.is_main:
            # history.json first: a kill between the two leaves it ahead of last.pt, and the
            # resumed run, replaying from last.pt, rewrites it; the other order could leave a
            # finished run with a stale history.json that nothing rewrites
            write_json_atomic(self.out_dir / HISTORY, self.history_file())
            fault_point("history")
            save_checkpoint(self.last_path, self.model, optimizer=self.optimizer, step=self.step,
                            rng_states=states, best_val=self.best_val, best_step=self.best_step,
                            spec=self.spec, config=self.config_dict, history=self.history,
                            extra={"seconds": self.elapsed(), "world_size": info.world_size,
                                   **self.runner.state_dict()})
            fault_point("checkpoint")

    def history_file(self) -> dict[str, Any]:
        """The content of ``history.json``."""
        return _history_file(self.history, self.config_dict, self.spec, self.best_val,
                             self.best_step, self.step, self.info)

    def close(self) -> None:
        self.stream.close()
        self.bar.close()

    def finish(self) -> TrainResult:
        """Say how the run ended, wait for every rank, and return the result."""
        history_out = self.history_file()
        if self.resumed_from is not None and self.resumed_from >= self.config.steps:
            self.say(f"{self.last_path} already holds {self.resumed_from} >= "
                     f"{self.config.steps} steps; nothing to do")
        elif self.best_val is not None:
            self.say(f"done: {self.step} steps, best validation log-likelihood "
                     f"{self.best_val:.4f} at step {self.best_step}")
        barrier(self.info)
        return TrainResult(model=self.model, out_dir=self.out_dir, step=self.step,
                           best_val=self.best_val, best_step=self.best_step,
                           history=history_out, resumed_from=self.resumed_from,
                           seconds=time.monotonic() - self.start_time)


def _train(model: nn.Module, generator: TaskGenerator, config: TrainConfig, out_dir: Path,
           info: DistInfo, *, val_set, resume, show_progress, log, spec, callback,
           val_extra, start_time) -> TrainResult:
    run = _Run(model, generator, config, out_dir, info, val_set=val_set, spec=spec,
               callback=callback, val_extra=val_extra, start_time=start_time)
    ckpt, messages = run.resume() if resume else (None, [])
    run.start(ckpt, messages, show_progress=show_progress, log=log)
    try:
        while run.step < config.steps:
            run.one_step()
            run.log_loss()
            if run.validating and run.due(config.val_every):
                run.validate()
            if run.due(config.checkpoint_interval):
                run.checkpoint()
    finally:
        run.close()
    return run.finish()


def _check_finite(value: float, step: int, n: int) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise FloatingPointError(
            f"training loss is {value} in the {n} step(s) up to step {step}; the last "
            "checkpoint is kept (try a lower lr or grad_clip)")


def _history_file(history: dict[str, Any], config: dict[str, Any], spec: ModelSpec | None,
                  best_val: float | None, best_step: int | None, step: int, info: DistInfo
                  ) -> dict[str, Any]:
    return {
        "step": step,
        "best_val": best_val,
        "best_step": best_step,
        "world_size": info.world_size,
        "config": config,
        "spec": spec.to_dict() if spec is not None else None,
        "train": history["train"],
        "val": history["val"],
    }


__all__ = [
    "TrainResult", "capture_rng_state", "evaluate", "restore_rng_state", "seed_everything",
    "make_test_set", "make_val_set", "train",
]
