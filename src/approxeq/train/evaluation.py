"""Scoring a model on fixed task sets during and after training: the validation and test sets,
and an evaluation that is repeatable (a forked RNG) and can be shared among DDP ranks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from approxeq.data.base import TaskGenerator
from approxeq.nn.placement import model_dtype_device
from approxeq.np.batch import Batch
from approxeq.np.functional import EvalResult, evaluation_mode, np_evaluate
from approxeq.train.config import TrainConfig
from approxeq.train.distributed import DistInfo, all_gather_objects, unwrap_model


def batch_to(batch: Batch, dtype: torch.dtype, device: torch.device) -> Batch:
    """``batch`` on ``device`` in ``dtype`` (itself when it is there already)."""
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
            results = [np_evaluate(model, batch_to(b, dtype, device)) for b in batches]
        else:
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                results = [np_evaluate(model, batch_to(b, dtype, device)) for b in batches]
    return EvalResult.cat([_cpu(r) for r in results])


def _cpu(result: EvalResult) -> EvalResult:
    return EvalResult(result.loglik.cpu(), result.rmse.cpu(), result.coverage.cpu())


def evaluate_sharded(model: nn.Module, batches: Sequence[Batch], info: DistInfo, seed: int
                     ) -> EvalResult:
    """:func:`evaluate` shared among the ranks: each scores every ``world_size``-th batch, and
    the results are reassembled in the original order, so they equal a single-process
    evaluation."""
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


__all__ = ["batch_to", "evaluate", "evaluate_sharded", "make_test_set", "make_val_set"]
