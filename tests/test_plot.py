"""Figures: each plotting function draws what it is given and writes a PNG."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Normal

pytest.importorskip("matplotlib")

from approxeq.approximate import FixedInput  # noqa: E402
from approxeq.plot import (  # noqa: E402
    plot_ablation,
    plot_fixed_inputs,
    plot_model_1d,
    plot_predictions_1d,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


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


# --------------------------------------------------------------------------------------------
# Figures a reader can follow: a labelled context window, both full model and component
# visible, the oracle's interval, legends off the lines, the checkpoint used, captions.
# --------------------------------------------------------------------------------------------

def _legend_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _caption(fig) -> str:
    return " ".join(" ".join(t.get_text().split()) for t in fig.texts)  # unwrapped


def test_context_window_is_shaded_and_labelled_not_dotted_lines():
    x = torch.linspace(-4, 4, 50)
    fig = plot_predictions_1d(torch.rand(5), torch.randn(5), x, (x.sin(), torch.ones(50)),
                              context_region=(-2, 2))
    ax = fig.axes[0]
    assert "context window" in _legend_labels(ax)
    spans = [p for p in ax.patches if p.get_label() == "context window"]
    assert len(spans) == 1
    xs = spans[0].get_patch_transform().transform(spans[0].get_path().vertices)[:, 0]
    assert (xs.min(), xs.max()) == pytest.approx((-2.0, 2.0))
    assert "context window" in [t.get_text() for t in ax.texts]
    assert not [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]


def test_truth_interval_is_mean_plus_minus_1_96_std():
    x = torch.linspace(-1, 1, 20)
    std = 0.1 + x.abs()
    fig = plot_predictions_1d(torch.rand(2), torch.rand(2), x, (x, torch.ones(20)),
                              truth=(x, x.cos()), truth_std=std, truth_label="GP oracle mean")
    labels = _legend_labels(fig.axes[0])
    assert "GP oracle mean" in labels and "GP oracle 95% interval" in labels
    edges = [ln for ln in fig.axes[0].get_lines() if ln.get_color() == "#555555"]
    assert len(edges) == 2 and edges[0].get_label() == "GP oracle 95% interval"
    bands = sorted((ln.get_ydata() for ln in edges), key=lambda y: y.sum())
    assert bands[0] == pytest.approx((x.cos() - 1.96 * std).double().numpy())
    assert bands[1] == pytest.approx((x.cos() + 1.96 * std).double().numpy())
    with pytest.raises(ValueError, match="truth_std"):
        plot_predictions_1d(torch.rand(2), torch.rand(2), x, (x, torch.ones(20)),
                            truth=(x, x.cos()), truth_std=std[:5])


def test_component_is_dashed_and_drawn_over_the_full_model():
    model = _ShiftByFixedInput()
    fig = plot_model_1d(model, torch.zeros(2, 1), torch.zeros(2, 1), torch.linspace(-3, 3, 40),
                        label="ae", with_component=True)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    full, comp = lines["ae mean"], lines["ae, fixed inputs = 0 mean"]
    assert full.get_linestyle() == "-" and comp.get_linestyle() != "-"
    assert comp.get_zorder() > full.get_zorder()
    assert full.get_color() != comp.get_color()
    assert "equivariant component" in _caption(fig)


def test_task_comparison_shows_oracle_interval_component_and_caption(tmp_path):
    from approxeq.data import gp_task
    from approxeq.plot import plot_task_comparison

    batch = gp_task("eq").sample(2, torch.Generator().manual_seed(0))
    fig = plot_task_comparison({"ae": _ShiftByFixedInput()}, batch,
                               context_region=(-2, 2), title="t", path=tmp_path / "cmp.png")
    assert _is_png(tmp_path / "cmp.png")
    labels = _legend_labels(fig.axes[0])
    for expected in ("context window", "ae mean", "equivariant component mean",
                     "GP oracle mean", "GP oracle 95% interval", "context", "targets"):
        assert expected in labels
    caption = _caption(fig)
    assert "oracle" in caption and "context window" in caption and "component" in caption


def test_fixed_input_legend_sits_outside_the_lines(tmp_path):
    fig = plot_fixed_inputs(_ShiftByFixedInput(), (-3, 3), path=tmp_path / "t.png")
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend_box = ax.get_legend().get_window_extent(renderer)
    assert legend_box.x0 >= ax.get_window_extent(renderer).x1
    assert "fixed-input window (t = 0 outside)" in _legend_labels(ax)
    assert "zero outside the shaded window" in _caption(fig)


def _stars(ax) -> list[tuple[float, float]]:
    return sorted(tuple(float(v) for v in c.get_offsets()[0]) for c in ax.collections
                  if (c.get_gid() or "").startswith("checkpoint:"))


def test_training_curves_mark_the_checkpoint_used():
    # the column-wise history.json of train(): its best_step wins over the curve's maximum
    history = {"best_step": 20, "train": {"step": [10, 20, 30], "loss": [1.0, 0.8, 0.7]},
               "val": {"step": [10, 20, 30], "loglik": [-1.0, -0.5, -0.6]}}
    records = [{"step": s, "val_loglik": v} for s, v in [(10, -2.0), (20, -1.0), (30, -1.0)]]
    fig = plot_training_curves({"a": history, "b": records})
    loss_ax, val_ax = fig.axes
    # "b" has no best_step: its first maximum (train keeps only strict improvements)
    assert _stars(val_ax) == [(20.0, -1.0), (20.0, -0.5)]
    assert _stars(loss_ax) == [(20.0, 0.8)]
    assert any("checkpoint used" in t for t in _legend_labels(val_ax))
    assert "a step 20" in _caption(fig) and "b step 20" in _caption(fig)
    # an explicit choice overrides, None removes the mark
    fig = plot_training_curves({"a": history, "b": records}, best_steps={"a": 30, "b": None})
    assert _stars(fig.axes[1]) == [(30.0, -0.6)]


def test_every_figure_has_a_caption(tmp_path):
    x = torch.linspace(-1, 1, 10)
    records = [{"step": s, "train_loss": 1.0 / s} for s in (1, 2, 3)]
    metrics = {"B1": {"id": {"loglik": -1.0, "loglik_se": 0.1}}}
    figs = [plot_predictions_1d(x, x, x, (x, x.abs() + 0.1), caption="what it shows"),
            plot_model_1d(_ShiftByFixedInput(), torch.zeros(2, 1), torch.zeros(2, 1), x,
                          with_component=True),
            plot_fixed_inputs(_ShiftByFixedInput()),
            plot_training_curves(records),
            plot_ablation(metrics, {"p": [(1, "B1")]})]
    for fig in figs:
        assert len(_caption(fig)) > 10, fig
    assert plot_ablation(metrics, {"p": [(1, "B1")]}).axes[0].get_title()
