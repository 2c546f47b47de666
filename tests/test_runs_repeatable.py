"""Runs are repeatable: each model is built from a seed of its own (experiment seed and label),
so two identical runs agree bit for bit and ``only`` does not change other models; ``steps``
overrides every model's step count."""

from __future__ import annotations

import json

import pytest
import torch

from approxeq.experiments import model_seed, run_experiment, with_steps
from approxeq.experiments.schema import experiment_from_dict
from approxeq.train.checkpoint import load_checkpoint

TNP = {"width": 8, "num_layers": 1, "num_heads": 2}


def two_models(steps: int = 4) -> dict:
    return {
        "name": "two",
        "task": {"name": "eq", "options": {"num_context": [2, 6], "num_target": 8}},
        "models": [{"label": "A", "name": "tnp", "options": dict(TNP)},
                   {"label": "B", "name": "tnp", "options": dict(TNP)}],
        "train": {"steps": steps, "val_every": 2, "val_tasks": 4, "test_tasks": 8,
                  "eval_batch_size": 4, "device": "cpu"},
        "extra": {"ood_shift": None, "equivariance_elements": 0, "figures": False},
    }


def _model_entries(out) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    return {label: {k: v for k, v in entry.items() if k != "train_seconds"}
            for label, entry in metrics.items() if label != "oracle"}


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    # the global RNG is disturbed before the run: the result must not depend on it
    torch.manual_seed(1234)
    torch.rand(17)
    run_experiment(experiment_from_dict(two_models()), out, progress=False, log=lambda m: None)
    return out


def test_two_identical_runs_give_identical_metrics_and_checkpoints(full_run, tmp_path):
    torch.manual_seed(99)
    run_experiment(experiment_from_dict(two_models()), tmp_path, progress=False,
                   log=lambda m: None)
    assert _model_entries(tmp_path) == _model_entries(full_run)
    for label in ("A", "B"):
        a, b = _weights(full_run / label / "best.pt"), _weights(tmp_path / label / "best.pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_only_does_not_change_the_other_models(full_run, tmp_path):
    run_experiment(experiment_from_dict(two_models()), tmp_path, progress=False,
                   log=lambda m: None, only=["B"])
    assert set(_model_entries(tmp_path)) == {"B"}
    assert _model_entries(tmp_path)["B"] == _model_entries(full_run)["B"]


def test_models_with_the_same_options_start_from_different_weights(full_run):
    a, b = _weights(full_run / "A" / "best.pt"), _weights(full_run / "B" / "best.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_model_seed_is_stable_and_label_dependent():
    # a fixed value: the seed must not change between processes or Python versions
    assert model_seed(0, "A") == model_seed(0, "A")
    assert model_seed(0, "A") != model_seed(0, "B") != model_seed(1, "B")
    assert 0 <= model_seed(7, "ConvCNP-approx") < 2**63
    assert model_seed(0, "A") == int.from_bytes(
        __import__("hashlib").sha256(b"0/A").digest()[:8], "little") & (2**63 - 1)


def test_steps_override_every_model_and_keep_intervals_sane():
    data = two_models(steps=500)
    data["train"].update(val_every=100, checkpoint_every=200)
    data["models"][1]["train"] = {"steps": 800}
    config = with_steps(experiment_from_dict(data), 3)
    for m in config.models:
        assert m.train.steps == 3 and m.train.val_every == 3 and m.train.checkpoint_every == 3
    assert config.train.steps == 3
    assert with_steps(config, None) is config
    with pytest.raises(ValueError, match="steps: expected a positive int, got 0"):
        with_steps(config, 0)
