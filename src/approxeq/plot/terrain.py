"""Maps of the terrain experiment: per patch the truth, the context, the prediction, its
equivariant component and the learned correction, beside the lapse-rate term ``β h⁺`` that a
perfect correction would match."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from approxeq.plot._mpl import add_caption, finish, pyplot

TOPOGRAPHY_ATTRIBUTION = ("Topography: ETOPO1 (NOAA, Amante & Eakins 2009), packaged by Fatiando "
                          "a Terra; area-averaged to 0.25°")
_CAPTION = ("Per patch (rows): a sample of the field, the cells given as context, the model's "
            "predictive mean, its equivariant component (every fixed input and auxiliary "
            "embedding zero), the learned correction = prediction − component, and β·h⁺, the "
            "lapse-rate part of the field (these two each on its own colour scale). Out of the "
            "training region the fixed inputs are zero, so the correction there comes from "
            "auxiliary inputs alone.")


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def _show(ax: Any, panel: Mapping[str, Any], values: np.ndarray, *, cmap: str, vmin: float,
          vmax: float, title: str) -> None:
    lat, lon = np.asarray(panel["lat"]), np.asarray(panel["lon"])
    half = 0.5 * (lat[1] - lat[0]) if lat.size > 1 else 0.125
    im = ax.imshow(values, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                   extent=(lon[0] - half, lon[-1] + half, lat[0] - half, lat[-1] + half))
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)


def plot_terrain_maps(panels: Mapping[str, Mapping[str, Any]], *, title: str = "",
                      path: str | Path | None = None, caption: str | None = None) -> Any:
    """One row per patch, six maps each: truth, context, prediction, component, correction
    (diverging colours centred on 0) and ``β h⁺`` (on the correction's colour scale, so the two
    compare directly).

    Args:
        panels: ``{patch name: panel}``, each a
            :func:`~approxeq.experiments.terrain.map_panel` dict (``lat [p]``, ``lon [p]``,
            ``truth``, ``context``, ``full``, ``component``, ``correction``, ``lapse``:
            ``[p, p]`` in K; ``region``).
        title: figure title. path: save a PNG there.
        caption: text under the maps (default: what each panel shows; ``""``: none).
    """
    if not panels:
        raise ValueError("panels: expected at least one patch, got none")
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 6, figsize=(20, 3.4 * len(panels)), squeeze=False)
    for row, (name, p) in zip(axes, panels.items()):
        values = np.concatenate([np.asarray(p[k], float).ravel()
                                 for k in ("truth", "full", "component")])
        vmin, vmax = np.nanpercentile(values, 1), np.nanpercentile(values, 99)
        for ax, key, label in ((row[0], "truth", "truth"), (row[1], "context", "context"),
                               (row[2], "full", "prediction"),
                               (row[3], "component", "component")):
            _show(ax, p, np.asarray(p[key], float), cmap="viridis", vmin=vmin, vmax=vmax,
                  title=f"{name} ({p.get('region', '')}): {label} (K)")
        corr, lapse = np.asarray(p["correction"], float), np.asarray(p["lapse"], float)
        # each on its own symmetric scale: a correction of 1 K would vanish on β·h⁺'s 15 K scale
        corr_bound = float(np.nanmax(np.abs(corr))) if np.isfinite(corr).any() else 0.0
        lapse_bound = float(np.nanmax(np.abs(lapse))) if np.isfinite(lapse).any() else 0.0
        ok = np.isfinite(corr) & np.isfinite(lapse)
        if corr_bound == 0.0:
            corr_title = "correction (K): zero here"
        elif ok.sum() > 1 and corr[ok].std() > 0 and lapse[ok].std() > 0:
            r = float(np.corrcoef(corr[ok], lapse[ok])[0, 1])
            corr_title = f"correction (K), corr. with β·h⁺ {r:.2f}"
        else:
            corr_title = "correction (K)"
        _show(ax=row[4], panel=p, values=corr, cmap="RdBu_r", vmin=-(corr_bound or 1.0),
              vmax=corr_bound or 1.0, title=corr_title)
        _show(ax=row[5], panel=p, values=lapse, cmap="RdBu_r", vmin=-(lapse_bound or 1.0),
              vmax=lapse_bound or 1.0,
              title="β·h⁺ (K)")
        row[0].set_ylabel("latitude (°N)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("longitude (°E)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.005, TOPOGRAPHY_ATTRIBUTION, ha="center", va="bottom", fontsize=8,
             style="italic")
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    add_caption(fig, _CAPTION if caption is None else caption)
    return finish(fig, path)


def terrain_figures(out_dir: str | Path,
                    panels: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Sequence[Path]:
    """The figure hook of the terrain experiment: ``figures/terrain-maps-<label>.png`` per
    model of ``panels`` (``{label: {patch name: panel}}``, see :func:`plot_terrain_maps`)."""
    plt = pyplot()
    paths = []
    for label, per_patch in panels.items():
        path = Path(out_dir) / "figures" / f"terrain-maps-{_safe(label)}.png"
        fig = plot_terrain_maps(per_patch, title=f"{label}: learned correction vs β·h⁺",
                                path=path)
        plt.close(fig)
        paths.append(path)
    return paths


__all__ = ["plot_terrain_maps", "terrain_figures"]
