"""Maps of gridded predictions (ERA5 and other fields), each with its data attribution.

:func:`plot_correction_maps` draws, for one model at one time: the context observations, the
truth, the full prediction, the equivariant component's prediction, their difference (the
learned symmetry-breaking correction) and, beside it, the elevation map, with the correlation
between correction and elevation in the title of that panel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from approxeq.plot._mpl import add_caption, finish, pyplot

ERA5_ATTRIBUTION = "Contains modified Copernicus Climate Change Service information 2019"


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def _axes_of(da: Any) -> tuple[np.ndarray, np.ndarray, str, str]:
    lat_name, lon_name = da.dims[-2], da.dims[-1]
    return (np.asarray(da[lat_name].values, float), np.asarray(da[lon_name].values, float),
            lat_name, lon_name)


def _draw(ax: Any, da: Any, *, cmap: str, vmin: float | None = None, vmax: float | None = None,
          title: str = "", units: str = "") -> Any:
    lat, lon, _, _ = _axes_of(da)
    mesh = ax.pcolormesh(lon, lat, np.asarray(da.values, float), cmap=cmap, vmin=vmin, vmax=vmax,
                         shading="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_aspect(1.0 / np.cos(np.deg2rad(lat.mean())))
    ax.tick_params(labelsize=7)
    cbar = ax.figure.colorbar(mesh, ax=ax, shrink=0.8)
    cbar.ax.tick_params(labelsize=7)
    if units:
        cbar.set_label(units, fontsize=7)
    return mesh


_MAPS_CAPTION = (
    "Top: the observed context cells, the true field and the model's predictive mean. Bottom: "
    "the mean of its equivariant component (every fixed input zero), the correction (full "
    "minus component: what the fixed inputs add, red above and blue below zero) and the "
    "elevation, whose correlation with the correction shows whether the model learned a "
    "terrain effect.")


def plot_correction_maps(panels: Any, *, title: str = "", attribution: str = ERA5_ATTRIBUTION,
                         correlation: float | None = None,
                         path: str | Path | None = None, caption: str | None = None) -> Any:
    """Six maps of one prediction (a :func:`~approxeq.experiments.era5.map_panels`
    Dataset): context, truth, full prediction, equivariant component, correction (full −
    component, diverging colours centred on 0) and elevation.

    Args:
        panels: an ``xarray.Dataset`` with ``context``, ``truth``, ``full``, ``component``,
            ``correction`` and optionally ``elevation`` on one ``(lat, lon)`` grid.
        title: figure title. attribution: the data attribution, written on the figure.
        correlation: the correction–elevation correlation to show (default: computed from
            the panels).
        path: save a PNG there.
        caption: text under the maps (default: what each panel shows; ``""``: none).
    """
    plt = pyplot()
    units = panels["truth"].attrs.get("units", "")
    values = np.concatenate([np.asarray(panels[k].values, float).ravel()
                             for k in ("truth", "full", "component")])
    vmin, vmax = np.nanpercentile(values, 1), np.nanpercentile(values, 99)
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.2))
    _draw(axes[0, 0], panels["context"], cmap="viridis", vmin=vmin, vmax=vmax, units=units,
          title=f"context ({int(np.isfinite(panels['context'].values).sum())} cells)")
    _draw(axes[0, 1], panels["truth"], cmap="viridis", vmin=vmin, vmax=vmax, units=units,
          title="truth")
    _draw(axes[0, 2], panels["full"], cmap="viridis", vmin=vmin, vmax=vmax, units=units,
          title="full prediction (mean)")
    _draw(axes[1, 0], panels["component"], cmap="viridis", vmin=vmin, vmax=vmax, units=units,
          title="equivariant component (mean)")
    corr = np.asarray(panels["correction"].values, float)
    bound = float(np.nanmax(np.abs(corr))) if np.isfinite(corr).any() else 1.0
    bound = bound if bound > 0 else 1.0
    _draw(axes[1, 1], panels["correction"], cmap="RdBu_r", vmin=-bound, vmax=bound, units=units,
          title="correction = full − component")
    if "elevation" in panels:
        if correlation is None:
            e = np.asarray(panels["elevation"].values, float)
            ok = np.isfinite(corr) & np.isfinite(e)
            correlation = (float(np.corrcoef(corr[ok], e[ok])[0, 1])
                           if ok.sum() > 1 and corr[ok].std() > 0 else float("nan"))
        _draw(axes[1, 2], panels["elevation"], cmap="terrain",
              units=panels["elevation"].attrs.get("units", ""),
              title=f"elevation (corr. with correction {correlation:.2f})")
    else:
        axes[1, 2].axis("off")
    for ax in axes[1]:
        ax.set_xlabel("longitude (°E)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("latitude (°N)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.005, attribution, ha="center", va="bottom", fontsize=8, style="italic")
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    add_caption(fig, _MAPS_CAPTION if caption is None else caption)
    return finish(fig, path)


def era5_figures(out_dir: str | Path, panels: Mapping[str, Any],
                 metrics: Mapping[str, Any] | None = None) -> Sequence[Path]:
    """The figure hook of :func:`~approxeq.experiments.era5.run_era5_experiment`: one
    ``maps-<label>.png`` per model with panels, in ``out_dir/figures``. Each elevation panel
    shows the correlation on its own map; ``metrics`` (``correction_elevation_corr``) pools
    several maps."""
    plt = pyplot()
    out = Path(out_dir) / "figures"
    paths = []
    for label, ds in panels.items():
        path = out / f"maps-{_safe(label)}.png"
        fig = plot_correction_maps(
            ds, title=f"{label}: 2 m temperature, {ds.attrs.get('time', '')}", path=path)
        plt.close(fig)
        paths.append(path)
    return paths


__all__ = ["ERA5_ATTRIBUTION", "era5_figures", "plot_correction_maps"]
