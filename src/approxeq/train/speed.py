"""Throughput options of the training loop: prefetched tasks, mixed precision, ``torch.compile``.

None of them changes what a run computes in float32 without compile: :class:`BatchStream` gives
the batches a serial loop would draw, bit for bit, whether they are drawn ahead in a background
thread or not; :class:`StepRunner` with ``precision="float32"`` and ``compile=False`` is the
plain forward, backward and optimiser step.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from approxeq.data.base import TaskGenerator
from approxeq.data.prefetch import Prefetcher
from approxeq.np.batch import Batch
from approxeq.np.functional import np_loss

#: ``TrainConfig.precision`` values and the autocast dtype of each (``None``: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


#: batches drawn ahead when ``TrainConfig.prefetch`` is ``"auto"`` and prefetching pays
AUTO_PREFETCH = 2


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def prefetch_depth(prefetch: int | str, device: torch.device | str,
                   cores: int | None = None) -> int:
    """The batches to draw ahead for ``TrainConfig.prefetch``: an int as it is; ``"auto"``
    :data:`AUTO_PREFETCH` when the step runs on an accelerator, or on a CPU with a core to
    spare beyond torch's threads (``torch.get_num_threads() < cores``), else 0. Without a spare
    core the sampling thread competes with the step's own threads and slows training down
    (a TNP trained 34 % slower on 2 cores with 2 threads, same batches); see
    ``benchmarks/README.md``. ``cores`` defaults to :func:`available_cores`."""
    if prefetch != "auto":
        return int(prefetch)
    if torch.device(device).type != "cpu":
        return AUTO_PREFETCH
    spare = torch.get_num_threads() < (cores or available_cores())
    return AUTO_PREFETCH if spare else 0


class BatchStream:
    """The training batches of one run, in order: ``task.sample(batch_size, generator)`` again
    and again, drawn in the caller's thread (``prefetch=0``) or up to ``prefetch`` batches ahead
    by a :class:`~approxeq.data.prefetch.Prefetcher`.

    Args:
        task: the training task generator.
        batch_size: tasks per batch.
        generator: the task stream's random source; while the stream is open nobody else may
            draw from it (with prefetching a background thread does).
        prefetch: batches drawn ahead (0: none).
        num_batches: batches the run still needs; a prefetcher draws no more than these.

    :meth:`rng_state` is the generator's state right after the last batch returned by
    :meth:`next`, never that of a batch drawn ahead: it is what a checkpoint must hold so that a
    resumed run draws the same next batch. Call :meth:`close` (or use ``with``) to stop the
    background thread.
    """

    def __init__(self, task: TaskGenerator, batch_size: int, generator: torch.Generator, *,
                 prefetch: int = 0, num_batches: int | None = None) -> None:
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ValueError(f"prefetch: expected an int >= 0, got {prefetch!r}")
        self.task, self.batch_size, self.generator = task, batch_size, generator
        self._prefetcher = (Prefetcher(task, batch_size, generator, depth=prefetch,
                                       num_batches=num_batches) if prefetch > 0 else None)

    def next(self) -> Batch:
        """The next batch."""
        if self._prefetcher is None:
            return self.task.sample(self.batch_size, self.generator)
        return next(self._prefetcher)

    def rng_state(self) -> torch.Tensor:
        """The generator's state after the last batch returned (before the first: at start)."""
        if self._prefetcher is None:
            return self.generator.get_state()
        return self._prefetcher.rng_state()

    def close(self) -> None:
        """Stop drawing ahead (batches already drawn are discarded)."""
        if self._prefetcher is not None:
            self._prefetcher.close()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_autocast(precision: str, dtype: torch.dtype, device: torch.device) -> None:
    # torch warns and silently disables autocast for a dtype a device does not support; a run
    # asked for fp16 must not quietly train in float32.
    what = f"precision: {precision!r} is not supported on {device.type} by torch " \
           f"{torch.__version__}"
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"{what} (no autocast for this device); use 'float32'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.autocast(device.type, dtype=dtype):
                a = torch.ones(2, 2, device=device)
                got = (a @ a).dtype
        except RuntimeError as err:
            raise ValueError(f"{what} ({err}); use 'float32'") from None
    if got != dtype:
        raise ValueError(f"{what}: a matrix product under autocast gives {got}, expected "
                         f"{dtype}; use 'float32'")


