"""Training options for speed on GPUs (and CPUs): mixed precision and ``torch.compile``."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from approxeq.data.base import TaskGenerator
from approxeq.np.batch import Batch
from approxeq.train import ConfigError, TrainConfig, evaluate, load_checkpoint, train
from approxeq.train.speed import StepRunner


class FixedSizeSine(TaskGenerator):
    """Sine tasks with 4 context and 8 target points (fixed shapes: one compilation)."""

    dim_x = 1
    dim_y = 1

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        x = torch.rand(batch_size, 12, 1, generator=generator) * 4 - 2
        phase = torch.rand(batch_size, 1, 1, generator=generator) * 3
        y = torch.sin(x - phase) + 0.1 * torch.randn(x.shape, generator=generator)
        return Batch(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])


class SmallCNP(nn.Module):
    """A CNP that notes, per call, whether autocast was on and the dtype of its hidden layer."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.symmetry = 1, 1, None
        self.encoder = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width))
        self.decoder = nn.Sequential(nn.Linear(width + 1, width), nn.ReLU(),
                                     nn.Linear(width, 2))
        self.calls: list[tuple[bool, bool, torch.dtype]] = []
        self.record = True

    def forward(self, xc, yc, xt):
        r = self.encoder(torch.cat([xc, yc], -1)).mean(1, keepdim=True)
        h = self.decoder(torch.cat([r.expand(-1, xt.shape[1], -1), xt], -1))
        if self.record:
            self.calls.append((self.training, torch.is_autocast_enabled("cpu"), h.dtype))
        return Normal(h[..., :1], nn.functional.softplus(h[..., 1:]) + 1e-3)


def _config(**overrides) -> TrainConfig:
    base = dict(steps=6, batch_size=4, val_every=3, val_tasks=4, eval_batch_size=4,
                log_every=3, device="cpu", lr=1e-3)
    return TrainConfig(**{**base, **overrides})


def _model() -> SmallCNP:
    torch.manual_seed(2)
    return SmallCNP()


def test_bf16_trains_under_autocast_and_evaluates_in_float32(tmp_path):
    model = _model()
    result = train(model, FixedSizeSine(), _config(precision="bf16"), tmp_path,
                   progress=False, log=False)
    losses = result.history["train"]["loss"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    training = [c for c in model.calls if c[0]]
    evaluation = [c for c in model.calls if not c[0]]
    assert len(training) == 6 and evaluation
    assert all(on and dtype == torch.bfloat16 for _, on, dtype in training)
    assert all(not on and dtype == torch.float32 for _, on, dtype in evaluation)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # the recorded validation score is the float32 one
    val = FixedSizeSine().fixed_set(4, 4, _config().val_seed)
    assert result.history["val"]["loglik"][-1] == pytest.approx(
        evaluate(model, val).summary()["loglik"], abs=1e-12)


def test_bf16_changes_the_trajectory_only_by_rounding(tmp_path):
    full = train(_model(), FixedSizeSine(), _config(), tmp_path / "a", progress=False,
                 log=False)
    half = train(_model(), FixedSizeSine(), _config(precision="bf16"), tmp_path / "b",
                 progress=False, log=False)
    pairs = list(zip(full.model.parameters(), half.model.parameters()))
    assert any(not torch.equal(p, q) for p, q in pairs)  # bf16 did run
    for p, q in pairs:
        torch.testing.assert_close(p, q, rtol=0.05, atol=0.02)


def test_fp16_uses_a_gradient_scaler_that_checkpoints_keep(tmp_path):
    try:
        StepRunner(nn.Linear(2, 2), torch.device("cpu"), precision="fp16")
    except ValueError as err:
        # torch builds without CPU fp16 autocast refuse it, naming the option
        assert "precision" in str(err)
        with pytest.raises(ValueError, match="precision"):
            train(_model(), FixedSizeSine(), _config(precision="fp16"), tmp_path,
                  progress=False, log=False)
        return
    result = train(_model(), FixedSizeSine(), _config(precision="fp16", checkpoint_every=3),
                   tmp_path, progress=False, log=False)
    assert all(torch.isfinite(torch.tensor(result.history["train"]["loss"])))
    scaler = load_checkpoint(tmp_path / "last.pt").extra["grad_scaler"]
    assert scaler["scale"] > 0


def test_unsupported_precision_is_refused_with_the_option_named(monkeypatch):
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="float16")
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig.from_dict({"compile": "yes"})
    with pytest.raises(ValueError, match="precision.*float32 model"):
        StepRunner(nn.Linear(2, 2).double(), torch.device("cpu"), precision="bf16")
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(ValueError, match="precision: 'bf16' is not supported on cpu"):
        StepRunner(nn.Linear(2, 2), torch.device("cpu"), precision="bf16")


