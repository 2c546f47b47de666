"""The vector-GP experiment: neural processes on 2-D GP vector fields with an exact oracle, in the
training region (``id``) and out of it (``ood``).

Each task is a draw ``y = m(x) + f(x) + ε`` of :mod:`approxeq.data.vector_gp`: ``f`` a GP with a
rotation-equivariant matrix kernel (divergence-free by default), ``ε`` white noise, and ``m`` a
fixed :class:`~approxeq.data.vector_gp.Vortex` pinned to the training region (the approximately
equivariant variant; ``flow: null`` gives the exactly E(2)-equivariant GP). In region, context
and targets lie in the training box, where the vortex is; out of region, both lie in the box
moved by ``ood_shift``, where the vortex is zero and the tasks are those of the equivariant GP.
The approximate models' fixed inputs live on the training box (their default domain), so out of
region they are exactly their equivariant component.

A run directory holds per model label the training run and ``eval.json``; at the top
``config.yaml``, ``metrics.json``, ``results.md``, ``experiment.json`` and the quiver figures.
``metrics.json`` has one entry per model with ``id`` and ``ood`` blocks and an ``oracle`` entry
(the exact GP posterior, knowing the flow) with the same blocks. Every metric is per target
*component* (the oracle's ``gt_loglik`` too): the log-likelihood is the mean over targets and
both components of the one-dimensional marginal log-densities, the RMSE is over components and
the coverage counts components inside their central 95 % interval. Models with a symmetry get an
``equivariance`` block measured with vectors turning with the scene (``ρ(g)`` of the model's
``y_rep``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from approxeq.approximate import is_approximate
from approxeq.approximate.reach import fixed_input_domain, reach
from approxeq.data.base import TaskGenerator
from approxeq.data.vector_gp import VectorGPGenerator, VectorGPOracle, Vortex, matrix_kernel
from approxeq.experiments.base import ExperimentResult, Log, task_options_with_defaults
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
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.groups.representation import output_rep
from approxeq.np.batch import Batch
from approxeq.train.checkpoint import ModelSpec
from approxeq.train.config import ConfigError
from approxeq.train.rundir import EXPERIMENT, METRICS, RESULTS, finished_step, run_paths

TASK_NAME = "vector-gp"
ORACLE = "oracle"
BLIND = "flow-blind"
#: bump when the evaluation protocol changes, so cached per-model evaluations are redone
EVAL_VERSION = 1
#: how many radii from its centre the vortex is zero in float32 (below 1e-6 of its strength)
FLOW_REACH = 5.5

#: task options and their defaults (``task.options`` of the experiment YAML)
TASK_DEFAULTS: dict[str, Any] = {
    "kernel": "divergence-free",   # rbf, curl-free or divergence-free
    "lengthscale": 1.0,
    "variance": 1.0,
    "noise_std": 0.05,
    "num_context": [1, 48],
    "num_target": 48,
    # the training region: context and targets in region, and the fixed inputs' domain
    "region": [[-2.0, 2.0], [-2.0, 2.0]],
    # the out-of-region box is the region moved by this: far enough that the flow is zero
    # there and that every approximate model's fixed inputs cannot reach it (reported)
    "ood_shift": [16.0, 0.0],
    # the pinned flow (Vortex arguments); null: none, the exactly equivariant GP
    "flow": {"centre": [0.0, 0.0], "radius": 0.5, "strength": 2.0},
    "models": None,                # labels a size runs (see np_runner.size_models); None: all
}
#: ``extra`` options and their defaults
EXTRA_DEFAULTS: dict[str, Any] = {
    "equivariance_elements": 4, "equivariance_tasks": 8, "figures": True,
    "figure_seed": 0, "figure_context": 24, "figure_grid": 17,
}
FLOW_KEYS = ("centre", "radius", "strength")


def _pair(value: Any, name: str) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)):
        raise ConfigError(f"task.options.{name}: expected a number or two numbers, got "
                          f"{value!r}")
    return [float(v) for v in value]


def _box(value: Any) -> list[list[float]]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in value)):
        raise ConfigError(f"task.options.region: expected [[x_lo, x_hi], [y_lo, y_hi]], got "
                          f"{value!r}")
    box = [_pair(r, "region") for r in value]
    if not all(lo < hi for lo, hi in box):
        raise ConfigError(f"task.options.region: expected lo < hi on both axes, got {value!r}")
    return box


def _distance_to_box(point: list[float], box: list[list[float]]) -> float:
    gaps = [max(lo - p, 0.0, p - hi) for p, (lo, hi) in zip(point, box)]
    return math.hypot(*gaps)


def task_options(config: ExperimentConfig) -> dict[str, Any]:
    """The task options of a vector-GP experiment, defaults filled in and checked."""
    o = task_options_with_defaults(config, TASK_NAME, TASK_DEFAULTS)
    if config.task.dim_x != 2 or config.task.dim_y != 2:
        raise ConfigError(f"task.dim_x, task.dim_y: a vector-GP task is a planar vector field, "
                          f"so 2 and 2; got {config.task.dim_x}, {config.task.dim_y}")
    o["region"] = _box(o["region"])
    o["ood_shift"] = _pair(o["ood_shift"], "ood_shift")
    flow = o["flow"]
    if flow is not None:
        if not isinstance(flow, Mapping) or set(flow) - set(FLOW_KEYS):
            raise ConfigError(f"task.options.flow: expected null or a mapping with keys among "
                              f"{', '.join(FLOW_KEYS)}, got {flow!r}")
        flow = {**TASK_DEFAULTS["flow"], **flow}
        flow["centre"] = _pair(flow["centre"], "flow.centre")
        try:
            Vortex(tuple(flow["centre"]), flow["radius"], flow["strength"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"task.options.flow: {err}") from None
        ood = [[lo + s, hi + s] for (lo, hi), s in zip(o["region"], o["ood_shift"])]
        reach = FLOW_REACH * float(flow["radius"])
        if _distance_to_box(flow["centre"], ood) < reach:
            raise ConfigError(f"task.options.ood_shift: the out-of-region box {ood} must lie "
                              f"where the flow is zero (at least {reach:g} from its centre "
                              f"{flow['centre']}), got {o['ood_shift']}")
        o["flow"] = flow
    try:
        matrix_kernel(o["kernel"], o["lengthscale"], o["variance"])
    except ValueError as err:
        raise ConfigError(f"task.options.{err}") from None
    return o


def make_generator(o: Mapping[str, Any], setting: str = "id", *,
                   oracle: bool = True) -> VectorGPGenerator:
    """The task generator of a setting (``"id"``: the training region; ``"ood"``: the region
    moved by ``ood_shift``, the same flow pinned where it was) of checked options ``o``."""
    flow = o["flow"]
    try:
        gen = VectorGPGenerator(
            matrix_kernel(o["kernel"], o["lengthscale"], o["variance"]), o["noise_std"],
            flow=None if flow is None else Vortex(tuple(flow["centre"]), flow["radius"],
                                                  flow["strength"]),
            num_context=o["num_context"], num_target=o["num_target"],
            context_range=o["region"], target_range=o["region"], oracle=oracle)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task.options: {err}") from None
    if setting == "ood":
        return gen.shifted(o["ood_shift"])
    if setting != "id":
        raise ValueError(f"setting: expected 'id' or 'ood', got {setting!r}")
    return gen


def add_flow_blind(batches: list[Batch]) -> None:
    """Add to each batch's ``meta`` the flow-blind reference: the exact GP posterior of the
    same kernel and noise without the pinned flow (``blind_oracle``) and its per-task
    log-likelihood per component (``blind_loglik``). What knowing the flow is worth is the
    oracle's lead over it; out of region, where the flow is zero, the two agree."""
    for b in batches:
        gp = b.meta["oracle"]
        blind = VectorGPOracle(gp.kernel, gp.noise_std, None, gp.jitter)
        b.meta["blind_oracle"] = blind
        b.meta["blind_loglik"] = blind.loglik(b.xc, b.yc, b.xt, b.yt).marginal


