"""``TrainConfig.fused_optimizer``: the fused AdamW is used when asked for, and trains as the
default one does up to float32 rounding."""

from __future__ import annotations

import pytest
import torch
from test_train_precision import FixedSizeSine, _config, _model

from approxeq.train import ConfigError, train


def test_fused_optimizer_is_checked():
    with pytest.raises(ConfigError, match="fused_optimizer: expected true or false, got 'yes'"):
        _config(fused_optimizer="yes")


def test_fused_optimizer_trains_like_the_default(tmp_path, monkeypatch):
    made = []
    adamw = torch.optim.AdamW

    def spy(*args, **kwargs):
        made.append(kwargs.get("fused"))
        return adamw(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    runs = [train(_model(), FixedSizeSine(), _config(fused_optimizer=fused), tmp_path / str(fused),
                  progress=False, log=False) for fused in (False, True)]
    assert made == [None, True]
    plain, fused = runs
    torch.testing.assert_close(fused.history["train"]["loss"], plain.history["train"]["loss"],
                               rtol=1e-5, atol=1e-6)
    for p, q in zip(plain.model.parameters(), fused.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