def test_a_failing_compile_names_the_option(monkeypatch, tmp_path):
    def broken_compile(model, *args, **kwargs):
        raise RuntimeError("no backend")

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(RuntimeError, match="compile: torch.compile of the model failed"):
        train(_model(), FixedSizeSine(), _config(compile=True), tmp_path, progress=False,
              log=False)

    from torch._dynamo.exc import TorchRuntimeError

    def fails_when_called(model, *args, **kwargs):
        def call(*a, **k):
            raise TorchRuntimeError("inductor could not build a kernel")
        return call

    monkeypatch.setattr(torch, "compile", fails_when_called)
    with pytest.raises(RuntimeError, match="compile: the compiled model failed.*compile: false"):
        train(_model(), FixedSizeSine(), _config(compile=True), tmp_path / "b", progress=False,
              log=False)


def _compile_works() -> str | None:
    """Why ``torch.compile`` cannot run here, or ``None`` if it can."""
    if shutil.which("gcc") is None and shutil.which("cc") is None \
            and shutil.which("clang") is None:
        return "torch.compile on CPU needs a C/C++ compiler, and none is on PATH"
    try:
        fn = torch.compile(lambda t: t * 2 + 1)
        fn(torch.ones(3))
    except Exception as err:  # noqa: BLE001 -- any failure means the feature is unavailable
        return f"torch.compile does not work in this environment: {type(err).__name__}: {err}"
    return None


@pytest.mark.slow
def test_compiled_training_matches_eager_training(tmp_path):
    reason = _compile_works()
    if reason is not None:
        pytest.skip(reason)
    config = _config(steps=2, val_every=0, prefetch=0)
    eager_model, compiled_model = _model(), _model()
    eager_model.record = compiled_model.record = False  # no Python side effects in the graph
    eager = train(eager_model, FixedSizeSine(), config, tmp_path / "eager", progress=False,
                  log=False)
    compiled = train(compiled_model, FixedSizeSine(), config.replace(compile=True),
                     tmp_path / "compiled", progress=False, log=False)
    torch.testing.assert_close(compiled.history["train"]["loss"],
                               eager.history["train"]["loss"], rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    # checkpoints hold the plain model's parameter names
    assert set(load_checkpoint(tmp_path / "compiled" / "best.pt").model_state) == set(
        eager.model.state_dict())


def test_precision_enters_run_fingerprints_only_when_not_float32():
    from approxeq.experiments.np_runner import model_fingerprint
    from approxeq.train.checkpoint import ModelSpec

    spec = ModelSpec(name="cnp", dim_x=1, dim_y=1, options={})
    plain = model_fingerprint(spec, TrainConfig(), {"name": "eq"})
    assert "precision" not in plain["train"]  # fingerprints already on disk stay valid
    half = model_fingerprint(spec, TrainConfig(precision="bf16"), {"name": "eq"})
    assert half["train"]["precision"] == "bf16" and half != plain


@pytest.mark.parametrize("name", ["te-tnp", "te-pt-tnp", "e-tnp", "tnp", "convcnp"])
def test_models_step_under_bf16_autocast(name):
    """In-place products are not autocast: each model's step must still run in bf16."""
    from approxeq.np import build_model

    model = build_model(name, 2, 1)
    xc, yc, xt, yt = torch.randn(2, 10, 2), torch.randn(2, 10, 1), torch.randn(2, 5, 2), \
        torch.randn(2, 5, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = -model(xc, yc, xt).log_prob(yt).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
