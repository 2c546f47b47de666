"""Training batches drawn ahead by a background thread: the same batches, the same weights, and
exact resumption; and the xarray task sampler reads no file per task."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from approxeq.data.base import TaskGenerator
from approxeq.np.batch import Batch
from approxeq.train import TrainConfig, load_checkpoint, train
from approxeq.train.speed import BatchStream


class CountingSineTasks(TaskGenerator):
    """Sine tasks with a random context size; counts the batches drawn (from any thread)."""

    dim_x = 1
    dim_y = 1

    def __init__(self) -> None:
        self.drawn = 0
        self._lock = threading.Lock()

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        nc = int(torch.randint(2, 9, (), generator=generator))
        x = torch.rand(batch_size, nc + 12, 1, generator=generator) * 4 - 2
        phase = torch.rand(batch_size, 1, 1, generator=generator) * math.pi
        y = torch.sin(x - phase) + 0.05 * torch.randn(x.shape, generator=generator)
        with self._lock:
            self.drawn += 1
        return Batch(x[:, :nc], y[:, :nc], x[:, nc:], y[:, nc:])


class RecordingCNP(nn.Module):
    """A small CNP with dropout (so training also draws from the global RNG) that records the
    inputs of its training calls."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.symmetry = 1, 1, None
        self.encoder = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width))
        self.decoder = nn.Sequential(nn.Linear(width + 1, width), nn.ReLU(), nn.Dropout(0.1),
                                     nn.Linear(width, 2))
        self.seen: list[tuple[torch.Tensor, ...]] = []

    def forward(self, xc, yc, xt):
        if self.training:
            self.seen.append((xc.clone(), yc.clone(), xt.clone()))
        r = self.encoder(torch.cat([xc, yc], -1)).mean(1)
        h = self.decoder(torch.cat([r.unsqueeze(1).expand(-1, xt.shape[1], -1), xt], -1))
        return Normal(h[..., :1], nn.functional.softplus(h[..., 1:]) + 1e-3)


def _model() -> RecordingCNP:
    torch.manual_seed(5)
    return RecordingCNP()


def _config(**overrides) -> TrainConfig:
    base = dict(steps=16, batch_size=3, val_every=8, val_tasks=6, eval_batch_size=3,
                checkpoint_every=8, log_every=4, device="cpu", seed=11)
    return TrainConfig(**{**base, **overrides})


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_prefetched_training_sees_the_same_batches_and_ends_with_the_same_weights(tmp_path):
    serial = train(_model(), CountingSineTasks(), _config(prefetch=0), tmp_path / "serial",
                   progress=False, log=False)
    ahead = train(_model(), CountingSineTasks(), _config(prefetch=3), tmp_path / "ahead",
                  progress=False, log=False)
    assert len(serial.model.seen) == len(ahead.model.seen) == 16
    for i, (a, b) in enumerate(zip(serial.model.seen, ahead.model.seen)):
        for u, v in zip(a, b):
            assert torch.equal(u, v), f"batch {i}"
    _same_weights(serial.model, ahead.model)
    assert ahead.history["train"] == serial.history["train"]
    assert ahead.history["val"]["loglik"] == serial.history["val"]["loglik"]


def test_the_default_prefetches_only_with_a_core_to_spare(monkeypatch):
    from approxeq.train.speed import AUTO_PREFETCH, prefetch_depth

    assert TrainConfig().prefetch == "auto"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert prefetch_depth("auto", "cpu", cores=4) == AUTO_PREFETCH > 0
    assert prefetch_depth("auto", "cpu", cores=2) == 0  # the thread would compete with the step
    assert prefetch_depth("auto", "cuda", cores=2) == AUTO_PREFETCH
    assert prefetch_depth(3, "cpu", cores=1) == 3  # an explicit depth is kept


def test_parallel_workers_that_fill_every_core_do_not_prefetch():
    from approxeq.experiments.parallel import with_threads
    from approxeq.experiments.schema import experiment_from_dict

    config = experiment_from_dict({
        "name": "t", "task": {"name": "gp", "dim_x": 1, "dim_y": 1},
        "models": [{"label": "A", "name": "tnp", "train": {"prefetch": 1}},
                   {"label": "B", "name": "tnp"}]})
    full = with_threads(config, 1, spare_core=False)
    assert [m.train.prefetch for m in full.models] == [1, 0]
    spare = with_threads(config, 1, spare_core=True)
    assert [m.train.prefetch for m in spare.models] == [1, "auto"]


class Crash(RuntimeError):
    pass


