"""Quiver plots of planar vector fields: the vector-GP experiment's task (truth, the oracle's and
each model's predictive mean) and the learned corrections of its approximate models beside the
pinned flow they should find."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from approxeq.plot._mpl import BLACK, BLUE, VERMILLION, add_caption, finish, pyplot

_TASK_CAPTION = ("One in-region task on a grid of targets: the noise-free field with the "
                 "context observations (orange), the exact oracle's posterior mean (it knows "
                 "the pinned flow) and each model's predictive mean. Every panel uses the same "
                 "arrow scale.")
_CORRECTION_CAPTION = ("The pinned flow (left) and, per approximately equivariant model, the "
                       "learned correction on the same task: its predictive mean minus its "
                       "equivariant component's (every fixed input zero), on the flow's arrow "
                       "scale (top) and magnified to its own scale (bottom, by the factor in "
                       "the title); cos: the cosine of the correction with the flow over the "
                       "grid.")


def quiver_field(ax: Any, x: np.ndarray, v: np.ndarray, *, scale: float, title: str = "",
                 color: str = BLUE, region: Sequence[Sequence[float]] | None = None) -> None:
    """Arrows ``v [n, 2]`` at ``x [n, 2]`` on ``ax``; ``scale``: the vector length drawn one
    input unit long, so that panels drawn with one scale compare."""
    x, v = np.asarray(x, float), np.asarray(v, float)
    ax.quiver(x[:, 0], x[:, 1], v[:, 0], v[:, 1], color=color, angles="xy",
              scale_units="xy", scale=scale, width=0.006)
    if region is not None:
        (x0, x1), (y0, y1) = region
        pad = 0.1 * max(x1 - x0, y1 - y0)
        ax.set_xlim(x0 - pad, x1 + pad)
        ax.set_ylim(y0 - pad, y1 + pad)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def _arrow_scale(panel: Mapping[str, Any], fields: Sequence[np.ndarray]) -> float:
    """Vector length per data unit: the largest arrow spans about 1.2 grid spacings."""
    x = np.asarray(panel["x"], float)
    spacing = np.diff(np.unique(x[:, 0]))
    spacing = float(spacing.min()) if spacing.size else 1.0
    longest = max((float(np.linalg.norm(np.asarray(f, float), axis=-1).max()) for f in fields),
                  default=0.0)
    return max(longest, 1e-12) / (1.2 * spacing)


def plot_vector_task(panel: Mapping[str, Any], *, title: str = "",
                     path: str | Path | None = None, caption: str | None = None) -> Any:
    """Quiver panels of one task: truth (with the context in orange), oracle, then each model's
    predictive mean (``panel`` from
    :func:`~approxeq.experiments.studies.vector_gp.panels.figure_panel`)."""
    plt = pyplot()
    fields = [("truth + context", panel["truth"]), ("oracle", panel["oracle"])]
    fields += [(label, m["mean"]) for label, m in panel["models"].items()]
    scale = _arrow_scale(panel, [f for _, f in fields])
    cols = min(4, len(fields))
    rows = -(-len(fields) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, field) in zip(axes.ravel(), fields):
        quiver_field(ax, panel["x"], field, scale=scale, title=name, region=panel["region"],
                     color=BLACK if name.startswith("truth") else BLUE)
    quiver_field(axes[0, 0], panel["xc"], panel["yc"], scale=scale, color="#E69F00",
                 title="truth + context", region=panel["region"])
    for ax in axes.ravel()[len(fields):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    add_caption(fig, _TASK_CAPTION if caption is None else caption)
    return finish(fig, path)


def plot_vector_corrections(panel: Mapping[str, Any], *, title: str = "",
                            path: str | Path | None = None, caption: str | None = None) -> Any:
    """The pinned flow beside each approximate model's learned correction (mean − component):
    the top row on the flow's arrow scale (how much of the flow is learned), the bottom row
    each correction on its own scale (its shape)."""
    corrections = [(label, m) for label, m in panel["models"].items() if "correction" in m]
    if not corrections:
        raise ValueError("panel: expected at least one approximately equivariant model (with a "
                         "'correction'), got none")
    plt = pyplot()
    fields = [panel["flow"]] + [m["correction"] for _, m in corrections]
    scale = _arrow_scale(panel, fields[:1] if panel.get("has_flow") else fields)
    fig, axes = plt.subplots(2, len(fields), figsize=(3.2 * len(fields), 6.6), squeeze=False)
    quiver_field(axes[0, 0], panel["x"], panel["flow"], scale=scale, color=BLACK,
                 title="pinned flow" if panel.get("has_flow") else "no pinned flow",
                 region=panel["region"])
    axes[1, 0].set_visible(False)
    for k, (label, m) in enumerate(corrections, start=1):
        cos = m.get("flow_cosine", float("nan"))
        quiver_field(axes[0, k], panel["x"], m["correction"], scale=scale, color=VERMILLION,
                     title=f"{label}: correction (cos {cos:.2f})", region=panel["region"])
        own = _arrow_scale(panel, [m["correction"]])
        quiver_field(axes[1, k], panel["x"], m["correction"], scale=own, color=VERMILLION,
                     title=f"{label}: own scale (×{scale / own:.0f})", region=panel["region"])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    add_caption(fig, _CORRECTION_CAPTION if caption is None else caption)
    return finish(fig, path)


def vector_gp_figures(out_dir: str | Path, panel: Mapping[str, Any]) -> list[Path]:
    """The vector-GP experiment's figures in ``out_dir``: ``vector-gp-task.png`` and, when it
    has approximate models, ``vector-gp-correction.png``; returns the paths written."""
    plt = pyplot()
    out_dir = Path(out_dir)
    paths = [out_dir / "vector-gp-task.png"]
    plt.close(plot_vector_task(panel, path=paths[0]))
    if any("correction" in m for m in panel["models"].values()):
        paths.append(out_dir / "vector-gp-correction.png")
        plt.close(plot_vector_corrections(panel, path=paths[1]))
    return paths


__all__ = ["plot_vector_corrections", "plot_vector_task", "quiver_field", "vector_gp_figures"]
