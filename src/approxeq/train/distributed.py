"""Single-process or ``torchrun`` (DDP) execution, chosen from the environment.

Under ``torchrun`` the variables ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` are set;
:func:`init_distributed` then joins the process group (backend ``nccl`` on CUDA, ``gloo`` on
CPU) and picks the rank's device. Without them everything runs in one process and every helper
here is a no-op, so the training loop is written once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands.

    Attributes:
        rank: global rank (0 in a single process). world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this rank computes on.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (single process).
        owns_group: whether :func:`init_distributed` created the process group (and so
            :func:`cleanup_distributed` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files, logs and shows progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an int, got {value!r}") from None


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: the rank's GPU if CUDA is available, else the CPU; otherwise as given
    (a bare ``"cuda"`` becomes ``cuda:local_rank``)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init_distributed(device: str | torch.device = "auto", *, timeout_s: float = 1800.0,
                     init_method: str | None = None) -> DistInfo:
    """Join the process group if the environment describes one; return this rank's info.

    Reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (set by ``torchrun``, or by hand together
    with ``MASTER_ADDR`` and ``MASTER_PORT``). With ``WORLD_SIZE`` unset or 1, nothing is
    initialised. If a process group already exists it is reused and left to its owner.

    Args:
        device: see :func:`resolve_device`; the backend is ``nccl`` for CUDA devices and
            ``gloo`` otherwise.
        timeout_s: how long a rank waits for the others, at the rendezvous and in collectives.
        init_method: ``None`` for ``env://`` (``MASTER_ADDR``/``MASTER_PORT``), or any URL
            ``torch.distributed.init_process_group`` accepts; ``file://PATH`` needs no port,
            so ranks cannot meet a stranger's socket on a port that was free when chosen.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        return DistInfo(rank, world, local_rank, resolve_device(device, local_rank),
                        dist.get_backend(), owns_group=False)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world <= 1:
        return DistInfo(0, 1, 0, resolve_device(device, 0), None, owns_group=False)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not 0 <= rank < world:
        raise ValueError(f"environment variable RANK: expected 0..{world - 1}, got {rank}")
    resolved = resolve_device(device, local_rank)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    from datetime import timedelta

    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world,
                              "timeout": timedelta(seconds=timeout_s)}
    if init_method is None:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} but {' and '.join(missing)} is not set: "
                               "launch with torchrun, set them, or give init_method")
    else:
        kwargs["init_method"] = init_method
    if resolved.type == "cuda":
        kwargs["device_id"] = resolved
    dist.init_process_group(**kwargs)
    return DistInfo(rank, world, local_rank, resolved, backend, owns_group=True)


@contextmanager
def distributed_session(device: str | torch.device = "auto", *, timeout_s: float = 1800.0,
                        init_method: str | None = None) -> Iterator[DistInfo]:
    """One process group for a whole command that trains several models in turn.

    Under ``torchrun``, every :func:`~approxeq.train.train` call inside reuses this group;
    joining and leaving a group per model would rendezvous again through the launcher's store,
    whose keys from the first round are still there, and the ranks would wait on each other.
    Outside ``torchrun`` it yields a single-process :class:`DistInfo` and does nothing.
    """
    info = init_distributed(device, timeout_s=timeout_s, init_method=init_method)
    try:
        yield info
    finally:
        cleanup_distributed(info)


def is_main_process() -> bool:
    """Rank 0 of the current process group, or ``True`` when there is none. Only the main
    process evaluates and writes results; the others only train."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if ``info`` says :func:`init_distributed` created it."""
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo, *, find_unused_parameters: bool = False
               ) -> nn.Module:
    """``DistributedDataParallel(model)`` under DDP (which also makes every rank start from
    rank 0's parameters); ``model`` itself otherwise."""
    if not info.is_distributed:
        return model
    device_ids = [info.device] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.is_distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over ranks (returns a new tensor; identity in a single process)."""
    if not info.is_distributed:
        return values.clone()
    out = values.detach().clone().to(info.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / info.world_size).to(values.device)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


__all__ = [
    "DistInfo", "all_gather_objects", "all_reduce_mean", "barrier", "broadcast_object",
    "cleanup_distributed", "distributed_session", "init_distributed", "is_main_process",
    "resolve_device", "unwrap_model", "wrap_model",
]
