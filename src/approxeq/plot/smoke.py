"""Figures of the smoke experiment, as in the AE-NP paper's appendix.

* :func:`plot_smoke_predictions`: on one test task, the true density with the context cells,
  then every model's predictive mean (top row of each pair) and its absolute error (bottom
  row), on shared colour scales;
* :func:`plot_smoke_corrections`: for every approximately equivariant model, its learned
  correction (full minus equivariant-component mean), which should trace the obstacle and the
  walls the exactly equivariant component cannot see;
* :func:`plot_smoke_vectors` (velocity tasks): arrows of the true and predicted velocity and of
  each learned correction.

For velocity tasks the density's place in the first two figures is taken by the velocity's
x-component. The obstacle is drawn as a grey disk outline; the box's edges are the walls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from approxeq.plot._mpl import add_caption, finish, pyplot

EXTENT = (-1.0, 1.0, -1.0, 1.0)


def _show(ax: Any, a: np.ndarray, solid: np.ndarray, *, cmap: str, vmin: float, vmax: float,
          title: str) -> Any:
    # arrays are indexed [x, y] with y up: transpose for imshow's [row, column]
    im = ax.imshow(np.ma.masked_invalid(a).T, origin="lower", extent=EXTENT, cmap=cmap,
                   vmin=vmin, vmax=vmax, interpolation="nearest")
    n = solid.shape[0]
    c = -1 + (2 * np.arange(n) + 1) / n
    ax.contour(c, c, solid.T.astype(float), levels=[0.5], colors="#555555", linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _colorbar(fig: Any, mappable: Any, ax: Any, label: str = "") -> None:
    # an inset beside the panel, so every panel keeps the same size
    cbar = fig.colorbar(mappable, cax=ax.inset_axes([1.03, 0.0, 0.05, 1.0]))
    cbar.ax.tick_params(labelsize=6)
    if label:
        cbar.set_label(label, fontsize=7)


def _grid(n_panels: int, n_cols: int, size: float = 1.9) -> tuple[Any, np.ndarray]:
    plt = pyplot()
    n_rows = math.ceil(n_panels / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows),
                             squeeze=False, gridspec_kw={"wspace": 0.55, "hspace": 0.3})
    for ax in axes.ravel()[n_panels:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def plot_smoke_predictions(panels: Mapping[str, Mapping[str, np.ndarray]], *, task: int = 0,
                           n_cols: int = 6, path: str | Path | None = None,
                           title: str = "") -> Any:
    """The truth, then per model its predictive mean and absolute error on task ``task`` of
    ``panels[label]`` (see :func:`approxeq.experiments.smoke.map_panels`; every model's panels
    must be on the same tasks)."""
    labels = list(panels)
    if not labels:
        raise ValueError("panels: expected at least one model's panels, got none")
    first = panels[labels[0]]
    truth, solid = first["truth"][task], first["solid"].astype(bool)
    context = first["context"][task].astype(bool)
    lo, hi = float(np.nanmin(truth)), float(np.nanmax(truth))
    err_max = max(float(np.nanmax(p["error"][task])) for p in panels.values())
    n = 2 * (len(labels) + 1)
    per_row = max(2, n_cols - n_cols % 2)
    fig, axes = _grid(n, per_row)
    mesh = _show(axes[0], np.where(context, truth, np.nan), solid, cmap="viridis", vmin=lo,
                 vmax=hi, title=f"context ({int(context.sum())} cells)")
    _show(axes[1], truth, solid, cmap="viridis", vmin=lo, vmax=hi, title="truth")
    emesh = None
    for k, label in enumerate(labels):
        p = panels[label]
        _show(axes[2 * k + 2], p["mean"][task], solid, cmap="viridis", vmin=lo, vmax=hi,
              title=f"{label}: mean")
        emesh = _show(axes[2 * k + 3], p["error"][task], solid, cmap="magma", vmin=0.0,
                      vmax=err_max, title=f"{label}: |error|")
    field = "velocity x-component" if "truth_uv" in first else "density"
    for m, ax, what in ((mesh, axes[1], f"{field} (normalised)"),
                        (emesh, axes[n - 1], "|error|")):
        if m is not None:
            _colorbar(fig, m, ax, what)
    sim, snap = int(first["sim"][task]), int(first["snapshot"][task])
    fig.suptitle(title or f"smoke {field}, test simulation {sim}, snapshot {snap}", fontsize=10,
                 y=1.02)
    add_caption(fig, f"Left: the observed context cells and the true {field}; then each "
                     "model's predictive mean and absolute error. Grey outline: the obstacle; "
                     "the box edges are the walls. Means share the truth's colour scale, errors "
                     "share one scale.")
    return finish(fig, path)


def plot_smoke_corrections(panels: Mapping[str, Mapping[str, np.ndarray]], *,
                           task: int | None = None, n_cols: int = 4,
                           path: str | Path | None = None) -> Any:
    """Each approximately equivariant model's learned correction (full minus equivariant
    component mean), on task ``task`` or (``None``) averaged in absolute value over all
    tasks of its panels, on a diverging scale centred on zero (one scale per panel)."""
    labels = [label for label, p in panels.items() if "correction" in p]
    if not labels:
        raise ValueError("panels: no approximately equivariant model (no 'correction') among "
                         f"{list(panels)}")
    fig, axes = _grid(len(labels), min(n_cols, len(labels)), size=2.4)
    for ax, label in zip(axes, labels):
        p = panels[label]
        solid = p["solid"].astype(bool)
        if task is None:
            a = np.where(solid, np.nan, np.abs(np.nan_to_num(p["correction"])).mean(0))
            cmap, what = "magma", "mean |correction|"
            vmin, vmax = 0.0, float(np.nanmax(a)) or 1.0
        else:
            a, cmap, what = p["correction"][task], "RdBu_r", "correction"
            vmax = float(np.nanmax(np.abs(a))) or 1.0
            vmin = -vmax
        im = _show(ax, a, solid, cmap=cmap, vmin=vmin, vmax=vmax, title=f"{label}: {what}")
        _colorbar(fig, im, ax)
    add_caption(fig, "The learned correction: the approximate model's predictive mean minus "
                     "that of its exactly equivariant component (every fixed input zero). "
                     "Where it is large the model breaks its symmetry; a model that learned the "
                     "scene breaks it around the obstacle (grey outline) and along the walls.")
    return finish(fig, path)


def _arrows(ax: Any, uv: np.ndarray, solid: np.ndarray, *, vmax: float, title: str,
            step: int, cmap: str = "Blues") -> Any:
    # the speed as the background, every step-th cell's arrow on top ([x, y] indexing); an
    # arrow of the speed's 90th percentile spans the arrows' spacing
    speed = np.linalg.norm(uv, axis=-1)
    im = _show(ax, speed, solid, cmap=cmap, vmin=0.0, vmax=vmax, title=title)
    n = uv.shape[0]
    c = -1 + (2 * np.arange(n) + 1) / n
    gx, gy = np.meshgrid(c[::step], c[::step], indexing="ij")
    sub = np.nan_to_num(uv[::step, ::step])
    unit = float(np.nanpercentile(speed, 90)) or 1.0
    ax.quiver(gx, gy, sub[..., 0], sub[..., 1], angles="xy", scale_units="xy",
              scale=unit * n / (2 * step), width=0.006, color="#222222")
    return im


def plot_smoke_vectors(panels: Mapping[str, Mapping[str, np.ndarray]], *, task: int = 0,
                       n_cols: int = 4, step: int = 2, path: str | Path | None = None) -> Any:
    """Velocity arrows (every ``step``-th cell) over the speed, on task ``task``: the truth,
    each model's predictive mean and each approximately equivariant model's correction (full
    minus equivariant component); the panels need ``truth_uv`` and ``mean_uv`` (see
    :func:`approxeq.experiments.studies.smoke.map_panels` with ``vector``)."""
    labels = [label for label, p in panels.items() if "mean_uv" in p]
    if not labels:
        raise ValueError(f"panels: no velocity arrows ('mean_uv') among {list(panels)}")
    first = panels[labels[0]]
    solid = first["solid"].astype(bool)
    truth = first["truth_uv"][task]
    vmax = float(np.nanmax(np.linalg.norm(truth, axis=-1))) or 1.0
    means = [("truth", truth)] + [(f"{label}: mean", panels[label]["mean_uv"][task])
                                  for label in labels]
    corrections = [(f"{label}: correction", panels[label]["correction_uv"][task])
                   for label in labels if "correction_uv" in panels[label]]
    fig, axes = _grid(len(means) + len(corrections), n_cols, size=2.4)
    for ax, (title, uv) in zip(axes, means):
        im = _arrows(ax, uv, solid, vmax=vmax, title=title, step=step)
    _colorbar(fig, im, axes[len(means) - 1], "speed (normalised)")
    for ax, (title, uv) in zip(axes[len(means):], corrections):
        top = float(np.nanmax(np.linalg.norm(uv, axis=-1))) or 1.0
        _colorbar(fig, _arrows(ax, uv, solid, vmax=top, title=title, step=step,
                               cmap="Oranges"), ax, "|correction|")
    sim, snap = int(first["sim"][task]), int(first["snapshot"][task])
    fig.suptitle(f"smoke velocity, test simulation {sim}, snapshot {snap}", fontsize=10, y=1.02)
    add_caption(fig, "Velocity arrows over the speed: the truth and each model's predictive "
                     "mean (one colour scale), then each approximately equivariant model's "
                     "correction (its mean minus its exactly equivariant component's; orange, "
                     "its own scale). In every panel an arrow as long as the arrows' spacing is "
                     "that panel's 90th-percentile speed. Grey outline: the obstacle.")
    return finish(fig, path)


def smoke_figures(out_dir: str | Path, panels: Mapping[str, Mapping[str, np.ndarray]],
                  metrics: Mapping[str, Any] | None = None) -> Sequence[Path]:
    """The figure hook of the smoke experiment: writes ``smoke_predictions.png``,
    ``smoke_corrections.png`` (task 0) and ``smoke_corrections_mean.png`` (mean absolute
    correction over the map tasks) and, when the panels hold velocities, ``smoke_vectors.png``
    (:func:`plot_smoke_vectors`) into ``out_dir``; returns the paths written."""
    plt = pyplot()
    out_dir = Path(out_dir)
    paths = []
    fig = plot_smoke_predictions(panels, path=out_dir / "smoke_predictions.png")
    plt.close(fig)
    paths.append(out_dir / "smoke_predictions.png")
    if any("mean_uv" in p for p in panels.values()):
        fig = plot_smoke_vectors(panels, path=out_dir / "smoke_vectors.png")
        plt.close(fig)
        paths.append(out_dir / "smoke_vectors.png")
    if any("correction" in p for p in panels.values()):
        for name, task in (("smoke_corrections.png", 0), ("smoke_corrections_mean.png", None)):
            fig = plot_smoke_corrections(panels, task=task, path=out_dir / name)
            plt.close(fig)
            paths.append(out_dir / name)
    return paths


__all__ = ["plot_smoke_corrections", "plot_smoke_predictions", "plot_smoke_vectors",
           "smoke_figures"]
