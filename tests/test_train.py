"""Training loop and configurations: learning, exact resumption, files, config loading."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from approxeq.data.base import TaskGenerator
from approxeq.experiments.schema import experiment_from_dict, load_experiment, save_experiment
from approxeq.np.batch import Batch
from approxeq.train import ConfigError, Progress, TrainConfig, evaluate, load_checkpoint, train


class SineTasks(TaskGenerator):
    """y = a sin(x - phase) + noise on [-2, 2]; a tiny task distribution for tests."""

    dim_x = 1
    dim_y = 1

    def __init__(self, n_target: int = 20, noise: float = 0.05):
        self.n_target, self.noise = n_target, noise

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        nc = int(torch.randint(3, 11, (), generator=generator))
        x = torch.rand(batch_size, nc + self.n_target, 1, generator=generator) * 4 - 2
        amplitude = torch.rand(batch_size, 1, 1, generator=generator) + 0.5
        phase = torch.rand(batch_size, 1, 1, generator=generator) * math.pi
        y = amplitude * torch.sin(x - phase)
        y = y + self.noise * torch.randn(y.shape, generator=generator)
        return Batch(x[:, :nc], y[:, :nc], x[:, nc:], y[:, nc:])


class TinyCNP(nn.Module):
    """A two-layer-MLP CNP with dropout, so training also consumes the global RNG."""

    def __init__(self, width: int = 32, dropout: float = 0.1):
        super().__init__()
        self.dim_x, self.dim_y, self.symmetry = 1, 1, None
        self.encoder = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width))
        self.decoder = nn.Sequential(nn.Linear(width + 1, width), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(width, 2))

    def forward(self, xc, yc, xt):
        r = self.encoder(torch.cat([xc, yc], -1)).sum(1) / max(xc.shape[1], 1)
        h = self.decoder(torch.cat([r.unsqueeze(1).expand(-1, xt.shape[1], -1), xt], -1))
        return Normal(h[..., :1], nn.functional.softplus(h[..., 1:]) + 1e-3)


def tiny_config(**overrides) -> TrainConfig:
    base = dict(steps=20, batch_size=4, val_every=10, val_tasks=8, eval_batch_size=4,
                checkpoint_every=10, log_every=5, device="cpu")
    return TrainConfig(**{**base, **overrides})


def fresh_model(seed: int = 3) -> TinyCNP:
    torch.manual_seed(seed)
    return TinyCNP()


def test_training_improves_validation_loglik(tmp_path):
    tasks = SineTasks()
    config = tiny_config(steps=150, batch_size=8, lr=3e-3, val_every=150, val_tasks=64,
                         eval_batch_size=32, checkpoint_every=None)
    val = tasks.fixed_set(config.val_tasks, config.eval_batch_size, config.val_seed)
    model = fresh_model()
    before = evaluate(model, val).summary()["loglik"]
    result = train(model, tasks, config, tmp_path, val_set=val, progress=False, log=False)
    after = evaluate(model, val).summary()["loglik"]
    assert after > before + 0.5, (before, after)
    assert result.best_val == pytest.approx(after)


class Crash(RuntimeError):
    pass


def _crash_at(at: int):
    def callback(step, loss):
        if step == at:
            raise Crash(f"simulated crash at step {step}")
    return callback


def test_resume_after_crash_is_bit_identical(tmp_path):
    tasks, config = SineTasks(), tiny_config(steps=20, checkpoint_every=10)
    reference = train(fresh_model(), tasks, config, tmp_path / "a", progress=False, log=False)

    interrupted = fresh_model()
    with pytest.raises(Crash):
        train(interrupted, tasks, config, tmp_path / "b", progress=False, log=False,
              callback=_crash_at(15))
    assert load_checkpoint(tmp_path / "b" / "last.pt").step == 10
    torch.manual_seed(12345)  # the resumed run must not depend on the caller's RNG
    resumed = train(fresh_model(seed=99), tasks, config, tmp_path / "b", progress=False,
                    log=False)

    assert resumed.resumed_from == 10 and resumed.step == 20
    for (name, p), q in zip(reference.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    assert resumed.history["train"] == reference.history["train"]
    assert resumed.history["val"]["loglik"] == reference.history["val"]["loglik"]


def test_larger_steps_extends_a_finished_run(tmp_path):
    tasks = SineTasks()
    reference = train(fresh_model(), tasks, tiny_config(steps=20), tmp_path / "a",
                      progress=False, log=False)
    train(fresh_model(), tasks, tiny_config(steps=10), tmp_path / "b", progress=False, log=False)
    extended = train(fresh_model(), tasks, tiny_config(steps=20), tmp_path / "b",
                     progress=False, log=False)
    for p, q in zip(reference.model.parameters(), extended.model.parameters()):
        assert torch.equal(p, q)


def test_validation_schedule_does_not_change_training(tmp_path):
    tasks = SineTasks()
    often = train(fresh_model(), tasks, tiny_config(val_every=2), tmp_path / "a",
                  progress=False, log=False)
    never = train(fresh_model(), tasks, tiny_config(val_every=0), tmp_path / "b",
                  progress=False, log=False)
    for p, q in zip(often.model.parameters(), never.model.parameters()):
        assert torch.equal(p, q)


def test_run_directory_files(tmp_path):
    result = train(fresh_model(), SineTasks(), tiny_config(steps=20), tmp_path, progress=False,
                   log=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["train"]["step"] == [5, 10, 15, 20]
    assert history["val"]["step"] == [10, 20]
    vals = history["val"]["loglik"]
    assert history["best_val"] == max(vals)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best.step == history["val"]["step"][vals.index(max(vals))] == result.best_step
    last = load_checkpoint(tmp_path / "last.pt")
    assert last.step == 20 and last.optimizer_state is not None and len(last.rng_states) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "history.json", "last.pt"]


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    model = fresh_model()

    def poison(step, loss):
        if step == 12:
            with torch.no_grad():
                model.decoder[-1].bias.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="step 13"):
        train(model, SineTasks(), tiny_config(), tmp_path, progress=False, log=False,
              callback=poison)
    assert load_checkpoint(tmp_path / "last.pt").step == 10


def test_evaluate_leaves_global_rng_untouched():
    model, val = fresh_model(), SineTasks().fixed_set(8, 4, seed=1)
    state = torch.get_rng_state()
    evaluate(model, val)
    assert torch.equal(state, torch.get_rng_state())


def test_plain_progress_lines():
    stream = io.StringIO()
    bar = Progress(100, stream=stream, use_tqdm=False, min_interval_s=0.0)
    for step in range(1, 101):
        bar.update(step, loss=1.0 / step)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and lines[-1].startswith("train: step 100/100")


EXPERIMENT = {
    "name": "sine",
    "task": {"name": "eq", "dim_x": 1, "options": {"noise": 0.1}},
    "models": [{"label": "CNP", "name": "cnp", "options": {"width": 64}},
               {"label": "TE", "name": "te-tnp", "train": {"lr": "1e-4"}}],
    "train": {"grad_clip": 1.0},
    "sizes": {"quick": {"steps": 50, "model_options": {"num_layers": 2},
                        "models": {"TE": {"train": {"steps": 30}, "options": {"width": 16}}},
                        "task": {"noise": 0.2}},
              "paper": {"steps": 200000}},
}


def test_experiment_sizes_and_overrides():
    quick = experiment_from_dict(EXPERIMENT, "quick")
    assert quick.sizes == ("quick", "paper") and quick.task.options == {"noise": 0.2}
    assert quick.model("CNP").options == {"width": 64, "num_layers": 2}
    assert quick.model("CNP").train == TrainConfig(steps=50, grad_clip=1.0)
    assert quick.model("TE").options == {"num_layers": 2, "width": 16}
    assert quick.model("TE").train == TrainConfig(steps=30, grad_clip=1.0, lr=1e-4)
    paper = experiment_from_dict(EXPERIMENT, "paper")
    assert paper.train.steps == 200000 and paper.model("CNP").options == {"width": 64}


def test_experiment_yaml_round_trip(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT))
    loaded = load_experiment(path, "quick")
    assert loaded.source == str(path)
    save_experiment(loaded, tmp_path / "resolved.yaml")
    again = load_experiment(tmp_path / "resolved.yaml", "quick")
    assert again.to_dict() == loaded.to_dict()


@pytest.mark.parametrize("bad, wrong", [
    ({"modles": []}, "modles"),
    ({"train": {"step": 5}}, "step"),
    ({"sizes": {"quick": {"stpes": 5}}}, "stpes"),
    ({"models": [{"name": "cnp", "optoins": {}}]}, "optoins"),
    ({"task": {"name": "eq", "dimx": 2}}, "dimx"),
])
def test_unknown_keys_name_the_key_and_file(tmp_path, bad, wrong):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**EXPERIMENT, **bad}))
    with pytest.raises(ConfigError, match=rf"{path}.*'{wrong}'"):
        load_experiment(path, "quick")


def test_unknown_size_and_bad_types():
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        experiment_from_dict(EXPERIMENT, "huge")
    with pytest.raises(ConfigError, match="steps"):
        experiment_from_dict({**EXPERIMENT, "train": {"steps": "many"}})
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_without_validation_best_is_the_final_model(tmp_path):
    result = train(fresh_model(), SineTasks(), tiny_config(val_every=0), tmp_path,
                   progress=False, log=False)
    best = load_checkpoint(tmp_path / "best.pt")
    assert result.best_val is None and best.step == result.best_step == 20
    for p, q in zip(result.model.state_dict().values(), best.model_state.values()):
        assert torch.equal(p, q)


def test_resuming_into_a_run_of_another_model_is_refused(tmp_path):
    train(fresh_model(), SineTasks(), tiny_config(steps=5), tmp_path, progress=False, log=False)
    with pytest.raises(RuntimeError, match="holds a different model"):
        train(TinyCNP(width=8), SineTasks(), tiny_config(steps=10), tmp_path, progress=False,
              log=False)
