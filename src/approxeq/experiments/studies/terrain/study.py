"""The terrain experiment: temperature on real topography, trained on Europe, tested in region
(held-out task seeds, ``id``) and out of region on the contiguous US (``ood``).

The field is ``y = g + β h⁺ + γ land + ε`` of :mod:`approxeq.data.terrain`: a stationary GP
``g`` that each task's context reveals, plus a deterministic part fixed by the terrain that a
fixed input (or an elevation input) can learn. Inputs are normalised with Europe's normaliser in
both regions, so the US lies far outside every fixed input's domain (Europe's box), where the
approximately equivariant models are exactly their equivariant component.

Two exact references bound every model, in both regions: the GP **oracle** (it knows ``β``,
``γ`` and ``h``) and the **terrain-blind** GP (the same posterior without the deterministic
part: what the context alone can tell).

Training batches come from a pool sampled once per process and shared by every model and
seed (fresh terrain tasks cost a Cholesky factorisation each); each model draws from it in its
own random order. A run directory holds per model label the training run and ``eval.json``; at
the top ``config.yaml``, ``metrics.json``, ``results.md``, ``experiment.json`` and the map
figures. ``metrics.json`` has one entry per model with ``id`` and ``ood`` blocks (log-likelihood
of normalised outputs, RMSE normalised and in K, and for approximate models the component's
metrics, Δequiv and ``correction_lapse_corr``: the correlation of the learned correction with
``β h⁺``), plus ``oracle`` and ``terrain-blind`` entries with the same blocks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from approxeq.approximate import is_approximate
from approxeq.data.base import TaskGenerator
from approxeq.data.normalise import Normaliser
from approxeq.data.terrain import (
    AUX_CHANNELS,
    TerrainField,
    TerrainTaskGenerator,
    terrain_normaliser,
)
from approxeq.experiments.base import (
    ExperimentResult,
    Log,
    task_options_with_defaults,
)
from approxeq.experiments.evaluation import evaluate_model, metrics_entry, oracle_metrics
from approxeq.experiments.np_runner import (
    NeuralProcessExperiment,
    model_info,
    model_options,
    train_one_model,
)
from approxeq.experiments.registry import register_experiment
from approxeq.experiments.report import cell, format_table
from approxeq.experiments.schema import ExperimentConfig, ModelConfig
from approxeq.experiments.studies.terrain.maps import (
    correction_correlations,
    correction_lapse_correlation,
    fixed_input_progress,
    lapse_at,
    map_panel,
)
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.np.batch import Batch
from approxeq.train.checkpoint import ModelSpec
from approxeq.train.config import ConfigError
from approxeq.train.config_checks import dataclass_from_mapping
from approxeq.train.rundir import (
    EXPERIMENT,
    METRICS,
    RESULTS,
    finished_step,
    run_paths,
    with_cached_entries,
)

TASK_NAME = "terrain"
ORACLE = "oracle"
BLIND = "terrain-blind"
#: bump when the evaluation protocol changes, so cached per-model evaluations are redone
#: (2: the correction is measured in eval mode; before, evaluation left the model in training
#: mode and ``correction_lapse_corr`` carried fixed-input and elevation dropout; 3: adds
#: ``correction_oracle_corr``)
EVAL_VERSION = 3

#: task options and their defaults (``task.options`` of the experiment YAML)
TASK_DEFAULTS: dict[str, Any] = {
    "region": "europe",            # training and in-region test region
    "ood_region": "conus",         # out-of-region test region
    "patch_degrees": 8.0,
    "context_fraction": [0.01, 0.3],
    "max_targets": 128,
    "same_patch": True,            # one patch per batch: keeps a ConvCNP's grid one patch wide
    "scale": 10.0,                 # degrees per normalised input unit, both axes
    "field": {},                   # TerrainField parameters
    "train_pool": 800,             # training batches sampled once, shared by models and seeds
    "pool_seed": 7,
    "models": None,                # labels a size runs (see np_runner.size_models); None: all
}
#: ``extra`` options and their defaults
EXTRA_DEFAULTS: dict[str, Any] = {
    "equivariance_elements": 4, "equivariance_tasks": 8, "figures": True,
    # (name, region, lat, lon): the patches drawn in the map figures
    "map_patches": [["alps", "europe", 46.5, 10.0], ["rockies", "conus", 39.5, -106.0]],
    "map_context_fraction": 0.1, "map_seed": 0,
}

#: ``figures(out_dir, panels) -> written paths``; ``panels[label][patch name]`` is a
#: :func:`map_panel` dict, e.g. :func:`approxeq.plot.terrain.terrain_figures`
TerrainFigureHook = Callable[[Path, Mapping[str, Mapping[str, dict]]], Sequence[Path]]


def task_options(config: ExperimentConfig) -> dict[str, Any]:
    """The task options of a terrain experiment, defaults filled in and checked."""
    o = task_options_with_defaults(config, TASK_NAME, TASK_DEFAULTS)
    if config.task.dim_x != 2 or config.task.dim_y != 1:
        raise ConfigError(f"task.dim_x, task.dim_y: the terrain task has (lat, lon) inputs and "
                          f"one output, so 2 and 1; got {config.task.dim_x}, "
                          f"{config.task.dim_y}")
    o["field"] = dataclass_from_mapping(TerrainField, o["field"], "task.options.field")
    if int(o["train_pool"]) < 1:
        raise ConfigError(f"task.options.train_pool: expected >= 1 batches, got "
                          f"{o['train_pool']!r}")
    return o


def normaliser_of(o: Mapping[str, Any]) -> Normaliser:
    """The training region's normaliser, shared by every region."""
    return terrain_normaliser(o["field"], o["region"], scale=float(o["scale"]))


