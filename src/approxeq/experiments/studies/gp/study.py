"""The experiment runner: train every model of an :class:`ExperimentConfig`, evaluate them on
fixed in-distribution (ID) and out-of-distribution (OOD) test sets against the GP oracle, and
write the results.

A run directory ``out_dir`` holds

* ``config.yaml``: the resolved configuration (read back by :func:`evaluate_run`);
* ``fingerprint.json``: the experiment's task (a rerun with another task is refused);
* ``<label>/``: one training run per model (``last.pt``, ``best.pt``, ``history.json``), its
  ``fingerprint.json`` (what produced the checkpoints) and its evaluation ``eval.json``;
* ``metrics.json``: one entry per model label (and ``"oracle"``), each holding the ID
  ``loglik``, ``loglik_se``, ``rmse``, ``coverage95`` and a dict per setting (``"id"``,
  ``"ood"``) with the same keys; approximately equivariant models add ``delta_equiv`` and
  ``component`` (the equivariant component's metrics); models with a symmetry add
  ``equivariance`` (orbit equivariance error under ``model.symmetry``);
* ``experiment.json``: what ran (name, size, task, settings, times);
* ``results.md``: a markdown table of the same numbers.

Rerunning :func:`run_experiment` (:class:`GPExperiment`) on the same directory skips models whose
training finished and whose evaluation is on disk, and resumes unfinished ones from ``last.pt``,
provided their fingerprints match the configuration (otherwise the run is refused, or with
``restart=True`` those models train again).

The experiment's ``extra`` section may set ``ood_shift`` (float or one per input dimension,
default 8.0; ``null`` = no OOD setting), ``equivariance_elements`` (group elements for the orbit
error, default 4), ``equivariance_tasks`` (tasks it uses, default 8), ``plot_range`` (the x
range of figures) and ``figures`` (``false`` = no figures).

Saved task files (``approxeq eval RUN_DIR --data FILE``): see
:func:`approxeq.experiments.batches.save_batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from approxeq.data.base import TaskGenerator
from approxeq.experiments.base import (
    ExperimentResult,
    Log,
    default_log,
)
from approxeq.experiments.batches import load_batches
from approxeq.experiments.evaluation import evaluate_model, metrics_entry, oracle_metrics
from approxeq.experiments.np_runner import (
    NeuralProcessExperiment,
    model_info,
    train_one_model,
)
from approxeq.experiments.registry import register_experiment
from approxeq.experiments.report import results_markdown
from approxeq.experiments.schema import ExperimentConfig, ModelConfig, TaskConfig, load_experiment
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.np.batch import Batch
from approxeq.train.checkpoint import ModelSpec, load_checkpoint, load_model
from approxeq.train.config import ConfigError
from approxeq.train.distributed import resolve_device
from approxeq.train.rundir import (
    BEST,
    CONFIG,
    EXPERIMENT,
    METRICS,
    RESULTS,
    finished_step,
    read_json,
    run_paths,
)

ORACLE = "oracle"
#: bump when the evaluation protocol changes, so cached per-model evaluations are redone
EVAL_VERSION = 2

#: ``figures(out_dir, config, models, test_sets, histories) -> written paths``
FigureHook = Callable[[Path, ExperimentConfig, Mapping[str, nn.Module],
                       Mapping[str, Sequence[Batch]], Mapping[str, dict]], Sequence[Path]]


# --------------------------------------------------------------------------------------------
# Tasks and test sets
# --------------------------------------------------------------------------------------------

def make_task(task: TaskConfig, *, ood: bool = False, shift: float | Sequence[float] = 8.0
              ) -> TaskGenerator:
    """The task generator of a :class:`TaskConfig`: any name of
    :func:`approxeq.data.gp.gp_task` (``gibbs``, ``eq``, ...), its options passed through;
    ``ood=True`` moves the input windows by ``shift``."""
    from approxeq.data.gp import TASK_NAMES, gp_task

    if task.name not in TASK_NAMES:
        raise ConfigError(f"task.name: unknown task {task.name!r}; the experiment runner knows "
                          f"{', '.join(TASK_NAMES)}")
    try:
        return gp_task(task.name, task.dim_x, dim_y=task.dim_y, ood=ood, shift=shift,
                       **task.options)
    except (TypeError, ValueError) as err:
        from approxeq.data.gp import GPGenerator
        from approxeq.train.config_checks import keyword_hint

        raise ConfigError(f"task: cannot build task {task.name!r} with options "
                          f"{task.options}: {err}{keyword_hint(err, gp_task, GPGenerator)}"
                          ) from None


def ood_shift(config: ExperimentConfig) -> float | list[float] | None:
    """The OOD shift of the experiment (``extra.ood_shift``, default 8.0; ``None``: no OOD)."""
    return config.extra.get("ood_shift", 8.0)


def make_test_sets(config: ExperimentConfig) -> dict[str, list[Batch]]:
    """Fixed-seed test sets ``{"id": [...], "ood": [...]}`` (``ood`` only when
    ``extra.ood_shift`` is not null): ``config.train.test_tasks`` tasks in batches of
    ``config.train.eval_batch_size``, seeded by ``config.train.test_seed``."""
    t = config.train
    if t.test_tasks < 1:
        raise ConfigError("test_tasks: expected >= 1 to evaluate the experiment, got 0")
    sets = {"id": make_task(config.task).fixed_set(t.test_tasks, t.eval_batch_size, t.test_seed)}
    shift = ood_shift(config)
    if shift is not None:
        sets["ood"] = make_task(config.task, ood=True, shift=shift).fixed_set(
            t.test_tasks, t.eval_batch_size, t.test_seed)
    return sets


def context_region(config: ExperimentConfig, setting: str = "id") -> tuple[float, float] | None:
    """The (first-dimension) context window of a setting, for figures."""
    try:
        task = make_task(config.task, ood=setting == "ood", shift=ood_shift(config) or 0.0)
    except ConfigError:
        return None
    box = getattr(task, "context_range", None)
    return None if box is None else (float(box[0, 0]), float(box[0, 1]))


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def _equivariance_options(config: ExperimentConfig) -> dict[str, int]:
    return {"equivariance_elements": int(config.extra.get("equivariance_elements", 4)),
            "equivariance_tasks": int(config.extra.get("equivariance_tasks", 8))}


class GPExperiment(NeuralProcessExperiment):
    """Neural processes on a synthetic GP task (any :func:`approxeq.data.gp.gp_task` name),
    evaluated in and out of distribution against the exact GP oracle."""

    name = "gp"
    reserved = (ORACLE,)
    reevaluates = "GP runs"

    def figures(self) -> Callable | None:
        from approxeq.plot import experiment_figures

        def draw(out_dir: Path, config: ExperimentConfig, models: Any, test_sets: Any,
                 histories: Any) -> list[Path]:
            return experiment_figures(
                out_dir, config, models, test_sets, histories,
                metrics=read_json(Path(out_dir) / METRICS),
                context_regions={s: context_region(config, s) for s in test_sets},
                ood_shift=ood_shift(config))

        return draw

    def reevaluate(self, run_dir: Path, config: ExperimentConfig | None, *,
                   data: str | Path | None = None, var: str | None = None,
                   aux: str | Path | None = None, out: str | Path | None = None,
                   checkpoint: str = BEST, device: str | None = None,
                   skip_missing: bool = False, log: Log | None = None
                   ) -> tuple[dict[str, Any], Path | None]:
        """:func:`evaluate_run` of a single run (a run of several seeds is evaluated seed by
        seed)."""
        if not (Path(run_dir) / CONFIG).is_file() and config is not None:
            raise ValueError(f"run_dir: {run_dir} holds one run per training seed (seed-*/) of "
                             f"task {config.task.name!r}; evaluate each seed's directory, e.g. "
                             f"{Path(run_dir) / 'seed-0'}")
        return evaluate_run(run_dir, data=data, out=out, checkpoint=checkpoint, device=device,
                            skip_missing=skip_missing, log=log)

    def handles(self, config: ExperimentConfig) -> bool:
        from approxeq.data.gp import TASK_NAMES

        return config.task.name in TASK_NAMES

    @property
    def task_names(self) -> tuple[str, ...]:  # type: ignore[override]
        from approxeq.data.gp import TASK_NAMES

        return tuple(TASK_NAMES)

    def tasks(self, config: ExperimentConfig, out_dir: Path, log: Log) -> dict[str, list[Batch]]:
        log(f"experiment {config.name!r} (size {config.size}): {len(config.models)} model(s) "
            f"on task {config.task.name!r}; building test sets")
        return make_test_sets(config)

    def signature(self, config: ExperimentConfig, tasks: Any) -> dict[str, Any]:
        t = config.train
        return {"version": EVAL_VERSION, "task": config.task.to_dict(),
                "ood_shift": ood_shift(config), "test_tasks": t.test_tasks,
                "test_seed": t.test_seed, "eval_batch_size": t.eval_batch_size,
                "equivariance_elements": config.extra.get("equivariance_elements", 4),
                "equivariance_tasks": config.extra.get("equivariance_tasks", 8)}

    def train(self, config: ExperimentConfig, mc: ModelConfig, tasks: Any, run_dir: Path, *,
              progress: bool, log: Log, device: str | None) -> tuple[nn.Module, dict]:
        spec = ModelSpec(mc.name, config.task.dim_x, config.task.dim_y, dict(mc.options))

        def generator() -> TaskGenerator:
            gen = make_task(config.task)
            # the oracle is only needed at evaluation
            return gen.with_oracle(False) if hasattr(gen, "with_oracle") else gen

        model, history, _ = train_one_model(mc, spec, run_dir, generator, progress=progress,
                                            log=log, device=device)
        return model, history

    def evaluate(self, config: ExperimentConfig, mc: ModelConfig, model: nn.Module, tasks: Any,
                 run_dir: Path) -> dict[str, Any]:
        per_setting = {s: evaluate_model(model, b, **_equivariance_options(config))
                       for s, b in tasks.items()}
        return metrics_entry(per_setting, model_info(mc, model, finished_step(run_dir), run_dir))

    def log_entry(self, label: str, entry: dict[str, Any], log: Log) -> None:
        settings = [k for k, v in entry.items() if isinstance(v, dict) and "loglik_se" in v
                    and k != "component"]
        log(f"[{label}] " + ", ".join(f"{s}: {entry[s]['loglik']:.3f} ± "
                                      f"{entry[s]['loglik_se']:.3f}" for s in settings))

    def report(self, config: ExperimentConfig, out_dir: Path, entries: dict[str, Any],
               tasks: Any, result: ExperimentResult, figures: Callable | None) -> None:

        metrics = dict(entries)  # the runner has added the still-valid cached entries
        oracle = {s: m for s, b in tasks.items() if (m := oracle_metrics(b)) is not None}
        if oracle:
            metrics[ORACLE] = metrics_entry(oracle, {"name": "gp-oracle"})
        write_json_atomic(out_dir / METRICS, metrics)
        write_text_atomic(out_dir / RESULTS, results_markdown(metrics, title=config.name,
                                                              description=config.description))
        paths: list[Path] = []
        if figures is not None and config.extra.get("figures", True):
            paths = list(figures(out_dir, config, result.models, tasks, result.histories))
        chosen = [m for m in config.models if m.label in result.models]
        write_json_atomic(out_dir / EXPERIMENT, {
            "name": config.name, "size": config.size, "description": config.description,
            "task": config.task.to_dict(), "settings": list(tasks),
            "ood_shift": ood_shift(config), "models": [m.to_dict() for m in chosen],
            "figures": run_paths(paths, out_dir),
            "seconds": result.seconds})
        result.metrics, result.figures = metrics, paths


GP_EXPERIMENT = register_experiment(GPExperiment())


def run_experiment(config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
                   log: Log | None = None, figures: FigureHook | None = None,
                   device: str | None = None, only: Sequence[str] | None = None,
                   restart: bool = False) -> ExperimentResult:
    """Train, evaluate and report every model of a GP experiment in ``out_dir`` (see the
    module docstring for the files and :meth:`NeuralProcessExperiment.run` for the
    arguments); ``figures(out_dir, config, models, test_sets, histories)`` draws the figures
    (e.g. :func:`approxeq.plot.experiment_figures`).

    Returns:
        :class:`~approxeq.experiments.ExperimentResult`; ``metrics`` is what ``metrics.json``
        holds.
    """
    return GP_EXPERIMENT.run(config, out_dir, progress=progress, log=log, figures=figures,
                             device=device, only=only, restart=restart)


def evaluate_run(run_dir: str | Path, *, data: str | Path | None = None,
                 out: str | Path | None = None, log: Log | None = None,
                 checkpoint: str = BEST, device: str | None = None,
                 skip_missing: bool = False) -> tuple[dict[str, Any], Path]:
    """Re-evaluate a finished run from its checkpoints, without touching its training results.

    Args:
        run_dir: a directory written by :func:`run_experiment` (it holds ``config.yaml`` and one
            sub-directory per model).
        data: evaluate on this saved task file (:func:`save_batches`) instead of the
            experiment's own ID/OOD test sets; the setting is then named after the file.
        out: the metrics file to write; default ``run_dir/eval/<name>/metrics.json`` with
            ``<name>`` from :func:`~approxeq.experiments.outputs.eval_name` (e.g.
            ``checkpoint-best``, or the data file's stem). The run's own ``metrics.json`` and
            ``results.md`` are never written. ``results.md`` (or ``<out stem>.md``) goes beside.
        checkpoint: ``"best.pt"`` or ``"last.pt"``.
        device: where to evaluate (default: ``"auto"``, CUDA if available).
        skip_missing: a model whose checkpoint is missing or unreadable gets an entry
            ``{"failed": reason}`` instead of stopping the evaluation with a
            ``FileNotFoundError`` naming the file (nothing is written then).

    Returns:
        ``(metrics, path written)``; each entry holds the metrics per setting, the model's
        ``name``, ``options``, ``parameters``, ``symmetry``, ``approximate``,
        ``train_seconds``, ``steps`` (the steps trained), ``checkpoint`` and
        ``checkpoint_step`` (the step of the evaluated checkpoint).
    """
    from approxeq.experiments.outputs import (
        EVAL_DIR,
        check_output_file,
        eval_name,
        markdown_path,
        task_description,
    )
    from approxeq.experiments.run_eval import no_config_error

    log = log or default_log
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG
    if not config_path.is_file():
        raise no_config_error(run_dir)
    raw = _read_yaml_size(config_path)
    config = load_experiment(config_path, size=raw)
    from approxeq.data.gp import TASK_NAMES

    if config.task.name not in TASK_NAMES:
        raise ValueError(f"run_dir: this run was trained on {task_description(config.task)}, "
                         "not on GP tasks; evaluate it with --data FIELD --var NAME (gridded "
                         "data) or with the command that ran it")
    name = eval_name(checkpoint, data)
    out_path = check_output_file(out if out is not None
                                 else run_dir / EVAL_DIR / name / METRICS, protect=run_dir)
    md_path = check_output_file(markdown_path(out_path), protect=run_dir)
    if data is not None:
        data = Path(data)
        sets = {data.stem: _load_task_file(data)}
    else:
        sets = make_test_sets(config)
    entries = _evaluate_checkpoints(config, run_dir, sets, checkpoint=checkpoint, device=device,
                                    skip_missing=skip_missing, log=log)
    if all("failed" in e for e in entries.values()):
        raise FileNotFoundError(f"run_dir: no readable model checkpoint ({checkpoint}) under "
                                f"{run_dir}")
    oracle = {s: m for s, b in sets.items() if (m := oracle_metrics(b)) is not None}
    if oracle:
        entries[ORACLE] = metrics_entry(oracle, {"name": "gp-oracle"})
    write_json_atomic(out_path, entries)
    write_text_atomic(md_path, results_markdown(
        entries, title=f"{config.name}: {name}", description=config.description))
    return entries, out_path


def _evaluate_checkpoints(config: ExperimentConfig, run_dir: Path,
                          sets: Mapping[str, Sequence[Batch]], *, checkpoint: str,
                          device: str | None, skip_missing: bool, log: Log
                          ) -> dict[str, Any]:
    """The entry of every model of ``run_dir`` that was trained, from its ``checkpoint``, on
    each test set of ``sets`` (``{"failed": ...}`` for an unreadable one with
    ``skip_missing``)."""
    from approxeq.experiments.outputs import checkpoint_entry, never_trained

    eq = _equivariance_options(config)
    entries: dict[str, Any] = {}
    skip = never_trained(run_dir, [mc.label for mc in config.models], log)
    for mc in (m for m in config.models if m.label not in skip):
        ckpt = run_dir / mc.label / checkpoint
        failed = checkpoint_entry(ckpt, skip_missing=skip_missing, log=log, label=mc.label)
        if failed is not None:
            entries[mc.label] = {"name": mc.name, "options": mc.options, **failed}
            continue
        model = load_model(ckpt, map_location=resolve_device(device or "auto"))
        per_setting = {s: evaluate_model(model, b, **eq) for s, b in sets.items()}
        info = model_info(mc, model, finished_step(run_dir / mc.label), run_dir / mc.label)
        info.update(checkpoint=checkpoint, checkpoint_step=load_checkpoint(ckpt).step)
        entries[mc.label] = metrics_entry(per_setting, info)
        log(f"[{mc.label}] " + ", ".join(
            f"{s}: {v['loglik']:.3f} ± {v['loglik_se']:.3f}" for s, v in per_setting.items()))
    return entries


def _load_task_file(path: Path) -> list[Batch]:
    """The batches of a saved task file, or one line saying what the file is instead."""
    if path.suffix in (".nc", ".nc4", ".zarr", ".grib", ".h5"):
        raise ValueError(f"data: {path} looks like a gridded field, not a saved task file; "
                         "gridded data is evaluated with --var NAME on a run trained on "
                         "gridded data (e.g. approxeq experiment era5-uk)")
    try:
        batches = load_batches(path)
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"data: {path} is not a saved task file ({_first_line(err)})") from None
    except ValueError as err:
        raise ValueError(_first_line(err)) from None
    import torch

    for i, b in enumerate(batches):
        if not all(isinstance(getattr(b, k), torch.Tensor) for k in ("xc", "yc", "xt", "yt")):
            raise ValueError(f"data: {path}: batch {i} must hold tensors xc, yc, xt, yt")
    return batches


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_yaml_size(path: Path) -> str:
    from approxeq.train.config_files import read_yaml

    sizes = (read_yaml(path) or {}).get("sizes") or {}
    return next(iter(sizes), "quick")

__all__ = [
    "FigureHook",
    "GPExperiment",
    "context_region",
    "evaluate_run",
    "make_task",
    "make_test_sets",
    "ood_shift",
    "run_experiment",
]