_COMPILE_HINT = "set compile: false (TrainConfig(compile=False)) to train without it"


def _is_compile_error(err: BaseException) -> bool:
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover - depends on the torch build
        return False
    return isinstance(err, TorchDynamoException) or type(err).__module__.startswith(
        ("torch._dynamo", "torch._inductor"))


class StepRunner:
    """The loss and the update of one training step, with the run's precision and compile
    options.

    Args:
        model: what the loss calls (the DDP wrapper under ``torchrun``); its parameters must
            be float32 when ``precision`` is not ``"float32"``.
        device: the model's device.
        precision: ``"float32"``, ``"bf16"`` or ``"fp16"``: the training forward and loss run
            under ``torch.autocast`` with that dtype (parameters, gradients and the optimiser
            stay float32); ``"fp16"`` scales the loss with a ``torch.amp.GradScaler`` so that
            small gradients do not underflow. Evaluation never goes through this class.
        compile: run the forward pass through ``torch.compile(model)``.

    Raises:
        ValueError: naming ``precision`` when it is unknown, when the device does not support
            it, or when the model's parameters are not float32.
        RuntimeError: naming ``compile`` when ``torch.compile`` fails (here or at the first
            steps, where the compilation happens).
    """

    def __init__(self, model: nn.Module, device: torch.device, *, precision: str = "float32",
                 compile: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, "
                             f"got {precision!r}")
        self.precision, self.device = precision, torch.device(device)
        self.dtype = PRECISIONS[precision]
        self.scaler: torch.amp.GradScaler | None = None
        if self.dtype is not None:
            param_dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
            if param_dtypes - {torch.float32}:
                raise ValueError(f"precision: {precision!r} trains a float32 model in "
                                 f"{precision}; the model's parameters are "
                                 f"{sorted(str(d) for d in param_dtypes)} (use 'float32')")
            _check_autocast(precision, self.dtype, self.device)
            if self.dtype is torch.float16:
                try:
                    self.scaler = torch.amp.GradScaler(self.device.type)
                except (RuntimeError, ValueError) as err:
                    raise ValueError(f"precision: 'fp16' needs a gradient scaler, which torch "
                                     f"{torch.__version__} has not for {self.device.type} "
                                     f"({err}); use 'bf16' or 'float32'") from None
        self.compiled = bool(compile)
        self.forward_model = model
        if self.compiled:
            try:
                self.forward_model = torch.compile(model)
            except Exception as err:  # noqa: BLE001 -- re-raised with the option named
                raise RuntimeError(f"compile: torch.compile of the model failed ({err}); "
                                   f"{_COMPILE_HINT}") from err

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def loss(self, batch: Batch) -> torch.Tensor:
        """:func:`~approxeq.np.np_loss` of ``batch`` (a scalar), under the run's autocast."""
        try:
            with self._autocast():
                loss = np_loss(self.forward_model, batch)
        except Exception as err:
            if self.compiled and _is_compile_error(err):
                raise RuntimeError(f"compile: the compiled model failed on a batch with "
                                   f"{batch.xc.shape[1]} context and {batch.xt.shape[1]} target "
                                   f"points ({type(err).__name__}: "
                                   f"{str(err).strip()[:500]}); {_COMPILE_HINT}") from err
            raise
        # the loss of an autocast forward may come out in low precision; its gradient should not
        return loss.float() if loss.dtype != torch.float64 else loss

    def update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
               parameters: Iterable[torch.Tensor], grad_clip: float | None) -> None:
        """Backward pass of ``loss``, optional clipping of the global gradient norm to
        ``grad_clip``, and the optimiser step (skipped by the scaler when fp16 gradients
        overflowed). The caller zeroes the gradients."""
        if self.scaler is None:
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if grad_clip:
            # clip the true gradients, not the scaled ones
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the step exactly (the fp16 loss scale)."""
        return {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; a state without a scaler leaves it fresh."""
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])


__all__ = ["AUTO_PREFETCH", "PRECISIONS", "BatchStream", "StepRunner", "available_cores",
           "prefetch_depth"]