def make_generator(o: Mapping[str, Any], region: str, *, oracle: bool,
                   aux: bool = True) -> TerrainTaskGenerator:
    """The task generator of ``region`` with the experiment's normaliser; ``aux``: with both
    auxiliary channels (elevation and land)."""
    try:
        return TerrainTaskGenerator(
            region, o["field"], normaliser=normaliser_of(o),
            patch_degrees=float(o["patch_degrees"]),
            context_fraction=tuple(o["context_fraction"]), max_targets=int(o["max_targets"]),
            aux_vars=AUX_CHANNELS if aux else (), same_patch=bool(o["same_patch"]),
            oracle=oracle)
    except ValueError as err:
        raise ConfigError(f"task.options: {err}") from None


def uses_aux(options: Mapping[str, Any]) -> bool:
    """Whether a model's options give it the auxiliary inputs (``dim_aux: 2``)."""
    dim_aux = int(options.get("dim_aux", 0) or 0)
    if dim_aux not in (0, len(AUX_CHANNELS)):
        raise ConfigError(f"models: dim_aux: expected 0 or {len(AUX_CHANNELS)} "
                          f"({' and '.join(AUX_CHANNELS)}), got {dim_aux}")
    return dim_aux > 0


def strip_aux(batches: Sequence[Batch]) -> list[Batch]:
    """``batches`` without their auxiliary inputs (for models that read none)."""
    return [replace(b, aux_c=None, aux_t=None) for b in batches]


class TaskPool(TaskGenerator):
    """Serves pre-sampled batches in a random order drawn from the caller's generator.

    Args:
        batches: the pool (every batch of one size). with_aux: keep the auxiliary inputs.
    """

    dim_x, dim_y = 2, 1

    def __init__(self, batches: Sequence[Batch], *, with_aux: bool) -> None:
        if not batches:
            raise ValueError("batches: expected a non-empty pool")
        self.batches = list(batches) if with_aux else strip_aux(batches)
        self.batch_size = batches[0].batch_size

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        if batch_size != self.batch_size:
            raise ValueError(f"batch_size: the training pool holds batches of "
                             f"{self.batch_size} tasks, got {batch_size}")
        return self.batches[int(torch.randint(len(self.batches), (), generator=generator))]


_POOLS: dict[str, list[Batch]] = {}