def ood_reach(model: nn.Module, o: Mapping[str, Any]) -> dict[str, Any]:
    """How far an approximate model's fixed inputs reach (:func:`approxeq.approximate.reach`)
    against the distance from their domain to the out-of-region box (per axis, the largest
    gap): when the box lies beyond the reach, the model is exactly its equivariant component
    out of region."""
    domain = fixed_input_domain(model)
    ood = [[lo + s, hi + s] for (lo, hi), s in zip(o["region"], o["ood_shift"])]
    gap = max(max(lo - float(d[1]), float(d[0]) - hi, 0.0)
              for (lo, hi), d in zip(ood, domain.tolist()))
    r = reach(model)
    return {"fixed_input_reach": r, "ood_distance": gap, "ood_beyond_reach": gap > r}


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def vector_gp_results_table(metrics: Mapping[str, Any]) -> list[list[str]]:
    """Rows (header first): per model and the oracle, in and out of region, the
    log-likelihood per component ± per-task s.e. (and ± s.e. over seeds), the RMSE, the 95 %
    coverage, the equivariant component's log-likelihood, Δequiv and the orbit equivariance
    error with vectors turning."""
    rows = [["model", "log-lik ID", "log-lik OOD", "RMSE ID", "RMSE OOD", "coverage ID",
             "coverage OOD", "component ID", "component OOD", "Δequiv ID", "equiv. error"]]
    for label, e in metrics.items():
        i, o = e.get("id", {}), e.get("ood", {})
        eq = i.get("equivariance")
        err = "–" if not eq else f"{eq['equiv_err_max']:.1e}" + (
            f" (component {eq['component_equiv_err_max']:.1e})"
            if "component_equiv_err_max" in eq else "")
        rows.append([label, cell(i, "loglik"), cell(o, "loglik"), cell(i, "rmse"),
                     cell(o, "rmse"), cell(i, "coverage95", task_se=False),
                     cell(o, "coverage95", task_se=False),
                     cell(i.get("component"), "loglik"), cell(o.get("component"), "loglik"),
                     cell(i, "delta_equiv", 4), err])
    return rows


