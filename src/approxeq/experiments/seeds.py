"""Training every model of an experiment with several seeds, and the spread over seeds.

Run ``i`` of ``n`` trains into ``<out>/seed-<i>`` with the training seed :func:`seed_of`
``(seed, i)`` (run 0 keeps the experiment's own seed, so one seed is the ordinary run); the
test sets do not depend on the training seed, so every run is scored on the same tasks.
``<out>/metrics.json`` then holds, per model and per block (the entry itself, ``id``, ``ood``,
``component``, ...), for every metric of :data:`SEED_METRICS`: the mean over seeds in place of
the metric, ``<metric>_seeds`` (the per-seed values), ``<metric>_seeds_mean`` and
``<metric>_seeds_se`` (standard error of that mean over seeds), beside the per-task ``<metric>_se``
(there the mean over seeds of the per-task standard errors). A difference between two models
smaller than their seed-to-seed spread is not a difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from approxeq.experiments.aggregate import (  # noqa: F401  (importable from here too)
    SEED_METRICS,
    aggregate_block,
    aggregate_seeds,
    failed_entry,
)
from approxeq.experiments.base import Experiment, ExperimentResult, SettingsExperiment, model_seed
from approxeq.experiments.schema import ExperimentConfig
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.train.config import ConfigError
from approxeq.train.distributed import is_main_process
from approxeq.train.rundir import (
    METRICS,
    RESULTS,
    RunDirError,
    RunLock,
    layout_problem,
)


def seed_of(seed: int, index: int) -> int:
    """The training seed of run ``index``: ``seed`` itself for run 0, else a stable hash of
    both (31 bits)."""
    return int(seed) if index == 0 else model_seed(seed, f"seed-{index}") % (2**31 - 1)


def seed_count(value: Any) -> int:
    """``--seeds`` or the YAML's ``extra.seeds``, checked: a positive int."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"extra.seeds: expected a positive int (training seeds per model), "
                          f"got {value!r}")
    return value


def with_seed(config: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``config`` with the experiment's and every model's training seed set to ``seed``."""
    models = [replace(m, train=m.train.replace(seed=seed)) for m in config.models]
    return replace(config, models=models, train=config.train.replace(seed=seed))


def run_seeds(experiment: Experiment, config: ExperimentConfig, out_dir: str | Path,
              n_seeds: int, *, jobs: int = 1, **kwargs: Any) -> ExperimentResult:
    """Run ``experiment`` ``n_seeds`` times (see the module docstring) and write the
    aggregated ``metrics.json`` and ``results.md`` into ``out_dir``.

    Args:
        jobs: worker processes for the (model, seed) units
            (:func:`~approxeq.experiments.parallel.run_parallel`); 1: one seed after another
            in this process.
        kwargs: passed to every ``experiment.run`` (``progress``, ``log``, ``figures``, ...).

    Returns:
        The result of run 0 with ``out_dir`` and ``metrics`` replaced by the aggregate.
    """
    if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
        raise ConfigError(f"seeds: expected a positive int, got {n_seeds!r}")
    if isinstance(experiment, SettingsExperiment) and n_seeds > 1:
        # their runners ignore train.seed: N copies of one run would pass for N seeds
        raise ConfigError(f"seeds: experiment {config.name!r} repeats its models by its own "
                          "task options (n_inits, seeds, folds); set those in the YAML and run "
                          f"it with --seeds 1 (got {n_seeds})")
    out_dir = Path(out_dir)
    seeds = [seed_of(config.train.seed, i) for i in range(n_seeds)]
    runs = [(with_seed(config, s), out_dir / f"seed-{i}") for i, s in enumerate(seeds)]
    # one lock on DIR covers every seed: two runs into DIR with different seed counts would
    # otherwise both proceed (each seed folder has its own lock) and race for DIR/metrics.json
    from approxeq.experiments.np_runner import _group_info, on_main

    lock = RunLock(out_dir)

    def prepare() -> None:
        lock.acquire()
        if (problem := layout_problem(out_dir, n_seeds)) is not None:
            raise RunDirError(problem)

    try:
        on_main(prepare, _group_info(kwargs.get("device")))
        if jobs != 1:
            from approxeq.experiments.parallel import run_parallel

            results = run_parallel(experiment, runs, jobs, **kwargs)
        else:
            results = [experiment.run(c, out, **kwargs) for c, out in runs]
        first = results[0]
        if not is_main_process():  # under DDP the other ranks only train
            return first
        metrics = aggregate_seeds([r.metrics for r in results], seeds)
        write_seed_results(experiment, config, out_dir, metrics, seeds)
    finally:
        lock.release()
    return replace(first, out_dir=out_dir, metrics=metrics,
                   seconds=sum(r.seconds for r in results))


def write_seed_results(experiment: Experiment, config: ExperimentConfig, out_dir: Path,
                       metrics: Mapping[str, Any], seeds: Sequence[int]) -> None:
    """Write the aggregate over seeds: ``out_dir/metrics.json`` and ``results.md`` (the
    experiment's own ``results_markdown`` when it has one)."""
    write_json_atomic(out_dir / METRICS, metrics)
    from approxeq.experiments.report import results_markdown

    n_seeds = len(seeds)
    note = (f"Mean over {n_seeds} training seeds {list(seeds)} (runs in seed-*/); ± is the "
            "mean per-task standard error, (seeds ± ...) the standard error over seeds.")
    own = getattr(experiment, "results_markdown", None)
    text = (own(metrics, config) + "\n" + note + "\n" if own is not None else results_markdown(
        metrics, title=f"{config.name} ({n_seeds} seeds)",
        description=f"{config.description}\n\n{note}"))
    write_text_atomic(out_dir / RESULTS, text)


__all__ = ["SEED_METRICS", "aggregate_block", "aggregate_seeds", "failed_entry", "run_seeds",
           "seed_of", "with_seed", "write_seed_results"]