def training_pool(o: Mapping[str, Any], batch_size: int, log: Log) -> list[Batch]:
    """The pool of training batches (with auxiliary inputs, no oracle scores), sampled once
    per process for given task options and batch size."""
    key = json.dumps({k: (v.__dict__ if isinstance(v, TerrainField) else v)
                      for k, v in sorted(o.items())} | {"batch_size": batch_size},
                     sort_keys=True, default=str)
    if key not in _POOLS:
        start = time.monotonic()
        gen = make_generator(o, o["region"], oracle=False)
        _POOLS[key] = gen.fixed_set(int(o["train_pool"]) * batch_size, batch_size,
                                    int(o["pool_seed"]))
        log(f"terrain: sampled a pool of {len(_POOLS[key])} training batches of {batch_size} "
            f"in {time.monotonic() - start:.0f} s")
    return _POOLS[key]


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def terrain_results_table(metrics: Mapping[str, Any]) -> list[list[str]]:
    """Rows (header first): per model and reference, in and out of region, the log-likelihood
    ± per-task s.e. (and ± s.e. over seeds), the RMSE in K, the component's log-likelihood,
    Δequiv in K, the 95 % coverage out of region and the correction's correlations in region
    with β·h⁺ and with the oracle's correction."""
    rows = [["model", "log-lik ID", "log-lik OOD", "RMSE ID (K)", "RMSE OOD (K)",
             "component ID", "component OOD", "Δequiv OOD (K)", "coverage OOD",
             "corr(correction, β·h⁺)", "corr(correction, oracle's)"]]
    for label, e in metrics.items():
        i, o = e.get("id", {}), e.get("ood", {})
        rows.append([label, cell(i, "loglik"), cell(o, "loglik"), cell(i, "rmse_K", 2),
                     cell(o, "rmse_K", 2), cell(i.get("component"), "loglik"),
                     cell(o.get("component"), "loglik"), cell(o, "delta_equiv_K", 4),
                     cell(o, "coverage95", 3), cell(i, "correction_lapse_corr", 2),
                     cell(i, "correction_oracle_corr", 2)])
    return rows


def terrain_results_markdown(metrics: Mapping[str, Any], config: ExperimentConfig) -> str:
    """``results.md`` of the terrain experiment."""
    return "\n".join([
        f"# {config.name} ({config.size} size)", "", (config.description or "").strip(), "",
        format_table(terrain_results_table(metrics)), "",
        "ID: Europe, held-out task seeds; OOD: the contiguous US, where every fixed input is "
        "zero. *log-lik*: mean Gaussian log-likelihood per target of the outputs in units of "
        f"{task_options(config)['field'].y_scale:g} K ± standard error over tasks (and over "
        "training seeds, when there are several); *component*: the model with every fixed "
        "input and auxiliary embedding zero; *Δequiv*: mean |full − component| of the "
        "predictive mean; *coverage*: share of targets inside the central 95 % interval; "
        "*corr*: Pearson correlation, over the ID targets, of that correction with β·h⁺ and "
        "with the oracle's correction (exact minus terrain-blind GP mean: what knowing the "
        "terrain adds to the context, the ideal correction). `oracle`: the exact GP "
        "posterior knowing the terrain term; `terrain-blind`: the same GP without it.", ""])


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------

