"""The ERA5 UK experiment: mapping 2 m temperature from sparse observations, where mountains and
coasts break translation and rotation symmetry.

Data: the shipped ERA5 hourly 2 m temperature over the UK, March 2019 (0.25°, 33 × 49), with
elevation on the same grid (``approxeq/datasets/weather``; any other file through the task
options). Train on days 1–21, validate on 22–24, test on 25–31. Inputs are the normalised
``(lat, lon)`` (one scale for both axes, see :mod:`approxeq.data.normalise`); the target is
the normalised temperature. Each model is trained without auxiliary input and, when its
options set ``dim_aux``, with elevation as a known auxiliary input.

A run directory holds, per model label, the training run (``best.pt``, ``last.pt``,
``history.json``), ``normaliser.json`` and ``eval.json``; at the top ``normaliser.json``,
``config.yaml``, ``metrics.json`` (one entry per model label), ``results.md``,
``experiment.json`` and, through the ``figures`` hook, map figures. Every ``metrics.json``
entry holds ``loglik`` ± ``loglik_se`` (normalised temperature, per target point), ``rmse_K``
(kelvin), and for approximately equivariant models (fixed inputs and/or auxiliary inputs)
``component_loglik``, ``delta_equiv`` (normalised) and ``delta_equiv_K``, and
``correction_elevation_corr``: the correlation between the learned correction (full minus
equivariant-component predictive mean) and elevation over whole test maps; and, inside the
training region only (the fixed inputs' domain), ``correction_land_height_corr`` with the
height a lapse rate acts on, ``h⁺ = max(elevation, 0)`` (the elevation file holds the sea floor
as negative heights, which do nothing to the 2 m temperature), and ``correction_land_corr``
with the land–sea mask.

Entry points: :func:`run_era5_experiment` (``approxeq experiment era5-uk``) and
:func:`evaluate_on_file` (``approxeq eval RUN --data FILE --var NAME``).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from approxeq.approximate import common_draws, is_approximate
from approxeq.data.normalise import NORMALISER_FILE, Normaliser
from approxeq.data.xarray_tasks import (
    AuxiliaryFields,
    XarrayTaskGenerator,
    embedded_weather_files,
    open_field,
)
from approxeq.experiments.base import (
    ExperimentResult,
    Log,
    task_options_with_defaults,
)
from approxeq.experiments.np_runner import (
    NeuralProcessExperiment,
    model_options,
    train_one_model,
)
from approxeq.experiments.registry import register_experiment
from approxeq.experiments.schema import ExperimentConfig, ModelConfig
from approxeq.experiments.studies.era5.file_eval import evaluate_on_file
from approxeq.experiments.studies.era5.scores import (
    ATTRIBUTION,
    TASK_NAME,
    era5_results_markdown,
    evaluate_era5_model,
)
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.np.batch import Batch
from approxeq.np.prediction import coordinate_names, predict, require_xarray
from approxeq.train.checkpoint import ModelSpec, load_checkpoint
from approxeq.train.config import ConfigError, closest_key
from approxeq.train.rundir import BEST, EXPERIMENT, LAST, METRICS, RESULTS, finished_step, run_paths

DATA_FILE = "era5_t2m_uk_2019-03.nc"
AUX_FILE = "uk_elevation_on_era5_grid.nc"
EVAL_VERSION = 2  # 2: the in-region correlations with land height and the land-sea mask

#: task options and their defaults (``task.options`` of the experiment YAML)
TASK_DEFAULTS: dict[str, Any] = {
    "data": None,              # default: the shipped ERA5 file
    "var": "t2m",
    "aux": None,               # default: the shipped elevation file
    "aux_vars": ["elevation"],
    "train_days": [1, 21], "val_days": [22, 24], "test_days": [25, 31],
    "region": None,            # {"lat": [lo, hi], "lon": [lo, hi]}: the training part
    "holdout_region": None,    # the same: an out-of-region test (``ood``) on the test days
    "patch_size": [16, 16],    # null: the whole region
    "context_fraction": [0.01, 0.3],
    "max_targets": 256,
    "cache_mb": 256.0,
}
#: ``extra`` options and their defaults
EXTRA_DEFAULTS: dict[str, Any] = {
    "equivariance_elements": 4, "equivariance_tasks": 8,
    "map_times": ["2019-03-27T12:00", "2019-03-25T06:00", "2019-03-29T18:00",
                  "2019-03-31T00:00"],
    "map_context_fraction": 0.1, "map_seed": 0, "figures": True,
}

#: ``figures(out_dir, panels, metrics) -> written paths``; ``panels[label]`` is an
#: ``xarray.Dataset`` with ``context``, ``truth``, ``full``, ``component``, ``correction`` and
#: ``elevation`` (see :func:`map_panels`), e.g. :func:`approxeq.plot.maps.era5_figures`
MapFigureHook = Callable[[Path, Mapping[str, Any], Mapping[str, Any]], Sequence[Path]]


def weather_dir() -> Path:
    """The folder of the shipped weather data (``approxeq/datasets/weather``)."""
    return embedded_weather_files()["t2m"].parent


def is_era5_experiment(config: ExperimentConfig) -> bool:
    """Whether ``config`` is run by :func:`run_era5_experiment` (``task.name: era5-uk``)
    rather than by the generic GP experiment runner."""
    return config.task.name == TASK_NAME


def task_options(config: ExperimentConfig) -> dict[str, Any]:
    """The task options of an ERA5 experiment with defaults filled in and paths resolved."""
    o = task_options_with_defaults(config, TASK_NAME, TASK_DEFAULTS)
    o["data"] = Path(o["data"]) if o["data"] else weather_dir() / DATA_FILE
    o["aux"] = Path(o["aux"]) if o["aux"] else weather_dir() / AUX_FILE
    if config.task.dim_x != 2 or config.task.dim_y != 1:
        raise ConfigError(f"task.dim_x, task.dim_y: the ERA5 task has (lat, lon) inputs and one "
                          f"output, so 2 and 1; got {config.task.dim_x}, {config.task.dim_y}")
    for split in ("train", "val", "test"):
        days = o[f"{split}_days"]
        if not (isinstance(days, (list, tuple)) and len(days) == 2
                and all(isinstance(d, int) and not isinstance(d, bool) for d in days)
                and 1 <= days[0] <= days[1] <= 31):
            raise ConfigError(f"task.options.{split}_days: expected [first, last] days of the "
                              f"month with 1 <= first <= last <= 31, got {days!r}")
    found = list(open_field(o["data"]).data_vars)
    if o["var"] not in found:  # named here, not as xarray's KeyError deep in the run
        raise ConfigError(f"task.options.var: {o['var']!r} is not a variable of "
                          f"{o['data'].name}{closest_key(o['var'], found)}; it has "
                          f"{', '.join(map(str, found))}")
    return o


def _uses_aux(mc: ModelConfig) -> bool:
    return int(mc.options.get("dim_aux", 0) or 0) > 0


def _generator(o: Mapping[str, Any], split: str, normaliser: Normaliser | None,
               with_aux: bool, region: Any = None) -> XarrayTaskGenerator:
    days = tuple(o[f"{split}_days"])
    return XarrayTaskGenerator(
        o["data"], o["var"], normaliser=normaliser, days=days, region=region or o["region"],
        patch_size=o["patch_size"], context_fraction=tuple(o["context_fraction"]),
        max_targets=o["max_targets"], aux=o["aux"] if with_aux else None,
        aux_vars=o["aux_vars"] if with_aux else None, cache_mb=o["cache_mb"])


def fit_normaliser(o: Mapping[str, Any]) -> Normaliser:
    """The normaliser of the variable, coordinates and auxiliary fields, fitted on the training
    days and region only."""
    from approxeq.data.xarray_tasks import select_region, select_times

    da = open_field(o["data"])[o["var"]]
    da = select_region(select_times(da, days=tuple(o["train_days"])), o["region"])
    norm = Normaliser.fit(da, o["var"])
    if o["aux_vars"]:
        lat_name, lon_name, _ = coordinate_names(da)
        norm = norm.fit_aux(open_field(o["aux"]), o["aux_vars"], lat=da[lat_name].values,
                            lon=da[lon_name].values)
    return norm

def fixed_input_domain(o: Mapping[str, Any], normaliser: Normaliser) -> list[list[float]]:
    """The training part of the grid (``region``, default all of it) in normalised inputs,
    widened by half a cell: the box outside which fixed inputs are zero."""
    from approxeq.data.xarray_tasks import select_region

    da = select_region(open_field(o["data"])[o["var"]], o["region"])
    lat_name, lon_name, _ = coordinate_names(da)
    lat, lon = np.sort(da[lat_name].values), np.sort(da[lon_name].values)
    half_lat = 0.5 * abs(float(lat[1] - lat[0])) if lat.size > 1 else 0.0
    half_lon = 0.5 * abs(float(lon[1] - lon[0])) if lon.size > 1 else 0.0
    x = normaliser.normalise_x([lat[0] - half_lat, lat[-1] + half_lat],
                               [lon[0] - half_lon, lon[-1] + half_lon])
    return [[float(x[0, 0]), float(x[1, 0])], [float(x[0, 1]), float(x[1, 1])]]


def _strip_aux(batches: Sequence[Batch]) -> list[Batch]:
    return [replace(b, aux_c=None, aux_t=None) for b in batches]


# --------------------------------------------------------------------------------------------
# Maps: full prediction, equivariant component, and the learned correction
# --------------------------------------------------------------------------------------------

def map_panels(model: nn.Module, normaliser: Normaliser, data: Any, var: str, time: Any, *,
               aux: Any = None, aux_vars: Sequence[str] | None = None,
               context_fraction: float = 0.1, seed: int = 0) -> Any:
    """The maps of one model at one time: an ``xarray.Dataset`` with ``truth``, ``context``
    (truth at a random ``context_fraction`` of the valid cells, NaN elsewhere), ``full`` and
    ``std`` (the model's predictive mean and std), ``component`` (its equivariant component's
    mean; equal to ``full`` for an exact model), ``correction = full - component`` and
    ``elevation`` (the first auxiliary field, if given), in the variable's units."""
    xr = require_xarray()
    da = open_field(data)[var]
    truth = da.sel(time=np.datetime64(time)) if "time" in da.dims else da
    truth = truth.load()
    rng = np.random.default_rng(seed)
    valid = np.isfinite(truth.values)
    keep = valid & (rng.random(truth.shape) < context_fraction)
    context = truth.where(keep)
    fields = AuxiliaryFields(aux, aux_vars) if aux is not None else None
    raw_at = fields.raw_at if (fields is not None and getattr(model, "dim_aux", 0)) else None
    # the same random draws in both passes: a stochastic model's correction is then the fixed
    # inputs' alone, not Monte-Carlo noise
    device = next(iter(model.parameters())).device
    with common_draws(seed, device):
        full = predict(model, context, truth, normaliser, aux=raw_at)
    with common_draws(seed, device):
        comp = predict(model, context, truth, normaliser, aux=raw_at, component=True)
    units = truth.attrs.get("units", "")
    ds = xr.Dataset({"truth": truth, "context": context, "full": full["mean"],
                     "std": full["std"], "component": comp["mean"],
                     "correction": full["mean"] - comp["mean"]})
    for name in ("truth", "context", "full", "std", "component", "correction"):
        ds[name].attrs["units"] = units
    if fields is not None:
        lat_name = truth.dims[0]
        la, lo = np.meshgrid(truth[truth.dims[0]].values, truth[truth.dims[1]].values,
                             indexing="ij")
        elev = fields.raw_at(la.ravel(), lo.ravel())[:, 0].reshape(la.shape)
        ds["elevation"] = ((lat_name, truth.dims[1]), elev, {"units": fields.units[0]})
    ds.attrs.update({"time": str(time), "n_context": int(keep.sum()), "attribution": ATTRIBUTION})
    return ds


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def in_region(panel: Any, region: Mapping[str, Sequence[float]] | None) -> Any:
    """The cells of ``panel`` (an ``xarray.Dataset`` on ``(lat, lon)``) inside ``region``
    (``{"lat": [lo, hi], "lon": [lo, hi]}``, whichever way its latitudes run; ``None``: the
    whole panel)."""
    if region is None:
        return panel
    lat, lon = panel["correction"].dims
    north_first = float(panel[lat][0]) > float(panel[lat][-1])
    return panel.sel({lat: slice(*sorted(region["lat"], reverse=north_first)),
                      lon: slice(*sorted(region["lon"]))})


