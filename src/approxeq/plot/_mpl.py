"""Lazy matplotlib access: plotting is an optional extra (``pip install approxeq[plot]``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Okabe–Ito palette: distinguishable under the common colour-vision deficiencies.
BLUE = "#0072B2"
VERMILLION = "#D55E00"
ORANGE = "#E69F00"
SKY = "#56B4E9"
GREEN = "#009E73"
PURPLE = "#CC79A7"
YELLOW = "#F0E442"
BLACK = "#000000"
PALETTE = (BLUE, VERMILLION, GREEN, ORANGE, PURPLE, SKY, BLACK, YELLOW)


def pyplot() -> Any:
    """Import ``matplotlib.pyplot`` with the non-interactive Agg backend, or explain how to
    install it."""
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("approxeq.plot needs matplotlib: pip install 'approxeq[plot]'") from err
    # Figures are written to files; never open a window or need a display.
    if "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def finish(fig: Any, path: str | os.PathLike | None, dpi: int = 120) -> Any:
    """Save ``fig`` as PNG to ``path`` (parents created; written atomically) if given."""
    if path is not None:
        # The same atomic write as every result file: the user's umask, no litter on a kill.
        from approxeq.files import atomic_open

        path = Path(path)
        with atomic_open(path, "wb") as f:
            fig.savefig(f, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return fig


GREY = "#777777"
#: The shading of a context window (where the training contexts lie).
WINDOW = "#BBBBBB"


def shade_window(ax: Any, region: Any, label: str = "context window", *,
                 text: bool = True) -> None:
    """Shade ``(low, high)`` on ``ax``'s x axis, behind everything, and name it in the legend
    and (``text=True``) in small text at the top of the band."""
    lo, hi = (float(v) for v in list(region)[:2])
    ax.axvspan(lo, hi, color=WINDOW, alpha=0.25, lw=0, zorder=0, label=label)
    if text:
        ax.text((lo + hi) / 2, 0.98, label, transform=ax.get_xaxis_transform(), ha="center",
                va="top", fontsize=7, color="#555555", clip_on=True)


def add_caption(fig: Any, text: str | None, *, width: int | None = None) -> None:
    """Write ``text`` under the axes of ``fig``, wrapped to about ``width`` characters (default:
    what the figure's width holds); saved with ``bbox_inches="tight"``, the figure grows to hold
    it."""
    if not text:
        return
    import textwrap

    width = width or max(int(fig.get_figwidth() * 15), 40)
    wrapped = "\n".join(textwrap.fill(par, width, break_on_hyphens=False)
                         for par in text.split("\n"))
    # Below everything already drawn (tick labels and axis labels included), so it never
    # covers them, whatever the layout.
    renderer = fig.canvas.get_renderer()
    bottoms = [ax.get_tightbbox(renderer).y0 for ax in fig.axes if ax.get_visible()]
    bottoms += [t.get_window_extent(renderer).y0 for t in fig.texts if t.get_text()]
    y = (min(bottoms) / fig.bbox.height if bottoms else 0.0) - 0.02
    fig.text(0.01, y, wrapped, ha="left", va="top", fontsize=8, color="#333333",
             transform=fig.transFigure)


def to_numpy(v: Any):
    """A tensor/array/sequence as a flat float64 NumPy array."""
    import numpy as np

    if hasattr(v, "detach"):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)
