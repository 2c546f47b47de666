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
from approxeq.np.functional import EvalResult, evaluation_mode, np_evaluate
from approxeq.train.checkpoint import ModelSpec, load_checkpoint, model_spec_of, save_checkpoint
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
from approxeq.train.progress import Progress
from approxeq.train.rng import capture_rng_state, restore_rng_state, seed_everything
from approxeq.train.rundir import fault_point
from approxeq.train.speed import BatchStream, StepRunner, prefetch_depth

LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"

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
# Evaluation
# --------------------------------------------------------------------------------------------

def _to_model(batch: Batch, dtype: torch.dtype, device: torch.device) -> Batch:
    if batch.xc.dtype == dtype and batch.xc.device == device:
        return batch
    return batch.to(device=device, dtype=dtype)


def evaluate(model: nn.Module, batches: Sequence[Batch], *, seed: int | None = 0) -> EvalResult:
    """Per-task metrics of ``model`` on fixed ``batches`` (see :func:`approxeq.np.np_evaluate`).

    Runs in eval mode and under a forked RNG seeded with ``seed``, so stochastic models give
    repeatable scores and the caller's random stream is untouched (``seed=None``: no fork).
    Batches are moved to the model's device and floating dtype.

    Returns:
        :class:`~approxeq.np.EvalResult` over all tasks, in order; ``.summary()`` gives
        ``loglik``, ``loglik_se``, ``rmse``, ... .
    """
    if len(batches) == 0:
        raise ValueError("batches: expected at least one batch, got an empty sequence")
    model = unwrap_model(model)
    dtype, device = model_dtype_device(model)
    with evaluation_mode(model):
        if seed is None:
            results = [np_evaluate(model, _to_model(b, dtype, device)) for b in batches]
        else:
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                results = [np_evaluate(model, _to_model(b, dtype, device)) for b in batches]
    return EvalResult.cat([_cpu(r) for r in results])


def _cpu(result: EvalResult) -> EvalResult:
    return EvalResult(result.loglik.cpu(), result.rmse.cpu(), result.coverage.cpu())


def _evaluate_sharded(model: nn.Module, batches: Sequence[Batch], info: DistInfo, seed: int
                      ) -> EvalResult:
    # Each rank scores every world_size-th batch; reassembled in the original order, so the
    # result equals a single-process evaluation.
    mine = list(range(info.rank, len(batches), info.world_size))
    local = {i: evaluate(model, [batches[i]], seed=seed + i) for i in mine}
    gathered: dict[int, EvalResult] = {}
    for part in all_gather_objects(local, info):
        gathered.update(part)
    return EvalResult.cat([gathered[i] for i in range(len(batches))])


def make_val_set(generator: TaskGenerator, config: TrainConfig) -> list[Batch]:
    """The fixed validation set: ``config.val_tasks`` tasks from ``config.val_seed``."""
    return generator.fixed_set(config.val_tasks, config.eval_batch_size, config.val_seed)


def make_test_set(generator: TaskGenerator, config: TrainConfig) -> list[Batch]:
    """The fixed test set: ``config.test_tasks`` tasks from ``config.test_seed``."""
    return generator.fixed_set(config.test_tasks, config.eval_batch_size, config.test_seed)


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


