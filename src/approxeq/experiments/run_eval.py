"""``approxeq eval RUN``: re-evaluation of a finished run from its checkpoints, without touching
the run's training results. :func:`reevaluate_run` hands the run to the
:meth:`~approxeq.experiments.base.Experiment.reevaluate` of the experiment that trained it (read
from its ``config.yaml``), or with ``--var`` to the experiment that evaluates gridded fields;
an experiment that cannot re-evaluate says so in one line, listing those that can.

:func:`evaluate_experiment_run` is the shared path of the neural-process experiments that
re-evaluate on their own test sets rebuilt from the saved ``config.yaml`` (the same tasks, so
the best checkpoint scores what the run's ``metrics.json`` says), with the references and
derived numbers of the run itself (:meth:`finish_entries`). A multi-seed run (``RUN/seed-*/``)
is evaluated seed by seed and aggregated as :mod:`approxeq.experiments.seeds` does.

Everything is written under ``RUN/eval/<name>/`` (``<name>`` from
:func:`~approxeq.experiments.outputs.eval_name`), or to ``out``: ``metrics.json``, its
``results.md``, and for a multi-seed run each seed's files in ``seed-<i>/`` beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from approxeq.experiments.aggregate import aggregate_seeds
from approxeq.experiments.base import Experiment, Log, default_log
from approxeq.experiments.outputs import (
    EVAL_DIR,
    check_output_file,
    checkpoint_entry,
    eval_name,
    markdown_path,
    never_trained,
)
from approxeq.experiments.registry import experiment_for, field_evaluator
from approxeq.experiments.schema import ExperimentConfig, load_experiment
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.train.checkpoint import load_checkpoint, load_model
from approxeq.train.config_files import read_yaml
from approxeq.train.rundir import (
    BEST,
    CONFIG,
    EXPERIMENT,
    METRICS,
    RESULTS,
    read_json,
    seed_run_dirs,
)


def seed_dirs(run_dir: Path) -> list[Path]:
    """The per-seed run directories ``seed-0, seed-1, ...`` of a multi-seed run, in order
    (empty for a single run)."""
    found = [p for p in Path(run_dir).glob("seed-*") if p.is_dir() and (p / CONFIG).is_file()
             and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def run_task_name(run_dir: str | Path) -> str | None:
    """The ``task.name`` a run (or the first seed of a multi-seed run) was trained on, or
    ``None`` when ``run_dir`` holds no readable ``config.yaml``."""
    run_dir = Path(run_dir)
    config = run_dir / CONFIG
    if not config.is_file():
        seeds = seed_dirs(run_dir)
        if not seeds:
            return None
        config = seeds[0] / CONFIG
    task = (read_yaml(config) or {}).get("task")
    return task.get("name") if isinstance(task, dict) else None


def _saved_config(run_dir: Path) -> ExperimentConfig:
    sizes = (read_yaml(run_dir / CONFIG) or {}).get("sizes") or {}
    return load_experiment(run_dir / CONFIG, size=next(iter(sizes), "quick"))


def _evaluate_one(run_dir: Path, checkpoint: str, device: str | None, skip_missing: bool,
                  log: Log) -> tuple[dict[str, Any], ExperimentConfig, Any]:
    """The entries of one run directory (the experiment's own test sets), its config and
    runner."""
    from approxeq.train.distributed import resolve_device

    config = _saved_config(run_dir)
    experiment = experiment_for(config)
    if not getattr(experiment, "reevaluates_own_tests", False):
        raise ValueError(f"run_dir: {run_dir} was trained on task {config.task.name!r}, "
                         "which is not re-evaluated on its own test sets")
    tasks = experiment.tasks(config, run_dir, lambda _m: None)
    entries: dict[str, Any] = {}
    skip = never_trained(run_dir, [mc.label for mc in config.models], log)
    for mc in (m for m in config.models if m.label not in skip):
        model_dir = run_dir / mc.label
        ckpt = model_dir / checkpoint
        failed = checkpoint_entry(ckpt, skip_missing=skip_missing, log=log, label=mc.label)
        if failed is not None:
            entries[mc.label] = {"name": mc.name, "options": mc.options, **failed}
            continue
        model = load_model(ckpt, map_location=resolve_device(device or "auto")).eval()
        # the entry holds the model as trained (its steps and seconds); add what was evaluated
        entry = experiment.evaluate(config, mc, model, tasks, model_dir,
                                    **experiment.reevaluate_options)
        entry.update(checkpoint=checkpoint, checkpoint_step=load_checkpoint(ckpt).step,
                     size=config.size, experiment=config.name)
        entries[mc.label] = entry
        experiment.log_entry(mc.label, entry, log)
    if all("failed" in e for e in entries.values()):
        raise FileNotFoundError(f"run_dir: no readable model checkpoint ({checkpoint}) under "
                                f"{run_dir}")
    # the failed entries go in too: a derived number (a gain over an exact partner model)
    # then has the partner it has in training, and none when that partner failed, instead of
    # another model of the family in this seed only
    finished = experiment.finish_entries(config, dict(entries), tasks)
    return {**{k: finished.get(k, v) for k, v in entries.items()},
            **{k: v for k, v in finished.items() if k not in entries}}, config, experiment


def _seeds_without_config(run_dir: Path, seeds: list[Path], skip_missing: bool,
                          log: Log) -> str:
    """The seed folders of a multi-seed run that have no ``config.yaml`` (damaged, or killed
    before its first save): an error naming them, or with ``skip_missing`` a log line and
    the sentence of ``results.md`` that says they are left out."""

    lost = [p.name for p in seed_run_dirs(run_dir) if p not in seeds]
    if not lost:
        return ""
    if not skip_missing:
        raise FileNotFoundError(f"run_dir: {', '.join(lost)} of {run_dir} has no {CONFIG}, so "
                                "its models cannot be rebuilt; nothing was written "
                                "(--skip-missing evaluates the other seeds and says so)")
    log(f"{', '.join(lost)}: no {CONFIG}: left out of the mean over seeds")
    return f" Left out, without a {CONFIG}: {', '.join(lost)}."


def failed_note(metrics: dict[str, Any]) -> str:
    """The sentence of ``results.md`` naming the models that could not be evaluated (and in
    which seeds), or ``""``."""
    failed = [(label, e) for label, e in metrics.items() if isinstance(e, dict) and "failed" in e]
    if not failed:
        return ""
    named = ", ".join(f"{label} ({', '.join(e['failed_seeds'])})" if e.get("failed_seeds")
                      else label for label, e in failed)
    return (f" Not evaluated (a missing or unreadable checkpoint, --skip-missing): {named}; "
            "their rows are empty and enter no mean.")


def _markdown(experiment: Any, metrics: dict[str, Any], config: ExperimentConfig,
              note: str) -> str:
    return experiment.results_markdown(metrics, config) + "\n" + note + "\n"


def evaluate_experiment_run(run_dir: str | Path, *, out: str | Path | None = None,
                            checkpoint: str = BEST, device: str | None = None,
                            skip_missing: bool = False, log: Log | None = None
                            ) -> tuple[dict[str, Any], Path]:
    """Re-evaluate a run of an experiment that re-evaluates on its own test sets (one
    directory, or ``seed-*`` directories) from its checkpoints, without touching its training
    results.

    Args:
        run_dir: what ``approxeq experiment NAME --out RUN`` wrote.
        out: the metrics file (default ``RUN/eval/<name>/metrics.json``; never the run's own
            results). ``results.md`` (or ``<out stem>.md``) goes beside it, and for a
            multi-seed run each seed's files in ``seed-<i>/`` of the same folder.
        checkpoint: ``"best.pt"`` or ``"last.pt"``.
        device: where to evaluate (default ``"auto"``: CUDA if available).
        skip_missing: a missing or unreadable checkpoint gives its model ``{"failed": ...}``
            instead of a ``FileNotFoundError`` naming the file (nothing written then).

    Returns:
        ``(metrics, path written)``. Each model entry holds what the run's ``metrics.json``
        holds (its ``id``/``ood`` or ``transfer`` blocks, the component's metrics), the
        model's ``name``, ``options``, ``parameters``, ``symmetry``, ``approximate``,
        ``steps``, ``train_seconds``, ``checkpoint``, ``checkpoint_step``, ``size`` and
        ``experiment``; the run's references (e.g. an oracle) are added; a multi-seed run is
        aggregated over seeds (``*_seeds``, ``seeds``).

    Raises:
        FileNotFoundError: no run there, or (without ``skip_missing``) a missing checkpoint.
        ValueError: a run of another kind, naming it.
    """
    log = log or default_log
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: no directory {run_dir}")
    seeds = seed_dirs(run_dir) if not (run_dir / CONFIG).is_file() else []
    if not seeds and not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} has no {CONFIG} (nor seed-*/{CONFIG}); "
                                "is it a directory written by `approxeq experiment`?")
    name = eval_name(checkpoint)
    target = check_output_file(out if out is not None
                               else run_dir / EVAL_DIR / name / METRICS, protect=run_dir)
    md = check_output_file(markdown_path(target), protect=run_dir)
    note = f"Re-evaluated from each model's {checkpoint} by `approxeq eval`."
    if seeds:
        note += _seeds_without_config(run_dir, seeds, skip_missing, log)
    if not seeds:
        metrics, config, experiment = _evaluate_one(run_dir, checkpoint, device, skip_missing,
                                                    log)
    else:
        per_seed = []
        for sd in seeds:
            log(f"{sd.name}:")
            m, config, experiment = _evaluate_one(sd, checkpoint, device, skip_missing, log)
            per_seed.append(m)
            write_json_atomic(target.parent / sd.name / METRICS, m)
            write_text_atomic(target.parent / sd.name / RESULTS,
                              _markdown(experiment, m, config, note))
        train_seeds = [_saved_config(sd).train.seed for sd in seeds]
        metrics = aggregate_seeds(per_seed, train_seeds, names=[sd.name for sd in seeds])
        note += (f" Mean over {len(seeds)} training seeds {train_seeds}; each seed's results "
                 "in seed-*/ beside this file.")
    note += failed_note(metrics)
    write_json_atomic(target, metrics)
    write_text_atomic(md, _markdown(experiment, metrics, config, note))
    return metrics, target


def run_config(run_dir: Path) -> ExperimentConfig | None:
    """The configuration a run (or the first seed of a multi-seed run) was trained with, or
    ``None`` when ``run_dir`` holds no ``config.yaml``."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).is_file():
        return _saved_config(run_dir)
    seeds = seed_dirs(run_dir)
    return _saved_config(seeds[0]) if seeds else None


def no_config_error(run_dir: Path) -> Exception:
    """Why ``run_dir``, which holds no ``config.yaml``, cannot be re-evaluated."""
    if not run_dir.is_dir():
        return FileNotFoundError(f"run_dir: no directory {run_dir}")
    info = read_json(run_dir / EXPERIMENT)
    kind = info.get("experiment") if isinstance(info, dict) else None
    if isinstance(kind, str):  # a settings experiment's run
        return ValueError(f"run_dir: {run_dir} is a {kind} run, which keeps no checkpoints to "
                          "evaluate again: its results are its metrics.json and results.md")
    return FileNotFoundError(f"run_dir: {run_dir} has no {CONFIG}; is it a directory written "
                             "by `approxeq train`/`approxeq experiment`?")


def reevaluate_run(run_dir: str | Path, *, data: str | Path | None = None,
                   var: str | None = None, aux: str | Path | None = None,
                   out: str | Path | None = None, checkpoint: str = BEST,
                   device: str | None = None, skip_missing: bool = False,
                   log: Log | None = None) -> tuple[dict[str, Any], Path | None, Experiment]:
    """``approxeq eval RUN [--data FILE [--var NAME [--aux FILE]]]``: the run scored again by
    the :meth:`~approxeq.experiments.base.Experiment.reevaluate` of the experiment that trained
    it (with ``var``: of the experiment that evaluates gridded fields, which also takes a model
    directory or a checkpoint file as ``run_dir``).

    Returns:
        ``(metrics, path written, the experiment)``.

    Raises:
        FileNotFoundError: no run there. ValueError: a run that cannot be re-evaluated so,
            naming why.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir) if run_dir.is_dir() else None
    if var is not None:
        experiment = field_evaluator()
    elif config is None:
        raise no_config_error(run_dir)
    else:
        experiment = experiment_for(config)
    metrics, path = experiment.reevaluate(run_dir, config, data=data, var=var, aux=aux, out=out,
                                          checkpoint=checkpoint, device=device,
                                          skip_missing=skip_missing, log=log)
    return metrics, path, experiment


__all__ = ["evaluate_experiment_run", "no_config_error", "reevaluate_run", "run_config",
           "run_task_name",
           "seed_dirs"]
