"""The learned fixed inputs t(x) of approximately equivariant models."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from approxeq.nn.placement import model_dtype
from approxeq.plot._mpl import PALETTE, add_caption, finish, pyplot, shade_window, to_numpy


@torch.no_grad()
def plot_fixed_inputs(
    model_or_module: nn.Module, x_range: Sequence[float] = (-4.0, 4.0), *, n: int = 400,
    max_channels: int = 8, title: str | None = None, ax: Any = None,
    path: str | os.PathLike | None = None, caption: str | None = None,
) -> Any:
    """The channels of every fixed input ``t(x)`` of a 1-D model, on a grid over ``x_range``.

    Args:
        model_or_module: an approximately equivariant model, or one fixed-input module (any
            module with ``forward(x [b, n, 1]) -> [b, n, C]``; a ``domain`` buffer
            ``[1, 2]``, if present, is shaded as the window where ``t`` may be non-zero).
        x_range: ``(low, high)`` of the grid. n: grid size.
        max_channels: draw at most this many channels per module (those of largest range).
        ax: draw into this axes. path: save as PNG here.
        caption: text under the figure (only for a new figure; default: what the lines are,
            ``""``: none).

    Returns:
        The matplotlib ``Figure``. Raises ``ValueError`` when the model has no fixed inputs.
    """
    from approxeq.approximate import FixedInput, symmetry_breaking_modules

    plt = pyplot()
    if isinstance(model_or_module, FixedInput):
        modules = [model_or_module]
    else:
        modules = [m for m in symmetry_breaking_modules(model_or_module)
                   if isinstance(m, FixedInput)]
    if not modules:
        raise ValueError("model_or_module: has no fixed inputs (FixedInput modules) to plot")
    new_figure = ax is None
    if new_figure:
        fig, ax = plt.subplots(figsize=(7, 3.0))
    else:
        fig = ax.figure
    lo, hi = float(x_range[0]), float(x_range[1])
    for k, mod in enumerate(modules):
        if getattr(mod, "dim_x", 1) != 1:
            raise ValueError(f"model_or_module: plot_fixed_inputs draws 1-D fixed inputs; "
                             f"module {k} has dim_x = {mod.dim_x}")
        dtype = model_dtype(mod)
        x = torch.linspace(lo, hi, n, dtype=dtype).reshape(1, n, 1)
        was_training = mod.training
        mod.eval()
        try:
            t = mod(x)[0]  # [n, C]
        finally:
            mod.train(was_training)
        spread = (t.max(0).values - t.min(0).values)
        keep = spread.argsort(descending=True)[:max_channels].sort().values
        xs = to_numpy(x).reshape(-1)
        for j, c in enumerate(keep.tolist()):
            prefix = f"t{k}" if len(modules) > 1 else "t"
            ax.plot(xs, to_numpy(t[:, c]), color=PALETTE[j % len(PALETTE)], lw=1.3,
                    ls="-" if k == 0 else "--", label=f"{prefix}[{c}]")
        domain = getattr(mod, "domain", None)
        if domain is not None and k == 0:
            shade_window(ax, to_numpy(domain).reshape(-1)[:2],
                         label="fixed-input window (t = 0 outside)", text=False)
    ax.axhline(0.0, color="#999999", lw=0.6, zorder=1)
    ax.set_xlabel("x")
    ax.set_ylabel("fixed input t(x)")
    ax.set_xlim(lo, hi)
    ax.set_title(title or "learned fixed inputs t(x)")
    # Outside the axes: the channels fill the whole window, where no corner is free.
    n_entries = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              ncol=1 if n_entries <= 10 else 2)
    if new_figure:
        if caption is None:
            caption = ("Each line is one channel of the learned fixed inputs t(x), the extra "
                       "inputs that let the model depart from its symmetry; all channels are "
                       "zero outside the shaded window, where the model is exactly "
                       "equivariant. With more channels than shown, those that vary most are "
                       "drawn.")
        add_caption(fig, caption)
    return finish(fig, path)
