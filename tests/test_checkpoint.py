"""Checkpoints and result files: round trips, atomic writes, rebuilding models from files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_train import TinyCNP

import approxeq.np.registry as registry
from approxeq.train import (
    ModelSpec,
    build_model_with_spec,
    load_checkpoint,
    load_model,
    save_checkpoint,
    write_json_atomic,
)


def trained_pair():
    model = TinyCNP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    xc, yc, xt = torch.randn(2, 5, 1), torch.randn(2, 5, 1), torch.randn(2, 7, 1)
    loss = -model(xc, yc, xt).log_prob(torch.zeros(2, 7, 1)).mean()
    loss.backward()
    optimizer.step()
    return model, optimizer


def test_checkpoint_round_trip(tmp_path):
    model, optimizer = trained_pair()
    rng = [{"torch": torch.get_rng_state(), "task": torch.Generator().manual_seed(5).get_state()}]
    save_checkpoint(tmp_path / "c.pt", model, optimizer=optimizer, step=7, rng_states=rng,
                    best_val=-0.5, best_step=6, history={"train": {"loss": [1.0, 0.5]}})
    other = TinyCNP()
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    ckpt = load_checkpoint(tmp_path / "c.pt", other, optimizer=other_opt)
    assert (ckpt.step, ckpt.best_val, ckpt.best_step) == (7, -0.5, 6)
    assert torch.equal(ckpt.rng_states[0]["torch"], rng[0]["torch"])
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(optimizer.state[p]["exp_avg"], other_opt.state[q]["exp_avg"])


def _failing_save(obj, f, *args, **kwargs):
    f.write(b"partial checkpoint bytes")
    raise OSError("disk full (simulated)")


def test_failed_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    model, _ = trained_pair()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, step=1)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path).step == 1


def test_failed_json_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"loglik": 1.5, "se": float("nan"), "per_task": torch.ones(2)})
    assert json.loads(path.read_text()) == {"loglik": 1.5, "se": None, "per_task": [1.0, 1.0]}

    def failing_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_json_atomic(path, {"loglik": 2.0})
    assert json.loads(path.read_text())["loglik"] == 1.5
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_load_model_rebuilds_from_spec(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "test-tiny-cnp",
                        lambda dim_x, dim_y, width=32: TinyCNP(width=width))
    model = build_model_with_spec("test-tiny-cnp", 1, 1, width=8)
    assert model.build_spec == ModelSpec("test-tiny-cnp", 1, 1, {"width": 8})
    save_checkpoint(tmp_path / "best.pt", model, step=3)
    rebuilt = load_model(tmp_path / "best.pt")
    assert not rebuilt.training and rebuilt.encoder[0].out_features == 8
    for p, q in zip(model.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(p, q)


def test_load_errors_are_readable(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not an approxeq checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    save_checkpoint(tmp_path / "anon.pt", TinyCNP())
    with pytest.raises(ValueError, match="no model build spec"):
        load_model(tmp_path / "anon.pt")