def correction_terrain_correlations(panels: Sequence[Any],
                                    region: Mapping[str, Sequence[float]] | None
                                    ) -> dict[str, float]:
    """Inside ``region``, pooled over ``panels``: the correlation of the correction with the
    land height ``h⁺ = max(elevation, 0)`` (``correction_land_height_corr``; a lapse rate
    makes it negative) and with the land–sea mask (``correction_land_corr``)."""
    inside = [in_region(p, region) for p in panels]
    c = np.concatenate([p["correction"].values.ravel() for p in inside])
    e = np.concatenate([p["elevation"].values.ravel() for p in inside])
    return {"correction_land_height_corr": _correlation(c, np.maximum(e, 0.0)),
            "correction_land_corr": _correlation(c, (e > 0).astype(float))}


def correction_elevation_correlation(panels: Sequence[Any]) -> float:
    """Pearson correlation between the learned correction and elevation, pooled over the
    valid cells of ``panels`` (NaN if the correction is constant)."""
    c, e = [], []
    for p in panels:
        ok = np.isfinite(p["correction"].values) & np.isfinite(p["elevation"].values)
        c.append(p["correction"].values[ok])
        e.append(p["elevation"].values[ok])
    c, e = np.concatenate(c), np.concatenate(e)
    if c.size < 2 or c.std() == 0 or e.std() == 0:
        return float("nan")
    return float(np.corrcoef(c, e)[0, 1])

# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

class ERA5Experiment(NeuralProcessExperiment):
    """Neural processes on the ERA5 UK 2 m temperature (see the module docstring)."""

    name = TASK_NAME
    task_names = (TASK_NAME,)
    evaluates_fields = True
    reevaluates = f"gridded-data runs ({TASK_NAME}) with --data FILE --var NAME"

    def figures(self) -> Callable | None:
        from approxeq.plot.maps import era5_figures

        return era5_figures

    def reevaluate(self, run_dir: Path, config: ExperimentConfig | None, *,
                   data: str | Path | None = None, var: str | None = None,
                   aux: str | Path | None = None, out: str | Path | None = None,
                   checkpoint: str = BEST, device: str | None = None,
                   skip_missing: bool = False, log: Log | None = None
                   ) -> tuple[dict[str, Any], Path | None]:
        """With ``data`` and ``var``: the run's models (or one model directory, or one
        checkpoint) scored on that gridded field (:func:`~approxeq.experiments.studies.era5.
        evaluate_on_file`, which refuses a run of another kind). Without: not supported."""
        if data is None or var is None:
            return super().reevaluate(run_dir, config, data=data, var=var, aux=aux, out=out,
                                      checkpoint=checkpoint, device=device,
                                      skip_missing=skip_missing, log=log)
        return evaluate_on_file(run_dir, data, var, aux=aux, out=out, checkpoint=checkpoint,
                                skip_missing=skip_missing, log=log)

    def train_tasks_only(self, config: ExperimentConfig) -> dict[str, Any]:
        o = task_options(config)
        normaliser = fit_normaliser(o)
        # with a spatial hold-out the fixed inputs must end where the training part does
        domain = fixed_input_domain(o, normaliser) if o["holdout_region"] else None
        return {"options": o, "normaliser": normaliser, "domain": domain}

    def tasks(self, config: ExperimentConfig, out_dir: Path, log: Log) -> dict[str, Any]:
        tasks = self.train_tasks_only(config)
        o, normaliser = tasks["options"], tasks["normaliser"]
        normaliser.save(out_dir / NORMALISER_FILE)
        log(f"era5 experiment (size {config.size}): {len(config.models)} model(s); {o['var']} "
            f"mean {normaliser.y_mean:.2f} {normaliser.units}, std {normaliser.y_std:.2f} (days "
            f"{o['train_days'][0]}-{o['train_days'][1]})")
        t = config.train
        if t.test_tasks < 1:
            raise ConfigError("test_tasks: expected >= 1 to evaluate the experiment, got 0")
        test_aux = _generator(o, "test", normaliser, True).fixed_set(
            t.test_tasks, t.eval_batch_size, t.test_seed)
        tasks.update(test_aux=test_aux, test_plain=_strip_aux(test_aux), panels={},
                     start=time.monotonic())
        if o["holdout_region"]:
            ood_aux = _generator(o, "test", normaliser, True, o["holdout_region"]).fixed_set(
                t.test_tasks, t.eval_batch_size, t.test_seed)
            tasks.update(ood_aux=ood_aux, ood_plain=_strip_aux(ood_aux))
        return tasks

    def signature(self, config: ExperimentConfig, tasks: Any) -> dict[str, Any]:
        t = config.train
        return {"version": EVAL_VERSION, "task": {k: str(v) for k, v in tasks["options"].items()},
                "test_tasks": t.test_tasks, "test_seed": t.test_seed,
                "eval_batch_size": t.eval_batch_size,
                "extra": {k: config.extra.get(k, v) for k, v in EXTRA_DEFAULTS.items()}}

    def train(self, config: ExperimentConfig, mc: ModelConfig, tasks: Any, run_dir: Path, *,
              progress: bool, log: Log, device: str | None) -> tuple[nn.Module, dict]:
        o, normaliser = tasks["options"], tasks["normaliser"]
        with_aux = _uses_aux(mc)
        run_dir.mkdir(parents=True, exist_ok=True)
        normaliser.save(run_dir / NORMALISER_FILE)
        spec = ModelSpec(mc.name, 2, 1, model_options(mc, tasks.get("domain")))
        model, history, _ = train_one_model(
            mc, spec, run_dir, lambda: _generator(o, "train", normaliser, with_aux),
            lambda: _generator(o, "val", normaliser, with_aux), progress=progress, log=log,
            device=device)
        return model, history

    def evaluate(self, config: ExperimentConfig, mc: ModelConfig, model: nn.Module, tasks: Any,
                 run_dir: Path) -> dict[str, Any]:
        o, normaliser = tasks["options"], tasks["normaliser"]
        extra = {**EXTRA_DEFAULTS, **config.extra}
        with_aux = _uses_aux(mc)
        test = tasks["test_aux"] if with_aux else tasks["test_plain"]
        metrics = evaluate_era5_model(model, test, normaliser,
                                      equivariance_elements=int(extra["equivariance_elements"]),
                                      equivariance_tasks=int(extra["equivariance_tasks"]))
        entry = {k: metrics[k] for k in ("loglik", "loglik_se", "rmse_K", "rmse_K_se",
                                         "coverage95", "component_loglik",
                                         "component_loglik_se", "delta_equiv",
                                         "delta_equiv_K") if k in metrics}
        if is_approximate(model):
            maps = [map_panels(model, normaliser, o["data"], o["var"], when, aux=o["aux"],
                               aux_vars=o["aux_vars"],
                               context_fraction=float(extra["map_context_fraction"]),
                               seed=int(extra["map_seed"]) + k)
                    for k, when in enumerate(extra["map_times"])]
            entry["correction_elevation_corr"] = correction_elevation_correlation(maps)
            entry.update(correction_terrain_correlations(maps, o["region"]))
            entry["correction_std_K"] = float(np.nanstd(
                np.concatenate([p["correction"].values.ravel() for p in maps])))
            maps[0].to_netcdf(run_dir / "map.nc")
        ckpt = load_checkpoint(run_dir / LAST)
        entry.update({"name": mc.name, "options": mc.options, "steps": finished_step(run_dir),
                      "aux_vars": list(o["aux_vars"]) if with_aux else [],
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "symmetry": repr(getattr(model, "symmetry", None)),
                      "approximate": is_approximate(model),
                      "train_seconds": ckpt.extra.get("seconds"), "test": metrics})
        if "ood_aux" in tasks:  # the spatial hold-out, where the fixed inputs are zero
            entry["id"] = metrics
            entry["ood"] = evaluate_era5_model(
                model, tasks["ood_aux"] if with_aux else tasks["ood_plain"], normaliser,
                equivariance_elements=int(extra["equivariance_elements"]),
                equivariance_tasks=int(extra["equivariance_tasks"]))
        return entry

    def log_entry(self, label: str, entry: dict[str, Any], log: Log) -> None:
        log(f"[{label}] log-lik {entry['loglik']:.3f} ± {entry['loglik_se']:.3f}, RMSE "
            f"{entry['rmse_K']:.3f} K" + (
                f", component {entry['component_loglik']:.3f}, corr(correction, elevation) "
                f"{entry['correction_elevation_corr']:.2f}" if "component_loglik" in entry
                else ""))

    def report(self, config: ExperimentConfig, out_dir: Path, entries: dict[str, Any],
               tasks: Any, result: ExperimentResult, figures: Callable | None) -> None:
        o, normaliser = tasks["options"], tasks["normaliser"]
        extra = {**EXTRA_DEFAULTS, **config.extra}
        panels = {}
        for label in result.models:
            if (out_dir / label / "map.nc").is_file():
                panels[label] = require_xarray().load_dataset(out_dir / label / "map.nc")
        # the runner has already added the still-valid cached entries of models left out
        write_json_atomic(out_dir / METRICS, entries)
        write_text_atomic(out_dir / RESULTS, era5_results_markdown(entries, config))
        paths: list[Path] = []
        if figures is not None and extra.get("figures", True) and panels:
            paths = list(figures(out_dir, panels, entries))
        chosen = [m for m in config.models if m.label in result.models]
        write_json_atomic(out_dir / EXPERIMENT, {
            "name": config.name, "size": config.size, "description": config.description,
            "data": Path(o["data"]).name, "aux": Path(o["aux"]).name, "var": o["var"],
            "split_days": {s: o[f"{s}_days"] for s in ("train", "val", "test")},
            "normaliser": normaliser.to_dict(), "models": [m.to_dict() for m in chosen],
            "figures": run_paths(paths, out_dir),
            "attribution": ATTRIBUTION, "seconds": time.monotonic() - tasks["start"]})
        result.metrics, result.figures = entries, paths


