"""Task generation in a background thread, off the training step's critical path.

Sampling a batch of GP tasks (a float64 Cholesky factorisation per task) costs a sizeable
fraction of a small model's training step. :class:`Prefetcher` draws the batches in a background
thread while the step runs: torch releases the GIL inside its kernels, so on a machine with a
spare core the two overlap.

Repeatability is kept: the background thread is the only user of the ``torch.Generator`` and
draws the batches one after another, exactly as a loop calling ``task.sample(batch_size,
generator)`` would, so the batches are bit-identical to serial sampling with the same seed. Each
batch comes with the generator's state right after it was drawn (:meth:`Prefetcher.rng_state`),
which is what a checkpoint must store to resume the same sequence (the generator itself has
already moved on by up to ``depth`` batches).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch

from approxeq.data.base import TaskGenerator

_DONE = object()


class Prefetcher:
    """Iterator over ``task.sample(batch_size, generator)``, drawn ``depth`` batches ahead.

    Args:
        task: the task generator. batch_size: tasks per batch. generator: the random source;
            no one else may use it while the prefetcher runs. depth: batches drawn ahead (>= 1).
        num_batches: stop after this many batches (``None``: never stop).

    Use as a context manager (or call :meth:`close`) so that the thread stops. An exception in
    the background thread is raised by the ``next()`` call that would have returned its batch.
    """

    def __init__(self, task: TaskGenerator, batch_size: int, generator: torch.Generator, *,
                 depth: int = 2, num_batches: int | None = None) -> None:
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth: expected an int >= 1, got {depth!r}")
        if num_batches is not None and num_batches < 0:
            raise ValueError(f"num_batches: expected None or >= 0, got {num_batches!r}")
        self.task, self.batch_size, self.generator = task, batch_size, generator
        self.num_batches = num_batches
        self._rng_state = generator.get_state()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="approxeq-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        made = 0
        try:
            while not self._stop.is_set() and (self.num_batches is None
                                               or made < self.num_batches):
                batch = self.task.sample(self.batch_size, self.generator)
                made += 1
                if not self._put((batch, self.generator.get_state())):
                    return
        except BaseException as exc:  # noqa: BLE001 -- handed to the consumer
            self._put(exc)
            return
        self._put(_DONE)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self._rng_state = item
        return batch

    def rng_state(self) -> torch.Tensor:
        """The generator's state right after the last batch returned by ``next()`` (its state
        at construction before the first): restoring it resumes the same sequence."""
        return self._rng_state

    def close(self) -> None:
        """Stop the background thread (batches drawn ahead are discarded)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Prefetcher"]
