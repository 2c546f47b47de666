"""Evaluation of trained gridded-data models on any other file, region, resolution or period
(``approxeq eval RUN --data FILE --var NAME``), without retraining and without touching the
run's own results: the metrics go to ``RUN/eval/<file stem>-<var>/metrics.json`` (or ``out``).

The data are checked before any model sees them (see
:class:`~approxeq.data.xarray_tasks.XarrayTaskGenerator`): a file that is not a field, all-NaN
data, values far outside what the training normaliser saw (other units) and points outside the
auxiliary fields' grid each get an error or warning naming the variable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from approxeq.approximate import is_approximate
from approxeq.data.normalise import NORMALISER_FILE, Normaliser
from approxeq.data.xarray_tasks import XarrayTaskGenerator
from approxeq.experiments.base import Log, default_log
from approxeq.experiments.outputs import (
    EVAL_DIR,
    check_output_file,
    checkpoint_entry,
    eval_name,
    markdown_path,
    never_trained,
    task_description,
)
from approxeq.experiments.studies.era5.scores import (
    TASK_NAME,
    era5_results_markdown,
    evaluate_era5_model,
)
from approxeq.train.checkpoint import load_checkpoint, load_model
from approxeq.train.rundir import BEST, CONFIG, LAST, METRICS

_HEADLINE = ("loglik", "loglik_se", "rmse_K", "rmse_K_se", "coverage95", "component_loglik",
             "component_loglik_se", "delta_equiv", "delta_equiv_K")


def _check_run_kind(run_dir: Path) -> None:
    """Refuse, in words, a run directory trained on something other than gridded data."""
    config = run_dir / CONFIG
    if not config.is_file():
        return
    from approxeq.train.config_files import read_yaml

    raw = read_yaml(config) or {}
    task = raw.get("task") or {}
    name = task.get("name") if isinstance(task, dict) else None
    if name is None or name == TASK_NAME:
        return
    from types import SimpleNamespace

    what = task_description(SimpleNamespace(name=name, dim_x=task.get("dim_x", 1)))
    own = ("; it is evaluated on its own test sets by approxeq eval RUN_DIR (without --data)"
           if name in ("terrain", "smoke") else "")
    raise ValueError(f"run: this run was trained on {what}, not on a gridded data file; --data "
                     f"FILE --var NAME needs an {TASK_NAME}-style run (approxeq experiment "
                     f"{TASK_NAME}, or a YAML with task.name {TASK_NAME}){own}")


def _normaliser_path(*candidates: Path) -> Path:
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"run: no {NORMALISER_FILE} beside the checkpoint ({candidates[0]}); only runs trained "
        f"on gridded data ({TASK_NAME}) have one, and --data FILE --var NAME needs it")


def _model_runs(run: str | Path, checkpoint: str, log: Log = default_log
                ) -> list[tuple[str, Path, Path | None]]:
    """``(label, checkpoint path, run directory)`` for a checkpoint file, a model run directory
    or an experiment directory. An experiment directory lists every model of its
    ``config.yaml`` that it trained (a missing checkpoint is reported, not dropped; a model it
    never trained, with ``--only``, is left out); without one, every
    sub-directory holding ``checkpoint``."""
    run = Path(run)
    if run.is_file():
        return [(run.parent.name, run, None)]
    if not run.is_dir():
        raise FileNotFoundError(f"run: no checkpoint file or run directory {run}")
    _check_run_kind(run)
    if (run / checkpoint).is_file():
        return [(run.name, run / checkpoint, run)]
    if (run / CONFIG).is_file():
        from approxeq.train.config_files import read_yaml

        labels = [m.get("label") or m.get("name") for m in (read_yaml(run / CONFIG) or {}).get(
            "models", []) if isinstance(m, dict)]
        skip = never_trained(run, labels, log)
        if labels and len(skip) < len(labels):
            return [(label, run / label / checkpoint, run / label) for label in labels
                    if label not in skip]
    found = [(sub.name, sub / checkpoint, sub) for sub in sorted(run.iterdir())
             if sub.is_dir() and (sub / checkpoint).is_file()]
    if not found:
        raise FileNotFoundError(f"run: no {checkpoint} in {run} or its sub-directories")
    return found


def _model_info(model: nn.Module, ckpt: Path, model_dir: Path | None, checkpoint: str
                ) -> dict[str, Any]:
    """The description of an evaluated model: what it is and how long it trained."""
    info: dict[str, Any] = {
        "name": getattr(model, "model_name", type(model).__name__),
        "options": dict(getattr(model, "build_options", {}) or {}),
        "parameters": sum(p.numel() for p in model.parameters()),
        "symmetry": repr(getattr(model, "symmetry", None)),
        "approximate": is_approximate(model)}
    last = model_dir / LAST if model_dir is not None else None
    if last is not None and last.is_file():
        trained = load_checkpoint(last)
        info.update(steps=trained.step, train_seconds=trained.extra.get("seconds"))
    info.update(checkpoint=checkpoint, checkpoint_step=load_checkpoint(ckpt).step)
    return info


@dataclass(frozen=True)
class FieldTasks:
    """Which part of a gridded file an evaluation reads, and the fixed tasks it draws there.

    Attributes:
        days, time_range, region: which part of the file (default: all of it).
        patch_size, context_fraction, max_targets: the tasks (default: whole-region tasks).
        n_tasks, batch_size, seed: the fixed evaluation set.
    """

    days: Sequence[int] | str | None = None
    time_range: tuple[Any, Any] | None = None
    region: dict[str, tuple[float, float]] | None = None
    patch_size: Sequence[int] | None = None
    context_fraction: tuple[float, float] = (0.01, 0.3)
    max_targets: int | None = 256
    n_tasks: int = 256
    batch_size: int = 32
    seed: int = 2_000_003


def _field_tasks(options: dict[str, Any]) -> FieldTasks:
    names = [f.name for f in fields(FieldTasks)]
    unknown = [k for k in options if k not in names]
    if unknown:
        raise TypeError(f"evaluate_on_file: unknown task option(s) {unknown}; options: "
                        f"{', '.join(names)}")
    return FieldTasks(**options)


def _models_of(run: str | Path | nn.Module, normaliser: Normaliser | None, checkpoint: str,
               log: Log) -> tuple[list[tuple[str, Any, Path | None]], Path | None]:
    """``(label, model or checkpoint path, model directory)`` of what ``run`` names, and the
    folder evaluations of it are written under (``None`` for a model object)."""
    if isinstance(run, nn.Module):
        if normaliser is None:
            raise ValueError("normaliser: needed when run is a model object")
        return [(getattr(run, "model_name", "model"), run, None)], None
    base = Path(run) if Path(run).is_dir() else Path(run).parent
    return list(_model_runs(run, checkpoint, log)), base


def _score(model: nn.Module, label: str, path: Path, var: str, norm: Normaliser,
           tasks: FieldTasks, aux: str | Path | None, aux_vars: Sequence[str] | None
           ) -> dict[str, Any]:
    """The entry of one model on the field ``var`` of ``path`` (its headline metrics, ``data``,
    ``var``, ``aux_vars`` and every metric in a block named after the file)."""
    dim_aux = int(getattr(model, "dim_aux", 0) or 0)
    names = list(aux_vars or norm.aux_vars)
    if dim_aux and aux is None:
        raise ValueError(f"aux: model {label!r} reads auxiliary fields {names}; give the "
                         "dataset holding them (--aux FILE)")
    if dim_aux and len(names) != dim_aux:
        raise ValueError(f"aux_vars: model {label!r} reads {dim_aux} auxiliary field(s), "
                         f"got {names}")
    gen = XarrayTaskGenerator(path, var, normaliser=norm, days=tasks.days,
                              time_range=tasks.time_range, region=tasks.region,
                              patch_size=tasks.patch_size,
                              context_fraction=tuple(tasks.context_fraction),
                              max_targets=tasks.max_targets, aux=aux if dim_aux else None,
                              aux_vars=names if dim_aux else None)
    batches = gen.fixed_set(tasks.n_tasks, tasks.batch_size, tasks.seed)
    metrics = evaluate_era5_model(model, batches, norm)
    entry = {k: metrics[k] for k in _HEADLINE if k in metrics}
    entry.update({"data": path.name, "var": var, "aux_vars": names if dim_aux else []})
    entry[path.stem] = metrics
    return entry


def evaluate_on_file(run: str | Path | nn.Module, path: str | Path, var: str, *,
                     normaliser: Normaliser | None = None, aux: str | Path | None = None,
                     aux_vars: Sequence[str] | None = None, out: str | Path | None = None,
                     checkpoint: str = BEST, log: Log | None = None,
                     skip_missing: bool = False, **task_options: Any
                     ) -> tuple[dict[str, Any], Path | None]:
    """Evaluate trained model(s) on another file, region, resolution or period, without
    retraining: the training normaliser is reused (coordinates outside the training region
    stay outside it, where fixed inputs vanish).

    Args:
        run: a model run directory (``best.pt`` + ``normaliser.json``), an experiment directory
            (every model of its ``config.yaml``), a checkpoint file, or a model (then
            ``normaliser`` is required).
        path: a netCDF file or zarr store; var: the variable (e.g. ``"t2m"``).
        normaliser: overrides the stored one.
        aux, aux_vars: the auxiliary dataset for models that read auxiliary fields (default
            names: the normaliser's); required for such models.
        out: where to write ``metrics.json`` (default: ``<run>/eval/<file stem>-<var>/
            metrics.json``; none for a model object without ``out``). Never the run's own
            ``metrics.json``, never a special file.
        checkpoint: which checkpoint of a run directory.
        skip_missing: a model whose checkpoint is missing or unreadable gets an entry
            ``{"failed": reason}``; otherwise that is a ``FileNotFoundError`` naming the file.
        task_options: the fields of :class:`FieldTasks` (``days``, ``time_range``, ``region``,
            ``patch_size``, ``context_fraction``, ``max_targets``, ``n_tasks``, ``batch_size``,
            ``seed``).

    Returns:
        ``(metrics, path written)``; ``metrics[label]`` holds the headline metrics
        (``loglik``, ``loglik_se``, ``rmse_K`` ...), ``data``, ``var``, one block named after
        the file with every metric, and the model's ``name``, ``options``, ``parameters``,
        ``symmetry``, ``approximate``, ``steps`` and ``train_seconds`` (as trained),
        ``checkpoint`` and ``checkpoint_step``.
    """
    log = log or default_log
    path = Path(path)
    tasks = _field_tasks(task_options)
    items, base = _models_of(run, normaliser, checkpoint, log)
    name = eval_name(checkpoint, path, var)
    target = Path(out) if out is not None else (base / EVAL_DIR / name / METRICS
                                                if base is not None else None)
    if target is not None:
        target = check_output_file(target, protect=base)
        check_output_file(markdown_path(target), protect=base)
    entries: dict[str, Any] = {}
    for label, source, model_dir in items:
        if isinstance(source, nn.Module):
            model, ckpt = source, None
        else:
            failed = checkpoint_entry(source, skip_missing=skip_missing, log=log, label=label)
            if failed is not None:
                entries[label] = failed
                continue
            model, ckpt = load_model(source), source
        norm = normaliser if normaliser is not None else Normaliser.load(_normaliser_path(
            source.with_name(NORMALISER_FILE), source.parent.parent / NORMALISER_FILE))
        entry = _score(model, label, path, var, norm, tasks, aux, aux_vars)
        if ckpt is not None:
            # the model's description before the file's block, as the entry always had it
            block = entry.pop(path.stem)
            entry.update(_model_info(model, ckpt, model_dir, checkpoint))
            entry[path.stem] = block
        entries[label] = entry
        log(f"[{label}] {path.name}: log-lik {entry[path.stem]['loglik']:.3f} ± "
            f"{entry[path.stem]['loglik_se']:.3f}, RMSE {entry[path.stem]['rmse_K']:.3f} "
            f"{norm.units}")
    if entries and all("failed" in e for e in entries.values()):
        raise FileNotFoundError(f"run: no readable model checkpoint ({checkpoint}) in {run}")
    if target is not None:
        from approxeq.files import write_json_atomic, write_text_atomic

        write_json_atomic(target, entries)
        write_text_atomic(markdown_path(target), era5_results_markdown(entries))
    return entries, target


__all__ = ["FieldTasks", "evaluate_on_file"]
