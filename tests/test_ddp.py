"""Two-process DDP smoke test on CPU (gloo): the same `train` call as in a single process,
including a crash and an exact resume.

The crash is the part that once hung: a failed run must free its DDP wrapper before the group
is torn down, or one rank blocks in gloo while the other waits at the next rendezvous. The ranks
meet through files rather than ports picked in advance, which another socket could take, and
wait 120 s rather than 30 minutes, so a regression fails quickly."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_train import SineTasks, TinyCNP

from approxeq.train import TrainConfig, init_distributed, load_checkpoint, train

WORLD = 2


class RecordingSineTasks(SineTasks):
    """Remembers the last batch it drew (a training batch: the validation set is drawn first)."""

    last = None

    def sample(self, batch_size, generator):
        batch = super().sample(batch_size, generator)
        self.last = batch.xt.clone()
        return batch


class Crash(RuntimeError):
    pass


def _crash_at_step_5(step, loss):
    if step == 5:
        raise Crash("simulated crash")


def _run(rank: int, rendezvous: str, out_dir: str, seed: int, **kwargs):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      GLOO_SOCKET_IFNAME="lo")
    torch.manual_seed(seed + rank)  # different initial weights: DDP must start from rank 0's
    model, tasks = TinyCNP(), RecordingSineTasks()
    config = TrainConfig(steps=6, batch_size=4, val_every=3, val_tasks=8, eval_batch_size=4,
                         log_every=3, device="cpu", dist_init_method=f"file://{rendezvous}",
                         dist_timeout_s=120.0)
    result = train(model, tasks, config, out_dir, progress=False, log=False, **kwargs)
    return model, tasks, result


def _worker(rank: int, rendezvous: list[str], out_dir: str) -> None:
    torch.set_num_threads(1)
    model, tasks, result = _run(rank, rendezvous[0], os.path.join(out_dir, "run"), 100)
    with pytest.raises(Crash):
        _run(rank, rendezvous[1], os.path.join(out_dir, "resumed"), 100,
             callback=_crash_at_step_5)
    resumed, _, _ = _run(rank, rendezvous[2], os.path.join(out_dir, "resumed"), 300)
    torch.save({"params": [p.detach().clone() for p in model.parameters()],
                "resumed": [p.detach().clone() for p in resumed.parameters()],
                "last_targets": tasks.last, "best_val": result.best_val,
                "initialized_after": dist.is_initialized()},
               os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.timeout(300)
def test_two_process_ddp_training_and_exact_resume(tmp_path):
    rendezvous = [str(tmp_path / f"rendezvous{i}") for i in range(3)]
    mp.spawn(_worker, args=(rendezvous, str(tmp_path)), nprocs=WORLD, join=True)
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


def test_ddp_without_a_rendezvous_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR and MASTER_PORT"):
        init_distributed("cpu")


_TWO_MODELS = """
name: two-models
task: {name: gibbs, dim_x: 1, dim_y: 1, options: {}}
models:
  - {label: CNP, name: cnp, options: {width: 16}}
  - {label: ConvCNP, name: convcnp,
     options: {channels: 8, num_layers: 2, kernel_size: 5, points_per_unit: 8}}
train: {batch_size: 4, lr: 1.0e-3, device: cpu}
extra: {figures: false}
sizes:
  quick: {steps: 4, val_every: 2, val_tasks: 4, test_tasks: 4, eval_batch_size: 4}
"""


def _experiment_worker(rank: int, rendezvous: str, out_dir: str,
                       yaml_name: str = "two-models.yaml") -> None:
    from approxeq.experiments import run_experiment
    from approxeq.experiments.schema import load_experiment
    from approxeq.train.distributed import distributed_session
    from approxeq.train.rundir import RunDirError

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      GLOO_SOCKET_IFNAME="lo")
    config = load_experiment(os.path.join(out_dir, yaml_name), size="quick")
    with distributed_session("cpu", init_method=f"file://{rendezvous}", timeout_s=120.0):
        try:
            result = run_experiment(config, os.path.join(out_dir, "run"), progress=False,
                                    log=lambda _m: None)
        except RunDirError as err:  # refused: every rank must learn it (none may hang)
            torch.save({"error": str(err)}, os.path.join(out_dir, f"refused{rank}.pt"))
            return
    torch.save({"metrics": result.metrics}, os.path.join(out_dir, f"experiment{rank}.pt"))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.timeout(300)
def test_one_process_group_trains_every_model_of_an_experiment(tmp_path):
    """Several models in one DDP session (as `torchrun ... approxeq train` runs them): every
    model trains on both ranks, only rank 0 evaluates and writes the results."""
    (tmp_path / "two-models.yaml").write_text(_TWO_MODELS)
    mp.spawn(_experiment_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)),
             nprocs=WORLD, join=True)
    main, other = (torch.load(tmp_path / f"experiment{r}.pt")["metrics"] for r in range(WORLD))
    assert set(main) == {"CNP", "ConvCNP", "oracle"} and other == {}
    for label in ("CNP", "ConvCNP"):
        last = load_checkpoint(tmp_path / "run" / label / "last.pt")
        assert last.step == 4 and len(last.rng_states) == WORLD
        assert (tmp_path / "run" / label / "fingerprint.json").is_file()
    # a rerun with a changed model is refused on every rank, before anything is trained
    (tmp_path / "changed.yaml").write_text(_TWO_MODELS.replace("width: 16", "width: 32"))
    mp.spawn(_experiment_worker, args=(str(tmp_path / "rendezvous2"), str(tmp_path),
                                       "changed.yaml"), nprocs=WORLD, join=True)
    for r in range(WORLD):
        assert "model.options.width: 16 -> 32" in torch.load(tmp_path / f"refused{r}.pt")["error"]