def vector_gp_results_markdown(metrics: Mapping[str, Any], config: ExperimentConfig) -> str:
    """``results.md`` of the vector-GP experiment."""
    o = task_options(config)
    flow = ("no pinned flow (the exactly equivariant GP)" if o["flow"] is None else
            f"a vortex pinned at {o['flow']['centre']} (radius {o['flow']['radius']:g}, "
            f"strength {o['flow']['strength']:g})")
    return "\n".join([
        f"# {config.name} ({config.size} size)", "", (config.description or "").strip(), "",
        format_table(vector_gp_results_table(metrics)), "",
        f"Task: a {o['kernel']} GP vector field (lengthscale {o['lengthscale']:g}, noise std "
        f"{o['noise_std']:g}) plus {flow}. ID: context and targets in the training region "
        f"{o['region']}; OOD: the region moved by {o['ood_shift']}, where the flow is zero and "
        "every fixed input is zero. *log-lik*: mean Gaussian log-likelihood per target "
        "component (the two components' one-dimensional marginals) ± standard error over tasks "
        "(and over training seeds, when there are several); *RMSE* over components; "
        "*coverage*: share of components inside the central 95 % interval; *component*: the "
        "approximate model with every fixed input zero; *Δequiv*: mean |full − component| of "
        "the predictive mean; *equiv. error*: largest orbit error of the predictive mean and "
        "spread under the model's symmetry, vectors turning with the scene. `oracle`: the "
        "exact GP posterior, knowing the flow; `flow-blind`: the same posterior without the "
        "flow (the oracle's lead over it in region is what knowing the flow is worth; out of "
        "region the two agree)." + _reach_note(metrics), ""])


