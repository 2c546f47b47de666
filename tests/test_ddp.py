"""Two-process DDP smoke test on CPU (gloo): the same `train` call as in a single process,
including a crash and an exact resume."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from approxeq.train import TrainConfig, load_checkpoint, train
from test_train import SineTasks, TinyCNP

WORLD = 2


class RecordingSineTasks(SineTasks):
    """Remembers the last batch it drew (a training batch: the validation set is drawn first)."""

    last = None

    def sample(self, batch_size, generator):
        batch = super().sample(batch_size, generator)
        self.last = batch.xt.clone()
        return batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Crash(RuntimeError):
    pass


def _crash_at_step_5(step, loss):
    if step == 5:
        raise Crash("simulated crash")


def _run(rank: int, port: int, out_dir: str, seed: int, **kwargs):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.manual_seed(seed + rank)  # different initial weights: DDP must start from rank 0's
    model, tasks = TinyCNP(), RecordingSineTasks()
    config = TrainConfig(steps=6, batch_size=4, val_every=3, val_tasks=8, eval_batch_size=4,
                         log_every=3, device="cpu")
    result = train(model, tasks, config, out_dir, progress=False, log=False, **kwargs)
    return model, tasks, result


def _worker(rank: int, ports: list[int], out_dir: str) -> None:
    torch.set_num_threads(1)
    model, tasks, result = _run(rank, ports[0], os.path.join(out_dir, "run"), 100)
    with pytest.raises(Crash):
        _run(rank, ports[1], os.path.join(out_dir, "resumed"), 100, callback=_crash_at_step_5)
    resumed, _, _ = _run(rank, ports[2], os.path.join(out_dir, "resumed"), 300)
    torch.save({"params": [p.detach().clone() for p in model.parameters()],
                "resumed": [p.detach().clone() for p in resumed.parameters()],
                "last_targets": tasks.last, "best_val": result.best_val,
                "initialized_after": dist.is_initialized()},
               os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp_training_and_exact_resume(tmp_path):
    ports = [_free_port() for _ in range(3)]
    mp.spawn(_worker, args=(ports, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for p, q, r in zip(ranks[0]["params"], ranks[1]["params"], ranks[1]["resumed"]):
        assert torch.equal(p, q) and torch.equal(p, r)
    assert not torch.equal(ranks[0]["last_targets"], ranks[1]["last_targets"])
    assert ranks[0]["best_val"] == ranks[1]["best_val"] is not None
    assert not any(r["initialized_after"] for r in ranks)

    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last.step == 6 and len(last.rng_states) == WORLD
    for p, q in zip(ranks[0]["params"], last.model_state.values()):
        assert torch.equal(p, q)
    assert sorted(os.listdir(tmp_path / "run")) == ["best.pt", "history.json", "last.pt"]