ERA5_EXPERIMENT = register_experiment(ERA5Experiment())


def run_era5_experiment(config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
                        log: Log | None = None, figures: MapFigureHook | None = None,
                        device: str | None = None, only: Sequence[str] | None = None,
                        restart: bool = False) -> ExperimentResult:
    """Train, evaluate and report every model of an ERA5 experiment (``task.name: era5-uk``;
    see the shipped ``configs/era5-uk.yaml`` and the module docstring).

    Args:
        config: the resolved experiment (``load_named_experiment("era5-uk", size="quick")``).
        out_dir: the run directory (created; rerunning resumes and skips finished models).
        progress: progress bars. log: status messages (default stderr).
        figures: draws the map figures from the panels of every approximately equivariant
            model (e.g. :func:`approxeq.plot.maps.era5_figures`); ``None`` or
            ``extra.figures: false``: none (the correlations are computed anyway).
        device: overrides every model's ``train.device``.
        only: run only these labels.
        restart: retrain models whose directories another configuration produced.

    Returns:
        :class:`~approxeq.experiments.ExperimentResult` (``metrics`` is ``metrics.json``).
    """
    return ERA5_EXPERIMENT.run(config, out_dir, progress=progress, log=log, figures=figures,
                               device=device, only=only, restart=restart)


__all__ = [
    "EXTRA_DEFAULTS",
    "TASK_DEFAULTS",
    "ERA5Experiment",
    "MapFigureHook",
    "correction_elevation_correlation",
    "correction_terrain_correlations",
    "fit_normaliser",
    "is_era5_experiment",
    "map_panels",
    "run_era5_experiment",
    "task_options",
    "weather_dir",
]