class TerrainExperiment(NeuralProcessExperiment):
    """Neural processes on the terrain field (see the module docstring)."""

    name = TASK_NAME
    task_names = (TASK_NAME,)
    reserved = (ORACLE, BLIND)
    reevaluates = "terrain runs"
    reevaluates_own_tests = True

    def results_table(self, metrics: Mapping[str, Any]) -> list[list[str]]:
        return terrain_results_table(metrics)

    def figures(self) -> Callable | None:
        from approxeq.plot.terrain import terrain_figures

        return terrain_figures

    def results_markdown(self, metrics: Mapping[str, Any], config: ExperimentConfig) -> str:
        """``results.md`` of ``metrics`` (also of the aggregate over seeds)."""
        return terrain_results_markdown(metrics, config)

    def train_tasks_only(self, config: ExperimentConfig) -> dict[str, Any]:
        o = task_options(config)
        for mc in config.models:
            uses_aux(mc.options)
        domain = make_generator(o, o["region"], oracle=False, aux=False).domain
        return {"options": o, "domain": domain, "start": time.monotonic()}

    def tasks(self, config: ExperimentConfig, out_dir: Path, log: Log) -> dict[str, Any]:
        tasks = self.train_tasks_only(config)
        o = tasks["options"]
        t = config.train
        if t.test_tasks < 1:
            raise ConfigError("test_tasks: expected >= 1 to evaluate the experiment, got 0")
        log(f"terrain experiment (size {config.size}): {len(config.models)} model(s); train "
            f"on {o['region']}, test in region and on {o['ood_region']}; building test sets")
        tasks["generators"] = {"id": make_generator(o, o["region"], oracle=True),
                               "ood": make_generator(o, o["ood_region"], oracle=True)}
        tasks["test"] = {s: g.fixed_set(t.test_tasks, t.eval_batch_size, t.test_seed)
                         for s, g in tasks["generators"].items()}
        return tasks

    def signature(self, config: ExperimentConfig, tasks: Any) -> dict[str, Any]:
        t, extra = config.train, {**EXTRA_DEFAULTS, **config.extra}
        o = {k: (v.__dict__ if isinstance(v, TerrainField) else v)
             for k, v in tasks["options"].items()
             if k not in ("train_pool", "pool_seed", "models")}
        return {"version": EVAL_VERSION, "task": o, "test_tasks": t.test_tasks,
                "test_seed": t.test_seed, "eval_batch_size": t.eval_batch_size,
                "equivariance_elements": extra["equivariance_elements"],
                "equivariance_tasks": extra["equivariance_tasks"]}

    def train(self, config: ExperimentConfig, mc: ModelConfig, tasks: Any, run_dir: Path, *,
              progress: bool, log: Log, device: str | None) -> tuple[nn.Module, dict]:
        o = tasks["options"]
        with_aux = uses_aux(mc.options)
        spec = ModelSpec(mc.name, 2, 1, model_options(mc, tasks["domain"]))

        def pool() -> TaskGenerator:
            return TaskPool(training_pool(o, mc.train.batch_size, log), with_aux=with_aux)

        def val() -> TaskGenerator:
            gen = make_generator(o, o["region"], oracle=False, aux=with_aux)
            return gen

        extra = None
        if mc.options.get("approximate"):
            extra = fixed_input_progress(make_generator(o, o["region"], oracle=False),
                                         mc.train.val_seed)
        model, history, _ = train_one_model(mc, spec, run_dir, pool, val, progress=progress,
                                            log=log, device=device, val_extra=extra)
        return model, history

    def evaluate(self, config: ExperimentConfig, mc: ModelConfig, model: nn.Module, tasks: Any,
                 run_dir: Path) -> dict[str, Any]:
        extra = {**EXTRA_DEFAULTS, **config.extra}
        with_aux = uses_aux(mc.options)
        scale = tasks["options"]["field"].y_scale
        per_setting: dict[str, dict[str, Any]] = {}
        for s, batches in tasks["test"].items():
            batches = batches if with_aux else strip_aux(batches)
            m = evaluate_model(model, batches, y_scale=scale,
                               equivariance_elements=int(extra["equivariance_elements"]),
                               equivariance_tasks=int(extra["equivariance_tasks"]))
            if is_approximate(model) and s == "id":  # out of region only aux inputs correct
                m.update(correction_correlations(model, batches, tasks["generators"][s]))
            per_setting[s] = m
        info = model_info(mc, model, finished_step(run_dir), run_dir)
        info["aux_vars"] = list(AUX_CHANNELS) if with_aux else []
        for key in ("correction_lapse_corr", "correction_oracle_corr"):
            if key in per_setting["id"]:
                info[key] = per_setting["id"][key]
        return metrics_entry(per_setting, info)

    def log_entry(self, label: str, entry: dict[str, Any], log: Log) -> None:
        log(f"[{label}] " + ", ".join(
            f"{s}: {entry[s]['loglik']:.3f} ± {entry[s]['loglik_se']:.3f} "
            f"(RMSE {entry[s].get('rmse_K', math.nan):.2f} K)" for s in ("id", "ood")
            if s in entry))

    def report(self, config: ExperimentConfig, out_dir: Path, entries: dict[str, Any],
               tasks: Any, result: ExperimentResult, figures: Callable | None) -> None:
        extra = {**EXTRA_DEFAULTS, **config.extra}
        metrics = with_cached_entries([m.label for m in config.models], out_dir, entries,
                                      self.signature(config, tasks))
        metrics = self.finish_entries(config, metrics, tasks)
        write_json_atomic(out_dir / METRICS, metrics)
        write_text_atomic(out_dir / RESULTS, terrain_results_markdown(metrics, config))
        paths: list[Path] = []
        if figures is not None and extra.get("figures", True):
            panels = self.map_panels(config, tasks, result.models)
            if panels:
                paths = list(figures(out_dir, panels))
        chosen = [m for m in config.models if m.label in result.models]
        o = {k: (v.__dict__ if isinstance(v, TerrainField) else v)
             for k, v in tasks["options"].items()}
        write_json_atomic(out_dir / EXPERIMENT, {
            "name": config.name, "size": config.size, "description": config.description,
            "task": o, "settings": list(tasks["test"]),
            "fixed_input_domain": [list(d) for d in tasks["domain"]],
            "models": [m.to_dict() for m in chosen],
            "figures": run_paths(paths, out_dir),
            "seconds": time.monotonic() - tasks["start"]})
        result.metrics, result.figures = metrics, paths

    def finish_entries(self, config: ExperimentConfig, entries: dict[str, Any], tasks: Any
                       ) -> dict[str, Any]:
        """``entries`` with the two references added: the exact GP ``oracle`` and the
        ``terrain-blind`` GP, scored on the same test tasks."""
        scale = tasks["options"]["field"].y_scale
        metrics = dict(entries)
        for label, key, oracle_key, name in ((ORACLE, "gt", "oracle", "terrain-oracle"),
                                             (BLIND, "blind", "blind_oracle", "terrain-blind")):
            ref = {s: m for s, b in tasks["test"].items()
                   if (m := oracle_metrics(b, key=key, oracle_key=oracle_key,
                                           y_scale=scale)) is not None}
            if ref:
                metrics[label] = metrics_entry(ref, {"name": name})
        return metrics

    def map_panels(self, config: ExperimentConfig, tasks: Any,
                   models: Mapping[str, nn.Module]) -> dict[str, dict[str, dict]]:
        """The map panels (:func:`map_panel`) of every approximate model, per patch of
        ``extra.map_patches``."""
        extra = {**EXTRA_DEFAULTS, **config.extra}
        gens = {g.topography.name: g for g in tasks["generators"].values()}
        panels: dict[str, dict[str, dict]] = {}
        for label, model in models.items():
            if not is_approximate(model):
                continue
            panels[label] = {}
            for k, (name, region, lat, lon) in enumerate(extra["map_patches"]):
                if region not in gens:
                    raise ConfigError(f"extra.map_patches: region {region!r} is neither the "
                                      f"training nor the test region ({sorted(gens)})")
                gen = gens[region]
                panels[label][name] = map_panel(
                    model, gen, gen.patch_corner(float(lat), float(lon)),
                    context_fraction=float(extra["map_context_fraction"]),
                    seed=int(extra["map_seed"]) + k)
        return panels


TERRAIN_EXPERIMENT = register_experiment(TerrainExperiment())


__all__ = ["BLIND", "EXTRA_DEFAULTS", "ORACLE", "TASK_DEFAULTS", "TaskPool",
           "TerrainExperiment", "TerrainFigureHook", "correction_lapse_correlation",
           "lapse_at", "make_generator", "map_panel", "model_options", "normaliser_of",
           "strip_aux", "task_options", "terrain_results_markdown", "terrain_results_table",
           "training_pool", "uses_aux"]