def _train(model: nn.Module, generator: TaskGenerator, config: TrainConfig, out_dir: Path,
           info: DistInfo, *, val_set, resume, show_progress, log, spec, callback,
           val_extra, start_time) -> TrainResult:
    model = unwrap_model(model)
    spec = spec if spec is not None else model_spec_of(model)
    model.to(info.device)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict()

    validate = config.val_every > 0 and (val_set is not None or config.val_tasks > 0)
    if validate and val_set is None:
        val_set = make_val_set(generator, config)
    if validate and len(val_set) == 0:
        raise ValueError("val_set: expected at least one batch, got an empty sequence")

    task_rng = seed_everything(config.seed + info.rank)
    # one group unless a fixed input asks for its own lr multiplier or no decay on its grid
    optimizer = torch.optim.AdamW(parameter_groups(model, config.lr, config.weight_decay),
                                  lr=config.lr, weight_decay=config.weight_decay,
                                  **({"fused": True} if config.fused_optimizer else {}))
    history = _new_history()
    step, best_val, best_step, resumed_from = 0, None, None, None
    window_sum, window_count = 0.0, 0
    seconds_before = 0.0

    last_path = out_dir / LAST
    messages: list[str] = []
    if resume and last_path.is_file():
        try:
            ckpt = load_checkpoint(last_path, model, optimizer=optimizer,
                                   map_location=info.device)
        except RuntimeError as err:
            raise RuntimeError(f"out_dir: {last_path} holds a different model than the one "
                               "given; use another out_dir or resume=False") from err
        step, best_val, best_step = ckpt.step, ckpt.best_val, ckpt.best_step
        resumed_from = ckpt.step
        history = ckpt.history or _new_history()
        seconds_before = float(ckpt.extra.get("seconds", 0.0))
        if len(ckpt.rng_states) == info.world_size:
            state = ckpt.rng_states[info.rank]
            restore_rng_state(state, task_rng, info.device)
            window_sum, window_count = state.get("loss_window", (0.0, 0))
        else:
            # A different number of processes cannot replay the same task streams.
            task_rng = seed_everything(config.seed + info.rank + 7919 * step)
            messages.append(f"resuming with {info.world_size} process(es) from a checkpoint "
                            f"written by {len(ckpt.rng_states)}: training continues, but not "
                            "bit-identically")
        defaults = TrainConfig().to_dict()  # for fields older checkpoints do not hold
        changed = [k for k in _TRAJECTORY_FIELDS
                   if ckpt.config is not None and ckpt.config.get(k, defaults[k])
                   != config_dict[k]]
        if changed:
            messages.append(f"resuming with changed {', '.join(changed)}: the run is no longer "
                            "equivalent to an uninterrupted one")

    ddp_model = wrap_model(model, info, find_unused_parameters=config.find_unused_parameters)
    runner = StepRunner(ddp_model, info.device, precision=config.precision,
                        compile=config.compile)
    if resumed_from is not None:
        runner.load_state_dict(ckpt.extra)
    model.train()

    bar = Progress(config.steps, min(step, config.steps),
                   enabled=show_progress and info.is_main, desc=out_dir.name or "train")
    say = _make_logger(log, info, bar)
    for message in messages:
        say(message)
    if resumed_from is not None:
        say(f"resumed from {last_path} at step {resumed_from}")

    dtype, _ = model_dtype_device(model)
    interval = config.checkpoint_interval

    def elapsed() -> float:
        return seconds_before + time.monotonic() - start_time

    def write_last(at_step: int) -> None:
        states = all_gather_objects(
            {**capture_rng_state(task_rng, info.device, task_state=stream.rng_state()),
             "loss_window": (window_sum, window_count)}, info)
        if info.is_main:
            # history.json first: a kill between the two leaves it ahead of last.pt, and the
            # resumed run, replaying from last.pt, rewrites it; the other order could leave a
            # finished run with a stale history.json that nothing rewrites
            write_json_atomic(out_dir / HISTORY, _history_file(history, config_dict, spec,
                                                               best_val, best_step, at_step,
                                                               info))
            fault_point("history")
            save_checkpoint(last_path, model, optimizer=optimizer, step=at_step,
                            rng_states=states, best_val=best_val, best_step=best_step,
                            spec=spec, config=config_dict, history=history,
                            extra={"seconds": elapsed(), "world_size": info.world_size,
                                   **runner.state_dict()})
            fault_point("checkpoint")

    stream = BatchStream(generator, config.batch_size, task_rng,
                         prefetch=prefetch_depth(config.prefetch, info.device),
                         num_batches=max(config.steps - step, 0))
    try:
        while step < config.steps:
            step += 1
            batch = _to_model(stream.next(), dtype, info.device)
            try:
                loss = runner.loss(batch)
            except ValueError as err:
                # torch.distributions rejects NaN parameters with an obscure message.
                if all(torch.isfinite(p).all() for p in model.parameters()):
                    raise
                raise FloatingPointError(
                    f"model parameters are NaN or infinite at step {step}; the last checkpoint "
                    "is kept (try a lower lr or grad_clip)") from err
            optimizer.zero_grad(set_to_none=True)
            runner.update(loss, optimizer, model.parameters(), config.grad_clip)

            loss_value = float(loss.detach())
            window_sum += loss_value
            window_count += 1
            if callback is not None:
                callback(step, loss_value)

            if step % config.log_every == 0 or step == config.steps:
                mean = all_reduce_mean(torch.tensor([window_sum / window_count],
                                                    dtype=torch.float64), info).item()
                _check_finite(mean, step, window_count)
                history["train"]["step"].append(step)
                history["train"]["loss"].append(mean)
                window_sum, window_count = 0.0, 0
                bar.update(step, loss=mean)
            else:
                bar.update(step)

            if validate and (step % config.val_every == 0 or step == config.steps):
                summary = _evaluate_sharded(model, val_set, info, config.val_seed).summary()
                val = history["val"]
                val["step"].append(step)
                val["seconds"].append(elapsed())
                if val_extra is not None:
                    summary.update(val_extra(model, val_set))
                for key, value in summary.items():
                    if key != "n_tasks":
                        val.setdefault(key, []).append(value)
                improved = math.isfinite(summary["loglik"]) and (
                    best_val is None or summary["loglik"] > best_val)
                if improved:
                    best_val, best_step = summary["loglik"], step
                    if info.is_main:
                        save_checkpoint(out_dir / BEST, model, step=step, best_val=best_val,
                                        best_step=best_step, spec=spec, config=config_dict)
                        fault_point("best")
                bar.update(step, val=summary["loglik"])

            if step % interval == 0 or step == config.steps:
                if window_count:  # never checkpoint a diverged model
                    partial = all_reduce_mean(torch.tensor([window_sum / window_count],
                                                           dtype=torch.float64), info).item()
                    _check_finite(partial, step, window_count)
                if step == config.steps and best_val is None:
                    # Without (finite) validation scores the final model is the best we know.
                    best_step = step
                    if info.is_main:
                        save_checkpoint(out_dir / BEST, model, step=step, spec=spec,
                                        config=config_dict)
                write_last(step)
    finally:
        stream.close()
        bar.close()

    history_out = _history_file(history, config_dict, spec, best_val, best_step, step, info)
    if resumed_from is not None and resumed_from >= config.steps:
        say(f"{last_path} already holds {resumed_from} >= {config.steps} steps; nothing to do")
    elif best_val is not None:
        say(f"done: {step} steps, best validation log-likelihood {best_val:.4f} at step "
            f"{best_step}")
    barrier(info)
    return TrainResult(model=model, out_dir=out_dir, step=step, best_val=best_val,
                       best_step=best_step, history=history_out, resumed_from=resumed_from,
                       seconds=time.monotonic() - start_time)


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