def _reach_note(metrics: Mapping[str, Any]) -> str:
    """The sentence saying whether the out-of-region box lies beyond every approximate model's
    fixed-input reach (so that they are exactly their components there)."""
    entries = {k: e for k, e in metrics.items() if isinstance(e, Mapping)
               and "ood_beyond_reach" in e}
    if not entries:
        return ""
    short = [k for k, e in entries.items() if not e["ood_beyond_reach"]]
    if not short:
        return (" The OOD box lies beyond every approximate model's fixed-input reach: out of "
                "region each is exactly its equivariant component.")
    return (f" The OOD box lies within the fixed-input reach of {', '.join(short)}: out of "
            "region their fixed inputs may still act (see Δequiv OOD in metrics.json).")


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------

class VectorGPExperiment(NeuralProcessExperiment):
    """Neural processes on GP vector fields (see the module docstring)."""

    name = TASK_NAME
    task_names = (TASK_NAME,)
    reserved = (ORACLE, BLIND)
    reevaluates = "vector-GP runs"
    reevaluates_own_tests = True

    def results_table(self, metrics: Mapping[str, Any]) -> list[list[str]]:
        return vector_gp_results_table(metrics)

    def results_markdown(self, metrics: Mapping[str, Any], config: ExperimentConfig) -> str:
        """``results.md`` of ``metrics`` (also of the aggregate over seeds)."""
        return vector_gp_results_markdown(metrics, config)

    def figures(self) -> Callable | None:
        from approxeq.plot.vector import vector_gp_figures

        return vector_gp_figures

    def train_tasks_only(self, config: ExperimentConfig) -> dict[str, Any]:
        return {"options": task_options(config), "start": time.monotonic()}

    def tasks(self, config: ExperimentConfig, out_dir: Path, log: Log) -> dict[str, Any]:
        tasks = self.train_tasks_only(config)
        o, t = tasks["options"], config.train
        if t.test_tasks < 1:
            raise ConfigError("test_tasks: expected >= 1 to evaluate the experiment, got 0")
        log(f"vector-gp experiment (size {config.size}): {len(config.models)} model(s) on "
            f"{o['kernel']} GP vector fields, "
            f"{'no flow' if o['flow'] is None else 'a pinned vortex'}; building test sets")
        tasks["test"] = {s: make_generator(o, s).fixed_set(t.test_tasks, t.eval_batch_size,
                                                           t.test_seed)
                         for s in ("id", "ood")}
        if o["flow"] is not None:
            for batches in tasks["test"].values():
                add_flow_blind(batches)
        return tasks

    def signature(self, config: ExperimentConfig, tasks: Any) -> dict[str, Any]:
        t, extra = config.train, {**EXTRA_DEFAULTS, **config.extra}
        o = {k: v for k, v in tasks["options"].items() if k != "models"}
        return {"version": EVAL_VERSION, "task": o, "test_tasks": t.test_tasks,
                "test_seed": t.test_seed, "eval_batch_size": t.eval_batch_size,
                "equivariance_elements": extra["equivariance_elements"],
                "equivariance_tasks": extra["equivariance_tasks"]}

    def model_spec(self, config: ExperimentConfig, mc: ModelConfig) -> ModelSpec:
        # the fixed inputs' domain defaults to the training region
        return ModelSpec(mc.name, 2, 2, model_options(mc, task_options(config)["region"]))

    def train(self, config: ExperimentConfig, mc: ModelConfig, tasks: Any, run_dir: Path, *,
              progress: bool, log: Log, device: str | None) -> tuple[nn.Module, dict]:
        o = tasks["options"]

        def generator() -> TaskGenerator:
            return make_generator(o, "id", oracle=False)

        model, history, _ = train_one_model(mc, self.model_spec(config, mc), run_dir,
                                            generator, progress=progress, log=log,
                                            device=device)
        return model, history

    def evaluate(self, config: ExperimentConfig, mc: ModelConfig, model: nn.Module, tasks: Any,
                 run_dir: Path) -> dict[str, Any]:
        extra = {**EXTRA_DEFAULTS, **config.extra}
        per_setting: dict[str, dict[str, Any]] = {}
        for s, batches in tasks["test"].items():
            # the shared path turns the outputs with the model's representation
            m = evaluate_model(model, batches,
                               equivariance_elements=int(extra["equivariance_elements"]),
                               equivariance_tasks=int(extra["equivariance_tasks"]))
            if "equivariance" in m:
                m["equivariance"]["y_rep"] = output_rep(model).name
            per_setting[s] = m
        info = model_info(mc, model, finished_step(run_dir), run_dir)
        if is_approximate(model):
            info.update(ood_reach(model, tasks["options"]))
        return metrics_entry(per_setting, info)

    def log_entry(self, label: str, entry: dict[str, Any], log: Log) -> None:
        log(f"[{label}] " + ", ".join(
            f"{s}: {entry[s]['loglik']:.3f} ± {entry[s]['loglik_se']:.3f}"
            for s in ("id", "ood") if s in entry))

    def finish_entries(self, config: ExperimentConfig, entries: dict[str, Any], tasks: Any
                       ) -> dict[str, Any]:
        """``entries`` with the two references scored on the same test tasks: the exact GP
        ``oracle`` (knowing the flow) and, with a flow, the ``flow-blind`` GP (the same
        posterior without it)."""
        metrics = dict(entries)
        for label, key, oracle_key, name in (
                (ORACLE, "gt", "oracle", "vector-gp-oracle"),
                (BLIND, "blind", "blind_oracle", "vector-gp-flow-blind")):
            ref = {s: m for s, b in tasks["test"].items()
                   if (m := oracle_metrics(b, key=key, oracle_key=oracle_key)) is not None}
            if ref:
                metrics[label] = metrics_entry(ref, {"name": name})
        return metrics

    def report(self, config: ExperimentConfig, out_dir: Path, entries: dict[str, Any],
               tasks: Any, result: ExperimentResult, figures: Callable | None) -> None:
        from approxeq.experiments.studies.vector_gp.panels import figure_panel

        extra = {**EXTRA_DEFAULTS, **config.extra}
        metrics = self.finish_entries(config, entries, tasks)
        write_json_atomic(out_dir / METRICS, metrics)
        write_text_atomic(out_dir / RESULTS, vector_gp_results_markdown(metrics, config))
        paths: list[Path] = []
        if figures is not None and extra["figures"] and result.models:
            panel = figure_panel(tasks["options"], result.models, seed=int(extra["figure_seed"]),
                                 n_context=int(extra["figure_context"]),
                                 grid=int(extra["figure_grid"]))
            paths = list(figures(out_dir, panel))
        chosen = [m for m in config.models if m.label in result.models]
        write_json_atomic(out_dir / EXPERIMENT, {
            "name": config.name, "size": config.size, "description": config.description,
            "task": tasks["options"], "settings": list(tasks["test"]),
            "models": [m.to_dict() for m in chosen],
            "figures": run_paths(paths, out_dir),
            "seconds": time.monotonic() - tasks["start"]})
        result.metrics, result.figures = metrics, paths


VECTOR_GP_EXPERIMENT = register_experiment(VectorGPExperiment())


__all__ = ["BLIND", "EXTRA_DEFAULTS", "ORACLE", "TASK_DEFAULTS", "VectorGPExperiment",
           "add_flow_blind", "make_generator", "ood_reach", "task_options",
           "vector_gp_results_markdown", "vector_gp_results_table"]
