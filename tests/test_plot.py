"""Figures: each plotting function draws what it is given and writes a PNG."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Normal

pytest.importorskip("matplotlib")

from approxeq.approximate import FixedInput  # noqa: E402
from approxeq.plot import (plot_ablation, plot_fixed_inputs, plot_model_1d,  # noqa: E402
                           plot_predictions_1d, plot_training_curves)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _ShiftByFixedInput(nn.Module):
    """Predicts N(t(x), 1): its equivariant component predicts N(0, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.t = FixedInput(1, 1, hidden=8, p=0.0)
        nn.init.constant_(self.t.mlp[-1].bias, 1.0)

    def forward(self, xc, yc, xt):
        mean = self.t(xt)
        return Normal(mean, torch.ones_like(mean))


def _is_png(path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC


def test_plot_predictions_1d_writes_png(tmp_path):
    x = torch.linspace(-4, 4, 50)
    fig = plot_predictions_1d(torch.rand(5), torch.randn(5), x,
                              {"a": (x.sin(), 0.1 + x.abs() / 10), "b": (x.cos(), torch.ones(50))},
                              xt=torch.rand(7), yt=torch.randn(7), truth=(x, x.sin()),
                              context_region=(-2, 2), path=tmp_path / "pred.png")
    assert _is_png(tmp_path / "pred.png")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"a mean", "b mean", "truth", "context", "targets"} <= set(labels)


def test_plot_predictions_1d_rejects_mismatched_shapes():
    x = torch.linspace(-1, 1, 10)
    with pytest.raises(ValueError, match="predictions"):
        plot_predictions_1d(torch.rand(3), torch.rand(3), x, (torch.zeros(9), torch.ones(9)))


def test_plot_model_1d_draws_equivariant_component(tmp_path):
    model = _ShiftByFixedInput()
    x = torch.linspace(-3, 3, 40)
    fig = plot_model_1d(model, torch.zeros(2, 1), torch.zeros(2, 1), x, label="ae",
                        with_component=True, path=tmp_path / "ae.png")
    assert _is_png(tmp_path / "ae.png")
    lines = {ln.get_label(): ln.get_ydata() for ln in fig.axes[0].get_lines()}
    full, comp = lines["ae mean"], lines["ae, fixed inputs = 0 mean"]
    assert abs(comp).max() == 0.0 and abs(full).max() > 0.0


def test_plot_fixed_inputs_writes_png_and_needs_fixed_inputs(tmp_path):
    plot_fixed_inputs(_ShiftByFixedInput(), path=tmp_path / "t.png")
    assert _is_png(tmp_path / "t.png")
    with pytest.raises(ValueError, match="no fixed inputs"):
        plot_fixed_inputs(nn.Linear(1, 1))


def test_plot_training_curves_from_records_and_jsonl(tmp_path):
    records = [{"step": s, "train_loss": 1.0 / (s + 1), "val_loglik": -1.0 + s / 100}
               for s in range(0, 50, 10)]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(__import__("json").dumps(r) for r in records))
    fig = plot_training_curves({"a": records, "b": log}, path=tmp_path / "curves.png")
    assert _is_png(tmp_path / "curves.png")
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="no numeric"):
        plot_training_curves([{"step": 1}])


def test_plot_ablation_draws_one_series_per_group(tmp_path):
    metrics = {f"B{b}": {"id": {"loglik": -1.0 + b / 10, "loglik_se": 0.01}} for b in (0, 1, 2)}
    fig = plot_ablation(metrics, {"p = 0": [(0, "B0"), (1, "B1"), (2, "B2")],
                                  "missing": [(4, "B4")]}, path=tmp_path / "abl.png")
    assert _is_png(tmp_path / "abl.png")
    assert fig.axes[0].get_legend_handles_labels()[1] == ["p = 0"]
    ys = fig.axes[0].get_lines()[0].get_ydata()
    assert list(ys) == pytest.approx([-1.0, -0.9, -0.8])


def test_missing_matplotlib_gives_an_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r"approxeq\[plot\]"):
        plot_predictions_1d(torch.rand(2), torch.rand(2), torch.rand(3),
                            (torch.zeros(3), torch.ones(3)))
