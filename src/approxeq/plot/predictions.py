"""1-D predictive distributions against context points and the truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from approxeq.nn.placement import model_dtype
from approxeq.plot._mpl import (
    BLACK,
    BLUE,
    GREY,
    PALETTE,
    VERMILLION,
    add_caption,
    finish,
    pyplot,
    shade_window,
    to_numpy,
)

Prediction = tuple[Tensor, Tensor]


def plot_predictions_1d(
    xc: Tensor, yc: Tensor, x: Tensor, predictions: Mapping[str, Prediction] | Prediction, *,
    xt: Tensor | None = None, yt: Tensor | None = None, truth: Prediction | None = None,
    context_region: Sequence[float] | None = None, title: str | None = None,
    colors: Sequence[str] | None = None, ax: Any = None,
    path: str | os.PathLike | None = None, truth_std: Tensor | None = None,
    truth_label: str = "truth", caption: str | None = None, legend: bool = True,
) -> Any:
    """Predictive mean and central 95% interval of one 1-D task.

    The first prediction is drawn as a solid line over a shaded band; later ones (say the
    equivariant component of the first) as dashed lines on top, with their intervals as dotted
    edges, so that a prediction equal to the first still shows both.

    Args:
        xc, yc: context points of one task, ``[n_context]`` or ``[n_context, 1]``.
        x: locations the predictions are given at, ``[n]`` (sorted for a smooth line).
        predictions: ``{label: (mean, std)}`` with ``mean, std`` of shape ``[n]``, or one
            ``(mean, std)`` pair (labelled "model").
        xt, yt: optional target points, ``[n_target]``, drawn as small crosses.
        truth: optional ``(x_true, f_true)`` curve (e.g. the oracle's mean), ``[m]`` each,
            drawn dotted black.
        context_region: optional ``(low, high)`` of the training-context window, shaded and
            labelled.
        title: axes title. colors: one colour per prediction (default Okabe–Ito).
        ax: draw into this matplotlib axes instead of a new figure.
        path: save the figure as PNG here.
        truth_std: optional standard deviation of the truth's predictive at ``x_true``,
            ``[m]``: its 95% interval is drawn as thin dotted black lines.
        truth_label: the legend name of the truth (e.g. ``"GP oracle"``).
        caption: text under the figure that explains it (only for a new figure).
        legend: draw the legend (outside the axes, on the right).

    Returns:
        The matplotlib ``Figure``.
    """
    plt = pyplot()
    if isinstance(predictions, tuple):
        predictions = {"model": predictions}
    if not predictions:
        raise ValueError("predictions: expected at least one (mean, std) pair, got none")
    colors = list(colors or PALETTE)
    new_figure = ax is None
    if new_figure:
        fig, ax = plt.subplots(figsize=(7, 3.2))
    else:
        fig = ax.figure
    xs = to_numpy(x).reshape(-1)
    order = xs.argsort()
    if context_region is not None:
        shade_window(ax, context_region)
    for i, (label, prediction) in enumerate(predictions.items()):
        _draw_prediction(ax, i, label, prediction, xs, order, colors[i % len(colors)])
    if truth is not None:
        _draw_truth(ax, truth, truth_std, truth_label)
    if xt is not None and yt is not None:
        ax.scatter(to_numpy(xt).reshape(-1), to_numpy(yt).reshape(-1), marker="x", s=12,
                   color=GREY, lw=0.8, label="targets", zorder=7)
    ax.scatter(to_numpy(xc).reshape(-1), to_numpy(yc).reshape(-1), s=18, color=BLACK,
               label="context", zorder=8)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_xlim(xs.min(), xs.max())
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    if new_figure:
        add_caption(fig, caption)
    return finish(fig, path)


def _draw_prediction(ax: Any, i: int, label: str, prediction: Prediction, xs: Any, order: Any,
                     c: str) -> None:
    """The ``i``-th prediction: the first solid over a shaded band, later ones dashed."""
    mean, std = prediction
    m, s = to_numpy(mean).reshape(-1), to_numpy(std).reshape(-1)
    if m.shape != xs.shape or s.shape != xs.shape:
        raise ValueError(f"predictions[{label!r}]: expected mean and std of shape {xs.shape} "
                         f"(as x), got {m.shape} and {s.shape}")
    lo, hi = (m - 1.96 * s)[order], (m + 1.96 * s)[order]
    if i == 0:
        ax.plot(xs[order], m[order], color=c, lw=2.2, label=f"{label} mean", zorder=2)
        ax.fill_between(xs[order], lo, hi, color=c, alpha=0.18, lw=0,
                        label=f"{label} 95% interval", zorder=1)
        return
    # Dashed and on top: where it equals the first prediction both stay visible.
    ax.plot(xs[order], m[order], color=c, lw=1.5, ls=(0, (4, 2.5)),
            label=f"{label} mean", zorder=3 + i)
    ax.plot(xs[order], lo, color=c, lw=1.0, ls=(0, (1, 1.5)),
            label=f"{label} 95% interval", zorder=3 + i)
    ax.plot(xs[order], hi, color=c, lw=1.0, ls=(0, (1, 1.5)), zorder=3 + i)


def _draw_truth(ax: Any, truth: Prediction, truth_std: Tensor | None, truth_label: str) -> None:
    """The truth's curve, dotted black, with its 95% interval when ``truth_std`` is given."""
    tx, tf = to_numpy(truth[0]).reshape(-1), to_numpy(truth[1]).reshape(-1)
    o = tx.argsort()
    ax.plot(tx[o], tf[o], color=BLACK, lw=1.1, ls=(0, (1, 1.2)), label=truth_label,
            zorder=6)
    if truth_std is None:
        return
    ts = to_numpy(truth_std).reshape(-1)
    if ts.shape != tx.shape:
        raise ValueError(f"truth_std: expected shape {tx.shape} (as truth's x), got "
                         f"{ts.shape}")
    style = {"color": "#555555", "lw": 0.8, "ls": (0, (6, 2, 1, 2)), "zorder": 6}
    ax.plot(tx[o], (tf - 1.96 * ts)[o],
            label=f"{truth_label.removesuffix(' mean')} 95% interval", **style)
    ax.plot(tx[o], (tf + 1.96 * ts)[o], **style)


@torch.no_grad()
def predict_1d(model: torch.nn.Module, xc: Tensor, yc: Tensor, x: Tensor) -> Prediction:
    """Predictive mean and std of ``model`` for one task at locations ``x``.

    Shapes: ``xc [n_context, 1]``, ``yc [n_context, 1]``, ``x [n]`` or ``[n, 1]``; returns
    ``mean, std`` of shape ``[n]``. The model is evaluated in eval mode (restored afterwards).
    """
    was_training = model.training
    model.eval()
    try:
        dtype = model_dtype(model)
        xq = x.reshape(1, -1, 1).to(dtype)
        pred = model(xc.reshape(1, -1, 1).to(dtype), yc.reshape(1, xc.numel(), -1).to(dtype), xq)
        return pred.mean[0, :, 0], pred.stddev[0, :, 0]
    finally:
        model.train(was_training)


def plot_model_1d(
    model: torch.nn.Module, xc: Tensor, yc: Tensor, x: Tensor, *, label: str = "model",
    with_component: bool = False, **kwargs: Any,
) -> Any:
    """:func:`plot_predictions_1d` of one model on one task; with ``with_component=True`` the
    model's equivariant component (every fixed input zero) is drawn too: the full model in
    solid blue with a shaded interval, the component dashed in vermillion on top (as in Ashman
    et al., 2024).

    Shapes as in :func:`predict_1d`; ``kwargs`` go to :func:`plot_predictions_1d`.
    """
    from approxeq.approximate import equivariant_component

    preds = {label: predict_1d(model, xc, yc, x)}
    if with_component:
        with equivariant_component(model):
            preds[f"{label}, fixed inputs = 0"] = predict_1d(model, xc, yc, x)
        kwargs.setdefault("colors", (BLUE, VERMILLION))
        kwargs.setdefault("caption", (
            f"{label}: solid blue, the full model (mean and shaded 95% interval); dashed "
            "vermillion, its equivariant component (every fixed input zero; dotted: its 95% "
            "interval). Where the two agree the fixed inputs change nothing."))
    return plot_predictions_1d(xc, yc, x, preds, **kwargs)
