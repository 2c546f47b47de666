"""`approxeq demo` pins its thread count, so the same command gives the same numbers."""

from __future__ import annotations

import json

import torch

from approxeq.cli import main

WALL_CLOCK = {"train_seconds", "seconds"}


def _without_wall_clock(obj):
    if isinstance(obj, dict):
        return {k: _without_wall_clock(v) for k, v in obj.items() if k not in WALL_CLOCK}
    if isinstance(obj, list):
        return [_without_wall_clock(v) for v in obj]
    return obj


def test_a_short_demo_twice_gives_bit_identical_metrics(tmp_path, capsys):
    threads = torch.get_num_threads()
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["demo", "--out", str(out), "--steps", "2", "--test-tasks", "4",
                     "--quiet", "--no-figures"]) == 0
        runs.append(json.loads((out / "metrics.json").read_text()))
    err = capsys.readouterr().err
    assert "1 thread(s)" in err and "on this machine" in err
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    assert set(runs[0]) == {"TNP", "ConvCNP", "ConvCNP-approx", "oracle"}
    # json floats round-trip exactly, so equality here is bit-identity
    assert _without_wall_clock(runs[0]) == _without_wall_clock(runs[1])
