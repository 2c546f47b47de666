"""One run of an experiment as the command line asks for it: ``N`` training seeds, ``J``
worker processes, and under ``torchrun`` one process group for every model.

:func:`launch` picks the way: one run (:meth:`~approxeq.experiments.base.Experiment.run`),
several seeds (:func:`~approxeq.experiments.seeds.run_seeds`, each seed in ``seed-<i>/``) or
several worker processes (:func:`~approxeq.experiments.parallel.run_parallel`), inside a
distributed session when the experiment trains under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from approxeq.experiments.base import Experiment, ExperimentResult, Log
from approxeq.experiments.schema import ExperimentConfig


def launch(experiment: Experiment, config: ExperimentConfig, out_dir: str | Path, *,
           seeds: Any = None, jobs: int = 1, progress: bool = True, log: Log | None = None,
           figures: Callable | None = None, device: str | None = None,
           only: Sequence[str] | None = None, restart: bool = False
           ) -> tuple[ExperimentResult, bool]:
    """Run ``config`` into ``out_dir`` with ``seeds`` training seeds (default: the YAML's
    ``extra.seeds``, else 1) and ``jobs`` worker processes; the other arguments are those of
    :meth:`~approxeq.experiments.base.Experiment.run`.

    Returns:
        ``(result, main)``: ``main`` is false on the ranks of a ``torchrun`` process group
        other than rank 0 (which evaluates and reports).
    """
    from approxeq.experiments.seeds import seed_count

    n_seeds = seed_count(seeds or config.extra.get("seeds", 1))
    run: Callable[..., ExperimentResult] = experiment.run
    if n_seeds > 1:
        from functools import partial

        from approxeq.experiments.seeds import run_seeds

        run = partial(run_seeds, experiment, n_seeds=n_seeds, jobs=jobs)
    elif jobs > 1:
        from approxeq.experiments.parallel import run_parallel

        def run(config: ExperimentConfig, out: str | Path, **kwargs: Any) -> ExperimentResult:
            return run_parallel(experiment, [(config, out)], jobs, **kwargs)[0]
    common = dict(progress=progress, device=device, only=only, figures=figures, log=log,
                  restart=restart)
    if not experiment.distributed:
        return run(config, out_dir, **common), True
    from approxeq.train.distributed import distributed_session

    # under torchrun: one process group for all the models; rank 0 evaluates and reports
    with distributed_session(device or "auto") as info:
        result = run(config, out_dir, **common)
    return result, info.is_main


__all__ = ["launch"]
