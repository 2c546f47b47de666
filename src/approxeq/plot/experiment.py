"""The figures of an experiment run: predictions on an ID and an OOD task, fixed inputs and
training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxeq.approximate import FixedInput, is_approximate, symmetry_breaking_modules
from approxeq.np.batch import Batch
from approxeq.plot._mpl import BLUE, VERMILLION, add_caption, finish, pyplot
from approxeq.plot.fixed_inputs import plot_fixed_inputs
from approxeq.plot.predictions import plot_predictions_1d, predict_1d
from approxeq.plot.training import plot_training_curves

_SETTING_NAMES = {"id": "a task in distribution (ID)",
                  "ood": "a task out of distribution (OOD: inputs shifted)"}


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


@torch.no_grad()
def oracle_curve(batch: Batch, task_index: int, x: torch.Tensor) -> tuple | None:
    """The GP oracle's (moment-matched) predictive mean and std of one task on the grid ``x``
    ``[n]``, or ``None`` if the batch carries no oracle (``meta["oracle"]``)."""
    oracle = (batch.meta or {}).get("oracle")
    if oracle is None or not hasattr(oracle, "posterior"):
        return None
    i = task_index
    post = oracle.posterior(batch.xc[i:i + 1].double(), batch.yc[i:i + 1].double(),
                            x.reshape(1, -1, 1).double())
    return post.mean[0, :, 0], post.var[0, :, 0].clamp_min(0).sqrt()


def _comparison_caption(has_oracle: bool, has_component: bool, has_window: bool) -> str:
    parts = [("Each panel: one model on the same task. Solid line and shaded band: the model's "
              "predictive mean and 95% interval.")]
    if has_component:
        parts.append("Dashed vermillion (approximately equivariant models): the equivariant "
                     "component, the same model with every fixed input zero (dotted: its 95% "
                     "interval); where it coincides with the full model, the fixed inputs change "
                     "nothing there.")
    if has_oracle:
        parts.append("Black dotted: the GP oracle's mean (the best possible prediction), with "
                     "its 95% interval dash-dotted.")
    parts.append("Black dots: context points; grey crosses: targets.")
    if has_window:
        parts.append("Grey band: the context window, where this setting's context points lie.")
    return " ".join(parts)


def plot_task_comparison(models: Mapping[str, nn.Module], batch: Batch, *, task_index: int = 0,
                         x_range: Sequence[float] = (-4.0, 4.0), n: int = 300,
                         context_region: Sequence[float] | None = None, title: str = "",
                         path: str | Path | None = None, caption: str | None = None) -> Any:
    """One panel per model on the same 1-D task: predictive mean and 95% interval, context
    points, targets, the context window (shaded) and, when the batch carries a GP oracle, the
    oracle's mean and 95% interval. Approximately equivariant models are drawn with their
    fixed inputs (solid blue) and with every fixed input zero (dashed vermillion, on top).

    Shapes: ``batch`` holds 1-D tasks (``dim_x = dim_y = 1``); ``task_index`` picks one.
    ``caption``: text under the panels (default: a key to everything drawn; ``""``: none).
    """
    from approxeq.approximate import equivariant_component

    plt = pyplot()
    if not models:
        raise ValueError("models: expected at least one model, got none")
    if batch.dim_x != 1 or batch.dim_y != 1:
        raise ValueError(f"batch: task comparisons are 1-D plots; got dim_x = {batch.dim_x}, "
                         f"dim_y = {batch.dim_y}")
    i = task_index
    x = torch.linspace(float(x_range[0]), float(x_range[1]), n)
    oracle = oracle_curve(batch, i, x)
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 2.6 * len(models)), sharex=True,
                             squeeze=False)
    xc, yc = batch.xc[i, :, 0], batch.yc[i, :, 0]
    mt = batch.mt[i] if batch.mt is not None else slice(None)
    xt, yt = batch.xt[i, :, 0][mt], batch.yt[i, :, 0][mt]
    any_component = False
    for ax, (label, model) in zip(axes[:, 0], models.items()):
        preds = {label: predict_1d(model, xc[:, None], yc[:, None], x)}
        colors = [BLUE]
        if is_approximate(model):
            with equivariant_component(model):
                preds["equivariant component"] = predict_1d(model, xc[:, None], yc[:, None], x)
            colors.append(VERMILLION)
            any_component = True
        plot_predictions_1d(xc, yc, x, preds, xt=xt, yt=yt,
                            truth=(x, oracle[0]) if oracle is not None else None,
                            truth_std=oracle[1] if oracle is not None else None,
                            truth_label="GP oracle mean",
                            context_region=context_region, colors=colors, ax=ax)
        ax.set_title(label, fontsize=10, loc="left")
        if ax is not axes[-1, 0]:
            ax.set_xlabel("")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if caption is None:
        caption = _comparison_caption(oracle is not None, any_component,
                                      context_region is not None)
    add_caption(fig, caption)
    return finish(fig, path)


def experiment_figures(out_dir: str | Path, config: Any, models: Mapping[str, nn.Module],
                       test_sets: Mapping[str, Sequence[Batch]], histories: Mapping[str, dict],
                       *, task_index: int = 0, metrics: Mapping[str, Any] | None = None,
                       context_regions: Mapping[str, tuple[float, float] | None] | None = None,
                       ood_shift: float | Sequence[float] | None = None) -> list[Path]:
    """Write the figures of an experiment run into ``out_dir/figures`` and return their paths:

    * ``predictions_<setting>.png`` (1-D tasks only): every model on the same task of each
      test setting (ID, OOD), approximate models with and without their fixed inputs;
    * ``fixed_inputs_<label>.png`` (1-D only): the learned ``t(x)`` of every model with fixed
      inputs;
    * ``training_curves.png``: training loss and validation log-likelihood of every model;
    * ``ablation_<setting>.png`` when ``extra.ablation`` is given (``{parameter: str, series:
      [{name: str, points: [[x, label], ...]}, ...]}``): log-likelihood against ``x``.

    ``config`` is an :class:`approxeq.experiments.ExperimentConfig` (its ``extra.plot_range``
    sets the x range of the ID plots; OOD plots are shifted by ``ood_shift``). ``metrics``: the
    run's ``metrics.json`` content (the ablation figures read it). ``context_regions``: the
    context window of each test setting, shaded in the prediction figures. The GP study draws
    its figures with this function.
    """
    import matplotlib

    pyplot()  # the backend is chosen before any figure
    fig_dir = Path(out_dir) / "figures"
    extra = getattr(config, "extra", {}) or {}
    paths: list[Path] = []
    if config.task.dim_x == 1 and config.task.dim_y == 1 and models:
        paths += _prediction_figures(fig_dir, config, models, test_sets, task_index,
                                     context_regions or {}, ood_shift)
        paths += _fixed_input_figures(fig_dir, models, extra.get("plot_range"))
    ablation = extra.get("ablation")
    if ablation and metrics:
        paths += _ablation_figures(fig_dir, config, ablation, metrics, test_sets)
    runs = {label: h for label, h in histories.items() if h}
    if runs:
        paths += _training_curves_figure(fig_dir, config, runs)
    matplotlib.pyplot.close("all")
    return paths


def _prediction_figures(fig_dir: Path, config: Any, models: Mapping[str, nn.Module],
                        test_sets: Mapping[str, Sequence[Batch]], task_index: int,
                        context_regions: Mapping[str, tuple[float, float] | None],
                        shift: float | Sequence[float] | None) -> list[Path]:
    """``predictions_<setting>.png``: every model on the same task of each test setting."""
    plt = pyplot()
    base_range = (getattr(config, "extra", {}) or {}).get("plot_range")
    paths = []
    for setting, batches in test_sets.items():
        batch = batches[0]
        if base_range is not None:
            lo, hi = (float(v) for v in base_range)
        else:
            lo, hi = float(batch.xt[..., 0].min()), float(batch.xt[..., 0].max())
        if setting == "ood" and base_range is not None and shift is not None:
            s = float(shift if not isinstance(shift, (list, tuple)) else shift[0])
            lo, hi = lo + s, hi + s
        path = fig_dir / f"predictions_{setting}.png"
        setting_name = _SETTING_NAMES.get(setting, setting)
        fig = plot_task_comparison(models, batch, task_index=task_index, x_range=(lo, hi),
                                   context_region=context_regions.get(setting),
                                   title=f"{config.name}: {setting_name}",
                                   path=path)
        plt.close(fig)
        paths.append(path)
    return paths


def _fixed_input_figures(fig_dir: Path, models: Mapping[str, nn.Module],
                         base_range: Sequence[float] | None) -> list[Path]:
    """``fixed_inputs_<label>.png``: the learned ``t(x)`` of every model with fixed inputs."""
    plt = pyplot()
    paths = []
    for label, model in models.items():
        if any(isinstance(m, FixedInput) for m in symmetry_breaking_modules(model)):
            lo, hi = (float(v) for v in (base_range or (-4.0, 4.0)))
            path = fig_dir / f"fixed_inputs_{_safe(label)}.png"
            fig = plot_fixed_inputs(model, (lo, hi), path=path,
                                    title=f"{label}: learned fixed inputs t(x)")
            plt.close(fig)
            paths.append(path)
    return paths


def _ablation_figures(fig_dir: Path, config: Any, ablation: Mapping[str, Any],
                      metrics: Mapping[str, Any], test_sets: Mapping[str, Sequence[Batch]]
                      ) -> list[Path]:
    """``ablation_<setting>.png``: log-likelihood against the ablated value, per series."""
    plt = pyplot()
    groups = {s["name"]: [tuple(p) for p in s["points"]] for s in ablation.get("series", [])}
    paths = []
    for setting in test_sets:
        path = fig_dir / f"ablation_{setting}.png"
        fig = plot_ablation(metrics, groups, setting=setting,
                            xlabel=ablation.get("parameter", "ablated value"), path=path,
                            title=f"{config.name}: {setting.upper()} log-likelihood "
                                  f"against {ablation.get('parameter', 'ablated value')}")
        plt.close(fig)
        paths.append(path)
    return paths


def _training_curves_figure(fig_dir: Path, config: Any, runs: Mapping[str, dict]
                            ) -> list[Path]:
    """``training_curves.png`` (none when the histories hold nothing to draw)."""
    path = fig_dir / "training_curves.png"
    try:
        fig = plot_training_curves(runs, keys=["train_loss", "val_loglik"],
                                   title=f"{config.name}: training curves", path=path)
    except ValueError:
        return []
    pyplot().close(fig)
    return [path]


def plot_ablation(metrics: Mapping[str, Mapping[str, Any]], groups: Mapping[str, Sequence[tuple]],
                  *, setting: str = "id", xlabel: str = "number of fixed-input channels B",
                  path: str | Path | None = None, title: str | None = None,
                  caption: str | None = None) -> Any:
    """Log-likelihood ± s.e. against an ablated quantity.

    Args:
        metrics: ``metrics.json`` content (label → entry with per-setting dicts).
        groups: ``{series name: [(x value, model label), ...]}``, e.g. one series per model
            family and dropout probability.
        setting: ``"id"`` or ``"ood"``.
        path: save a PNG there.
        title: axes title (default: the setting and the ablated quantity).
        caption: text under the figure (default: what points and bars are; ``""``: none).
    """
    from approxeq.plot._mpl import PALETTE

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (name, points) in enumerate(groups.items()):
        xs, ys, es = [], [], []
        for xv, label in points:
            entry = metrics.get(label, {}).get(setting)
            if entry:
                xs.append(float(xv))
                ys.append(entry["loglik"])
                es.append(entry.get("loglik_se") or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, color=PALETTE[i % len(PALETTE)], marker="o", ms=4,
                        capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"log-likelihood ({setting.upper()})")
    ax.set_title(title if title is not None else
                 f"{'in' if setting == 'id' else 'out of'} distribution: log-lik against "
                 f"{xlabel}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    if caption is None:
        caption = ("Mean log-likelihood per target point on the test tasks (higher is "
                   "better), one point per trained model; bars: ± one standard error over "
                   "tasks.")
    add_caption(fig, caption)
    return finish(fig, path)
