"""The smoke experiment: 2-D plumes of buoyant smoke in a closed box around a fixed obstacle,
where the walls, the obstacle and gravity break translation and rotation symmetry (the 2-D
column of the AE-NP paper's table 1).

Data: :func:`approxeq.data.smoke.load_smoke` (simulated once by the library's own
incompressible solver, cached as netCDF). A task is one snapshot of one simulation: a random
share of the fluid cells (``context_fraction``) as context, up to ``max_targets`` of the others
as targets in training and every other cell at evaluation. Inputs are the cell centres in
``[-1, 1]²``; the output is the z-scored density, or (``outputs: velocity``, the
``smoke-velocity`` YAML) the velocity, a vector divided by one scale, for models built with
``y_rep: vector``: their equivariance error then acts on it as a vector, and the maps keep its
arrows (``smoke_vectors.png``). Simulations are cut in order into train/validation/test
(``fractions``).

**Transfer test.** Two more sets of ``transfer_simulations`` simulations, with unseen inflows
(seed ``settings.seed + transfer_seed_offset``): the obstacle moved to ``moved_centre``, and
the whole scene (obstacle, inflows, gravity) turned by 90°, whose velocities are turned with
it (v at x becomes R v at R x; see :meth:`~approxeq.data.smoke.SmokeData.turned`). Both use
the training set's normalisation; there the learned fixed inputs describe the wrong scene.

A run directory holds, per model label, the training run and ``eval.json`` (and
``panels.npz``: the maps the figures draw); at the top ``config.yaml``, ``metrics.json``,
``results.md``, ``experiment.json`` and the figures. Each ``metrics.json`` entry holds
``loglik``, ``loglik_se``, ``rmse`` (normalised units, test split), ``component_loglik`` and
``delta_equiv`` for approximately equivariant models, the model's description, ``id`` (every
metric of :func:`~approxeq.experiments.evaluation.evaluate_model`, the equivariance error under
``model.symmetry`` included) and ``transfer: {moved: {...}, rotated: {...}}``, each with
``loglik``, ``loglik_se``, ``rmse`` and, for approximate models, ``component_loglik``,
``gain_over_component`` (log-likelihood minus its component's; negative: the fixed inputs
hurt) and ``gain_over_exact`` (minus the exactly equivariant model of the same family).

Seeds: every model trains with the experiment's single ``train.seed``; :meth:`SmokeExperiment.
train` and :meth:`SmokeExperiment.evaluate` take everything from the model's own config, so a
common multi-seed mechanism can run them once per seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from approxeq.approximate import equivariant_component, is_approximate
from approxeq.data.smoke import (
    SmokeData,
    SmokeNormalisation,
    SmokeSettings,
    SmokeTaskGenerator,
    load_smoke,
)
from approxeq.experiments.base import (
    ExperimentResult,
    Log,
    task_options_with_defaults,
)
from approxeq.experiments.evaluation import evaluate_model, metrics_entry, to_model
from approxeq.experiments.np_runner import (
    NeuralProcessExperiment,
    model_info,
    train_one_model,
)
from approxeq.experiments.registry import register_experiment
from approxeq.experiments.report import cell, format_table, mean_se
from approxeq.experiments.schema import ExperimentConfig, ModelConfig
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.np.batch import Batch
from approxeq.np.functional import evaluation_mode
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

TASK_NAME = "smoke"
PANELS = "panels.npz"
#: bump when the evaluation protocol changes, so cached per-model evaluations are redone
#: (2: the map panels are made in eval mode; before, evaluation left the model in training
#: mode and the corrections drawn carried fixed-input dropout)
EVAL_VERSION = 2
TRANSFER_KINDS = ("moved", "rotated")
#: what the log-likelihood of the results table is of, by ``outputs``
OUTPUT_WORDS = {
    "density": "of the normalised density",
    "velocity": ("and velocity component (marginal Gaussians of the two components, which share "
                 "one scale so that the velocity turns with the scene)"),
    "both": "and output channel (density, then the two velocity components)",
}
#: the channels of the velocity (a vector that turns with the scene) for each ``outputs``
VECTOR_CHANNELS = {"velocity": (0, 1), "both": (1, 2)}

#: task options and their defaults (``task.options`` of the experiment YAML)
TASK_DEFAULTS: dict[str, Any] = {
    "settings": {},                 # SmokeSettings fields that differ from the defaults
    "outputs": "density",
    "fractions": [0.8, 0.1, 0.1],   # train / validation / test simulations
    "context_fraction": [0.05, 0.5],
    "max_targets": 256,             # training and validation
    "eval_max_targets": None,       # test and transfer: every remaining cell
    "transfer": list(TRANSFER_KINDS),
    "transfer_simulations": 32,
    "transfer_seed_offset": 1,
    "moved_centre": [0.3, 0.62],
    "cache_dir": None,              # default: approxeq.data.smoke.default_cache_dir()
    "models": None,                 # labels a size runs (see np_runner.size_models); None: all
}
#: ``extra`` options and their defaults
EXTRA_DEFAULTS: dict[str, Any] = {
    "equivariance_elements": 4, "equivariance_tasks": 8,
    "map_tasks": 3, "map_context_fraction": 0.2, "map_seed": 0, "figures": True,
    # the exactly equivariant model each approximate family is compared with in the transfer
    # test, by registry name (default: the same name)
    "exact_names": {"relaxed-convcnp": "convcnp"},
}

#: ``figures(out_dir, panels, metrics) -> written paths``; ``panels[label]`` is a dict of arrays
#: (see :func:`map_panels`), e.g. :func:`approxeq.plot.smoke.smoke_figures`
SmokeFigureHook = Callable[[Path, Mapping[str, Any], Mapping[str, Any]], Sequence[Path]]


def task_options(config: ExperimentConfig) -> dict[str, Any]:
    """The task options of a smoke experiment with defaults filled in and checked."""
    o = task_options_with_defaults(config, TASK_NAME, TASK_DEFAULTS)
    bad = set(o["transfer"] or []) - set(TRANSFER_KINDS)
    if bad:
        raise ConfigError(f"task.options.transfer: expected a subset of {list(TRANSFER_KINDS)}, "
                          f"got {o['transfer']}")
    settings = o["settings"] or {}
    if isinstance(settings, dict):
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    o["settings"] = dataclass_from_mapping(SmokeSettings, settings, "task.options.settings")
    dim_y = {"density": 1, "velocity": 2, "both": 3}.get(o["outputs"])
    if dim_y is None:
        raise ConfigError(f"task.options.outputs: expected 'density', 'velocity' or 'both', got "
                          f"{o['outputs']!r}")
    if config.task.dim_x != 2 or config.task.dim_y != dim_y:
        raise ConfigError(f"task.dim_x, task.dim_y: the smoke task with outputs "
                          f"{o['outputs']!r} has 2 inputs and {dim_y} output(s); got "
                          f"{config.task.dim_x}, {config.task.dim_y}")
    return o


def transfer_settings(o: Mapping[str, Any], kind: str) -> SmokeSettings:
    """The settings of one transfer set: ``kind`` applied to the training settings, with
    ``transfer_simulations`` simulations and unseen inflows."""
    s: SmokeSettings = o["settings"]
    moved = s.transfer(kind, obstacle_centre=tuple(o["moved_centre"]))
    return replace(moved, n_simulations=int(o["transfer_simulations"]),
                   seed=s.seed + int(o["transfer_seed_offset"]))


def _generator(data: SmokeData, o: Mapping[str, Any], split: str,
               normalisation: SmokeNormalisation, max_targets: int | None) -> SmokeTaskGenerator:
    return SmokeTaskGenerator(data, split, fractions=tuple(o["fractions"]),
                              outputs=o["outputs"], context_fraction=tuple(o["context_fraction"]),
                              max_targets=max_targets, normalisation=normalisation)


def load_data(o: Mapping[str, Any], *, progress: bool = True
              ) -> tuple[SmokeData, SmokeNormalisation]:
    """The training data (cached) and its normalisation, fitted on the training split."""
    data = load_smoke(o["settings"], cache_dir=o["cache_dir"], progress=progress)
    return data, SmokeNormalisation.fit(data, data.split("train", tuple(o["fractions"])))


# --------------------------------------------------------------------------------------------
# Maps for the figures: truth, predictive mean, error and the learned correction
# --------------------------------------------------------------------------------------------

def map_tasks(gen: SmokeTaskGenerator, n_maps: int, context_fraction: float, seed: int
              ) -> list[dict[str, Any]]:
    """``n_maps`` whole-box tasks on the last snapshots of the first simulations of ``gen``:
    each a dict with ``sim``, ``snapshot``, ``x [n, n, 2]``, ``y [n, n, dim_y]``, ``solid
    [n, n]`` and ``context [n, n]`` (bool, a random ``context_fraction`` of the fluid cells)."""
    g = np.random.default_rng(seed)
    n_t = len(gen.data.snapshot_steps)
    out = []
    for k in range(min(n_maps, gen.indices.size)):
        sim, snap = int(gen.indices[k]), n_t - 1 - (k % n_t)
        x, y, solid = gen.field(sim, snap)
        fluid = ~solid.numpy()
        context = fluid & (g.random(fluid.shape) < context_fraction)
        out.append({"sim": sim, "snapshot": snap, "x": x, "y": y, "solid": solid.numpy(),
                    "context": context})
    return out


def map_panels(model: nn.Module, tasks: Sequence[Mapping[str, Any]], *, seed: int = 0,
               vector: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """The predictions of ``model`` on :func:`map_tasks`, as arrays ``[k, n, n]`` of the first
    output channel (NaN in the obstacle): ``truth``, ``context`` (bool), ``mean``, ``std``,
    ``error = |mean - truth|`` and, for approximately equivariant models, ``component`` (the
    mean of the equivariant component) and ``correction = mean - component``; plus ``solid
    [n, n]``, ``sim`` and ``snapshot [k]``. With ``vector`` (the two channels of the velocity),
    also ``truth_uv``, ``mean_uv`` and, for approximate models, ``component_uv`` and
    ``correction_uv``, each ``[k, n, n, 2]``: the velocity arrows."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("truth", "context", "mean", "std",
                                                       "component", "truth_uv", "mean_uv",
                                                       "component_uv")}
    uv = list(vector) if vector is not None else None
    approximate = is_approximate(model)
    for t in tasks:
        n = t["solid"].shape[0]
        flat_x, flat_y = t["x"].reshape(n * n, 2), t["y"].reshape(n * n, -1)
        ctx = torch.from_numpy(t["context"].reshape(-1))
        fluid = torch.from_numpy(~t["solid"].reshape(-1))
        b = to_model(Batch(xc=flat_x[ctx][None], yc=flat_y[ctx][None], xt=flat_x[fluid][None],
                           yt=flat_y[fluid][None]), model)

        def mean_std(b: Batch = b) -> tuple[np.ndarray, np.ndarray]:
            # eval mode: in training mode fixed-input dropout would enter the correction
            with torch.no_grad(), torch.random.fork_rng(), evaluation_mode(model):
                torch.manual_seed(seed)
                dist = model(b.xc, b.yc, b.xt)
            return dist.mean[0].double().cpu().numpy(), dist.stddev[0].double().cpu().numpy()

        def on_grid(values: np.ndarray, n: int = n, fluid: torch.Tensor = fluid) -> np.ndarray:
            a = np.full((n * n,) + values.shape[1:], np.nan)
            a[fluid.numpy()] = values
            return a.reshape((n, n) + values.shape[1:])

        mean, std = mean_std()
        truth = t["y"].double().numpy()
        out["truth"].append(np.where(t["solid"], np.nan, truth[..., 0]))
        out["context"].append(t["context"])
        out["mean"].append(on_grid(mean[:, 0]))
        out["std"].append(on_grid(std[:, 0]))
        if uv is not None:
            out["truth_uv"].append(np.where(t["solid"][..., None], np.nan, truth[..., uv]))
            out["mean_uv"].append(on_grid(mean[:, uv]))
        if approximate:
            with equivariant_component(model):
                comp, _ = mean_std()
            out["component"].append(on_grid(comp[:, 0]))
            if uv is not None:
                out["component_uv"].append(on_grid(comp[:, uv]))
    panels = {k: np.stack(v) for k, v in out.items() if v}
    panels["error"] = np.abs(panels["mean"] - panels["truth"])
    if approximate:
        panels["correction"] = panels["mean"] - panels["component"]
        if uv is not None:
            panels["correction_uv"] = panels["mean_uv"] - panels["component_uv"]
    panels["solid"] = tasks[0]["solid"]
    panels["sim"] = np.array([t["sim"] for t in tasks])
    panels["snapshot"] = np.array([t["snapshot"] for t in tasks])
    return panels


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def _transfer_block(metrics: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("loglik", "loglik_se", "rmse", "rmse_se", "component_loglik", "component_loglik_se",
            "delta_equiv", "n_tasks")
    block = {k: metrics[k] for k in keep if k in metrics}
    if "component_loglik" in metrics:
        block["gain_over_component"] = metrics["loglik"] - metrics["component_loglik"]
    return block


def exact_partner(config: ExperimentConfig, mc: ModelConfig, labels: Sequence[str]
                  ) -> str | None:
    """The label of the exactly equivariant model an approximate model ``mc`` is compared with:
    the first non-approximate model of the same family (registry name, mapped by
    ``extra.exact_names``) and the same ``group`` option, among ``labels``."""
    names = {**EXTRA_DEFAULTS["exact_names"], **(config.extra.get("exact_names") or {})}
    family = names.get(mc.name, mc.name)
    for other in config.models:
        if (other.label in labels and other.label != mc.label and other.name == family
                and not other.options.get("approximate", False)
                and other.options.get("group") == mc.options.get("group")):
            return other.label
    return None


def add_exact_gains(config: ExperimentConfig, entries: dict[str, Any]) -> None:
    """Fill ``gain_over_exact`` (and ``exact``, the partner's label) into the transfer blocks of
    approximate models whose exact partner (:func:`exact_partner`) is in ``entries``."""
    by_label = {m.label: m for m in config.models}
    for label, entry in entries.items():
        mc = by_label.get(label)
        if mc is None or not entry.get("approximate") or "transfer" not in entry:
            continue
        partner = exact_partner(config, mc, list(entries))
        if partner is None:
            continue
        for kind, block in entry["transfer"].items():
            ref = entries[partner].get("transfer", {}).get(kind)
            if ref is not None:
                block["exact"] = partner
                block["gain_over_exact"] = block["loglik"] - ref["loglik"]


class SmokeExperiment(NeuralProcessExperiment):
    """Neural processes on smoke plumes around an obstacle (see the module docstring)."""

    name = TASK_NAME
    task_names = (TASK_NAME,)
    reevaluates = "smoke runs"
    reevaluates_own_tests = True
    reevaluate_options = {"panels": False}

    def results_table(self, metrics: Mapping[str, Any]) -> list[list[str]]:
        return smoke_results_table(metrics)

    def figures(self) -> Callable | None:
        from approxeq.plot.smoke import smoke_figures

        return smoke_figures

    def train_tasks_only(self, config: ExperimentConfig) -> dict[str, Any]:
        o = task_options(config)
        data, norm = load_data(o, progress=False)
        return {"options": o, "data": data, "normalisation": norm}

    def tasks(self, config: ExperimentConfig, out_dir: Path, log: Log) -> dict[str, Any]:
        start = time.monotonic()
        o = task_options(config)
        s: SmokeSettings = o["settings"]
        log(f"smoke experiment (size {config.size}): {len(config.models)} model(s); "
            f"{s.n_simulations} simulations on a {s.grid} x {s.grid} grid")
        data, norm = load_data(o)
        t = config.train
        if t.test_tasks < 1:
            raise ConfigError("test_tasks: expected >= 1 to evaluate the experiment, got 0")
        emax = o["eval_max_targets"]
        test_gen = _generator(data, o, "test", norm, emax)
        test = test_gen.fixed_set(t.test_tasks, t.eval_batch_size, t.test_seed)
        transfer = {}
        for kind in o["transfer"] or []:
            tdata = load_smoke(transfer_settings(o, kind), cache_dir=o["cache_dir"])
            gen = _generator(tdata, o, "all", norm, emax)
            transfer[kind] = gen.fixed_set(t.test_tasks, t.eval_batch_size, t.test_seed)
        extra = {**EXTRA_DEFAULTS, **config.extra}
        maps = map_tasks(test_gen, int(extra["map_tasks"]), float(extra["map_context_fraction"]),
                         int(extra["map_seed"]))
        log(f"smoke data ready in {time.monotonic() - start:.0f} s: {t.test_tasks} test tasks"
            + "".join(f", {t.test_tasks} {k} tasks" for k in transfer))
        return {"options": o, "data": data, "normalisation": norm, "test": test,
                "transfer": transfer, "maps": maps, "start": start}

    def signature(self, config: ExperimentConfig, tasks: Any) -> dict[str, Any]:
        t = config.train
        o = tasks["options"]
        return {"version": EVAL_VERSION,
                "task": {k: (v.to_dict() if isinstance(v, SmokeSettings) else v)
                         for k, v in o.items() if k not in ("cache_dir", "models")},
                "test_tasks": t.test_tasks, "test_seed": t.test_seed,
                "eval_batch_size": t.eval_batch_size,
                "extra": {k: config.extra.get(k, v) for k, v in EXTRA_DEFAULTS.items()}}

    def train(self, config: ExperimentConfig, mc: ModelConfig, tasks: Any, run_dir: Path, *,
              progress: bool, log: Log, device: str | None) -> tuple[nn.Module, dict]:
        o, data, norm = tasks["options"], tasks["data"], tasks["normalisation"]
        spec = ModelSpec(mc.name, config.task.dim_x, config.task.dim_y, dict(mc.options))
        model, history, _ = train_one_model(
            mc, spec, run_dir, lambda: _generator(data, o, "train", norm, o["max_targets"]),
            lambda: _generator(data, o, "val", norm, o["max_targets"]), progress=progress,
            log=log, device=device)
        return model, history

    def evaluate(self, config: ExperimentConfig, mc: ModelConfig, model: nn.Module, tasks: Any,
                 run_dir: Path, *, panels: bool = True) -> dict[str, Any]:
        """The ``metrics.json`` entry of one trained model; with ``panels``, its maps for the
        figures are saved in ``run_dir/panels.npz`` (re-evaluations write nothing there)."""
        extra = {**EXTRA_DEFAULTS, **config.extra}
        eq = {"equivariance_elements": int(extra["equivariance_elements"]),
              "equivariance_tasks": int(extra["equivariance_tasks"])}
        per_setting = {"id": evaluate_model(model, tasks["test"], **eq)}
        entry = metrics_entry(per_setting, model_info(mc, model, finished_step(run_dir),
                                                      run_dir))
        entry["transfer"] = {
            kind: _transfer_block(evaluate_model(model, batches, equivariance_elements=0))
            for kind, batches in tasks["transfer"].items()}
        if panels and tasks["maps"]:
            vector = VECTOR_CHANNELS.get(tasks["options"]["outputs"])
            np.savez_compressed(run_dir / PANELS, **map_panels(model, tasks["maps"],
                                                                vector=vector))
        return entry

    def log_entry(self, label: str, entry: dict[str, Any], log: Log) -> None:
        text = f"[{label}] log-lik {entry['loglik']:.3f} ± {entry['loglik_se']:.3f}"
        if "component_loglik" in entry:
            text += f", component {entry['component_loglik']:.3f}"
        for kind, block in entry.get("transfer", {}).items():
            text += f"; {kind} {block['loglik']:.3f}"
            if "gain_over_component" in block:
                text += f" ({block['gain_over_component']:+.3f} over component)"
        log(text)

    def report(self, config: ExperimentConfig, out_dir: Path, entries: dict[str, Any],
               tasks: Any, result: ExperimentResult, figures: Callable | None) -> None:
        extra = {**EXTRA_DEFAULTS, **config.extra}
        entries = with_cached_entries([m.label for m in config.models], out_dir, entries,
                                      self.signature(config, tasks))
        entries = self.finish_entries(config, entries, tasks)
        write_json_atomic(out_dir / METRICS, entries)
        write_text_atomic(out_dir / RESULTS, smoke_results_markdown(entries, config))
        panels = {label: dict(np.load(out_dir / label / PANELS))
                  for label in entries if (out_dir / label / PANELS).is_file()}
        paths: list[Path] = []
        if figures is not None and extra.get("figures", True) and panels:
            paths = list(figures(out_dir, panels, entries))
        chosen = [m for m in config.models if m.label in result.models]
        o = tasks["options"]
        write_json_atomic(out_dir / EXPERIMENT, {
            "name": config.name, "size": config.size, "description": config.description,
            "settings": o["settings"].to_dict(),
            "transfer": {k: transfer_settings(o, k).to_dict() for k in o["transfer"] or []},
            "normalisation": vars(tasks["normalisation"]),
            "models": [m.to_dict() for m in chosen],
            "figures": run_paths(paths, out_dir),
            "seconds": time.monotonic() - tasks["start"]})
        result.metrics, result.figures = entries, paths

    def finish_entries(self, config: ExperimentConfig, entries: dict[str, Any], tasks: Any
                       ) -> dict[str, Any]:
        """``entries`` with each approximate model's transfer gains over its exact partner
        (:func:`add_exact_gains`)."""
        add_exact_gains(config, entries)
        return entries

    def results_markdown(self, metrics: Mapping[str, Any], config: ExperimentConfig) -> str:
        """``results.md`` of ``metrics`` (also of the aggregate over seeds)."""
        return smoke_results_markdown(metrics, config)


SMOKE_EXPERIMENT = register_experiment(SmokeExperiment())


def smoke_results_table(metrics: Mapping[str, Any]) -> list[list[str]]:
    """Rows (header first): per model the test log-likelihood ± s.e., RMSE, the component's
    log-likelihood, Δequiv, the equivariance error, and per transfer set the log-likelihood with
    its gain over the component and over the exact model; after a run of several seeds each
    mean also carries its standard error over seeds."""
    kinds = sorted({k for e in metrics.values() for k in e.get("transfer", {})},
                   key=lambda k: TRANSFER_KINDS.index(k) if k in TRANSFER_KINDS else 99)
    rows = [["model", "log-lik", "RMSE", "component log-lik", "Δequiv", "equiv. error (max)"]
            + [f"{k}: log-lik (vs component, vs exact)" for k in kinds]]
    for label, e in metrics.items():
        eq = (e.get("id") or {}).get("equivariance") or {}
        row = [label, cell(e, "loglik"), cell(e, "rmse", task_se=False),
               cell(e, "component_loglik", task_se=False),
               cell(e, "delta_equiv", 4, task_se=False),
               mean_se(eq.get("equiv_err_max"), None, 4)]
        for k in kinds:
            b = e.get("transfer", {}).get(k)
            if b is None:
                row.append("–")
                continue
            text = cell(b, "loglik")
            if "gain_over_component" in b:
                text += (f" ({cell(b, 'gain_over_component', task_se=False, sign=True)}, "
                         f"{cell(b, 'gain_over_exact', task_se=False, sign=True)})")
            row.append(text)
        rows.append(row)
    return rows


def smoke_results_markdown(metrics: Mapping[str, Any], config: ExperimentConfig | None = None
                           ) -> str:
    """``results.md`` of the smoke experiment."""
    size = config.size if config is not None else "?"
    outputs = (config.task.options.get("outputs", "density") if config is not None
               else "density")
    field = {"density": "", "velocity": ": the velocity", "both": ": density and velocity"}
    parts = [f"# Smoke plumes around an obstacle{field.get(outputs, '')} ({size} size)", ""]
    if config is not None and config.description:
        parts += [config.description.strip(), ""]
    what = OUTPUT_WORDS.get(outputs, OUTPUT_WORDS["density"])
    parts += [format_table(smoke_results_table(metrics)), "",
              (f"*log-lik*: mean Gaussian log-likelihood per target cell {what} "
               "on the test simulations ± standard error over tasks; *component*: the model with "
               "every fixed input zero (its exactly equivariant part); *Δequiv*: mean |full − "
               "component| of the predictive mean; *equiv. error*: the largest orbit error under "
               "the model's own group; *moved* / *rotated*: unseen simulations with the obstacle "
               "moved or the whole scene turned by 90°, where the learned fixed inputs describe "
               "the wrong scene (in brackets: the log-likelihood minus the component's and minus "
               "the exactly equivariant model's)."), ""]
    return "\n".join(parts)


__all__ = ["EXTRA_DEFAULTS", "PANELS", "SmokeExperiment", "SmokeFigureHook", "TASK_DEFAULTS",
           "TRANSFER_KINDS", "add_exact_gains", "exact_partner", "load_data", "map_panels",
           "map_tasks", "smoke_results_markdown", "smoke_results_table",
           "task_options", "transfer_settings"]