def test_resume_with_prefetch_is_exact_although_the_prefetcher_ran_ahead(tmp_path):
    depth = 4
    reference = train(_model(), CountingSineTasks(), _config(prefetch=0), tmp_path / "ref",
                      progress=False, log=False)

    tasks = CountingSineTasks()

    def crash_after_lookahead(step: int, loss: float) -> None:
        if step == 8:
            # make sure the background thread has drawn past the checkpoint at step 8, so a
            # checkpoint of the generator's own state would be that of a later batch
            deadline = time.monotonic() + 10
            while tasks.drawn < 8 + depth and time.monotonic() < deadline:
                time.sleep(0.01)
            assert tasks.drawn >= 8 + depth
        if step == 12:
            raise Crash

    with pytest.raises(Crash):
        train(_model(), tasks, _config(prefetch=depth), tmp_path / "run", progress=False,
              log=False, callback=crash_after_lookahead)
    assert load_checkpoint(tmp_path / "run" / "last.pt").step == 8
    torch.manual_seed(999)  # the resumed run must not depend on the caller's RNG
    resumed = train(_model(), CountingSineTasks(), _config(prefetch=depth), tmp_path / "run",
                    progress=False, log=False)
    assert resumed.resumed_from == 8 and resumed.step == 16
    _same_weights(reference.model, resumed.model)
    assert resumed.history["train"] == reference.history["train"]
    assert resumed.history["val"]["loglik"] == reference.history["val"]["loglik"]


def test_batch_stream_state_is_that_of_the_last_batch_used():
    tasks = CountingSineTasks()
    serial_rng = torch.Generator().manual_seed(3)
    serial = [tasks.sample(2, serial_rng) for _ in range(6)]
    with BatchStream(tasks, 2, torch.Generator().manual_seed(3), prefetch=3,
                     num_batches=6) as stream:
        first = [stream.next() for _ in range(2)]
        state = stream.rng_state()
    assert all(torch.equal(a.yt, b.yt) for a, b in zip(first, serial))
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(tasks.sample(2, resumed).yt, serial[2].yt)
    with pytest.raises(ValueError, match="prefetch"):
        BatchStream(tasks, 2, torch.Generator(), prefetch=-1)


def test_an_error_of_the_task_generator_stops_training_at_its_step(tmp_path):
    class FailsAtFifth(CountingSineTasks):
        def sample(self, batch_size, generator):
            if self.drawn == 4:
                raise RuntimeError("broken task file")
            return super().sample(batch_size, generator)

    steps: list[int] = []
    with pytest.raises(RuntimeError, match="broken task file"):
        train(_model(), FailsAtFifth(), _config(prefetch=2, val_every=0), tmp_path,
              progress=False, log=False, callback=lambda step, loss: steps.append(step))
    assert steps == [1, 2, 3, 4]


def test_prefetch_option_is_checked():
    from approxeq.train import ConfigError

    with pytest.raises(ConfigError, match="prefetch"):
        TrainConfig(prefetch=-1)
    with pytest.raises(ConfigError, match="prefetch"):
        TrainConfig(prefetch="always")
    assert TrainConfig.from_dict({"prefetch": 0}).prefetch == 0
    assert TrainConfig.from_dict({"prefetch": "auto"}).prefetch == "auto"


# --------------------------------------------------------------------------------------------
# The xarray (ERA5) sampler keeps its field in memory: no file read per task
# --------------------------------------------------------------------------------------------

WEATHER = Path(__file__).resolve().parents[1] / "src" / "approxeq" / "datasets" / "weather"


def _count_netcdf_reads(monkeypatch) -> list[int]:
    backend = pytest.importorskip("xarray.backends.netCDF4_")
    pytest.importorskip("netCDF4")
    reads = [0]
    original = backend.NetCDF4ArrayWrapper._getitem

    def counted(self, key):
        reads[0] += 1
        return original(self, key)

    monkeypatch.setattr(backend.NetCDF4ArrayWrapper, "_getitem", counted)
    return reads


def test_era5_sampler_reads_no_file_per_task(monkeypatch):
    pytest.importorskip("xarray")
    from approxeq.data.xarray_tasks import XarrayTaskGenerator

    reads = _count_netcdf_reads(monkeypatch)
    gen = XarrayTaskGenerator(WEATHER / "era5_t2m_uk_2019-03.nc", "t2m", days=(1, 21),
                              patch_size=16, max_targets=64,
                              aux=WEATHER / "uk_elevation_on_era5_grid.nc",
                              aux_vars=["elevation"])
    assert reads[0] > 0  # the hook sees the reads of the constructor
    reads[0] = 0
    g = torch.Generator().manual_seed(0)
    batches = [gen.sample(4, g) for _ in range(5)]
    assert reads[0] == 0
    assert all(torch.isfinite(b.yt).all() for b in batches)


def test_a_field_over_cache_mb_is_read_per_task_as_documented(monkeypatch, tmp_path):
    # the other side of the same switch, which also shows that the hook counts sampling reads
    xr = pytest.importorskip("xarray")
    import numpy as np

    from approxeq.data.xarray_tasks import XarrayTaskGenerator

    lat, lon = np.linspace(55.0, 50.0, 6), np.linspace(-5.0, 3.0, 7)
    values = 280 + np.random.default_rng(0).normal(size=(20, 6, 7)).astype(np.float32)
    xr.Dataset({"tas": (("time", "lat", "lon"), values, {"units": "K"})},
               coords={"time": np.arange(20), "lat": lat, "lon": lon}).to_netcdf(
        tmp_path / "f.nc")
    reads = _count_netcdf_reads(monkeypatch)
    gen = XarrayTaskGenerator(tmp_path / "f.nc", "tas", cache_mb=0.0)
    reads[0] = 0
    gen.sample(2, torch.Generator().manual_seed(0))
    assert reads[0] > 0
