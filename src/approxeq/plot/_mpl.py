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
        from approxeq.train.checkpoint import atomic_open

        path = Path(path)
        with atomic_open(path, "wb") as f:
            fig.savefig(f, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return fig


def to_numpy(v: Any):
    """A tensor/array/sequence as a flat float64 NumPy array."""
    import numpy as np

    if hasattr(v, "detach"):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)
