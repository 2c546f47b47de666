"""Independent training units in worker processes (``--jobs N``).

A *unit* is one model of one run directory: one (model, seed) pair of a multi-seed run. Units
share nothing but read-only task data, so they can train side by side. :func:`run_parallel`

1. locks every run directory and checks it (fingerprints, ``restart``) as a sequential run
   would, before any worker starts;
2. trains and evaluates every unit in worker processes and logs one line per finished unit;
3. then, in this process, runs each directory's ordinary report: every model is found finished
   and every evaluation cached (``eval.json``), so the report is what ``jobs=1`` writes.

**Thread counts.** A run's torch thread count is part of its identity: sums split over another
number of threads round differently, training grows the difference, and the count is recorded
in each model's ``fingerprint.json``. So a model whose YAML sets ``train.num_threads`` keeps
that count in a worker, and ``--jobs N`` gives the numbers of ``--jobs 1``; to stay within the
cores, fewer than ``N`` workers run when ``N`` times that count exceeds them (``era5-uk``'s quick
size sets 2: on 2 cores it trains one model at a time either way). A model whose count is unset
trains on ``max(1, cores // N)`` threads in a worker, where alone it would take every core: its
numbers depend on ``N``, and a rerun with another ``--jobs`` is refused by its fingerprint.

Results equal those of ``jobs=1`` otherwise too: model seeds derive from the labels, the
training stream and the global RNG from ``train.seed``, every evaluation runs under its own
seeded RNG and on the model's training thread count.

Workers are started with ``spawn`` (a fork of a process whose OpenMP pool is running can hang),
so each imports the library once and builds its task data once per experiment (memoised). A
worker dies with the process that started it (a ``SIGKILL`` of the main process included), so
no worker trains or writes once the run's locks are gone, and it ignores Ctrl-C, which the
main process handles by stopping every worker. A worker that dies (killed, out of memory)
stops the others and the run with one line (:class:`ChildProcessError`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from approxeq.experiments.base import Experiment, ExperimentResult, Log, default_log, select_models
from approxeq.experiments.np_runner import (
    NeuralProcessExperiment,
    size_models,
)
from approxeq.experiments.schema import ExperimentConfig, save_experiment
from approxeq.train.config import ConfigError
from approxeq.train.rundir import CONFIG, RunDirError, RunLock, layout_problem, prepare_run_dirs
from approxeq.train.speed import available_cores


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """``max(1, cores // jobs)``: the torch threads of each of ``jobs`` worker processes."""
    return max(1, (cores or available_cores()) // jobs)


def check_jobs(jobs: Any) -> int:
    """``jobs`` as a positive int, or a :class:`ConfigError` naming it."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs: expected a positive int, got {jobs!r}")
    return jobs


def with_threads(config: ExperimentConfig, threads: int, *,
                 spare_core: bool = True) -> ExperimentConfig:
    """``config`` with every model's (and the default) unset ``train.num_threads`` at
    ``threads``; a count the YAML sets is kept, since the thread count is part of a run's
    identity (see the module docstring). Without a ``spare_core`` (the workers' threads fill
    every core) ``prefetch: auto`` becomes 0, since a worker cannot see that the other workers
    hold the cores it would prefetch on; prefetching does not change the numbers."""
    def filled(t):
        n = t.num_threads
        prefetch = t.prefetch if spare_core or t.prefetch != "auto" else 0
        return t.replace(num_threads=threads if n is None else n, prefetch=prefetch)

    models = [replace(m, train=filled(m.train)) for m in config.models]
    return replace(config, models=models, train=filled(config.train))


def worker_count(jobs: int, model_threads: Sequence[int], cores: int) -> int:
    """How many of ``jobs`` workers fit ``cores`` when each model keeps its thread count:
    ``min(jobs, cores // the largest count)``, at least 1."""
    return max(1, min(jobs, cores // max(model_threads, default=1)))


def _tasks_key(experiment: Experiment, config: ExperimentConfig) -> str:
    """What a run's task data depend on: the task, the evaluation settings and ``extra``, not
    the training seed (every seed is scored on the same tasks) nor the thread count."""
    train = {k: v for k, v in config.train.to_dict().items() if k not in ("seed", "num_threads")}
    return json.dumps({"experiment": experiment.name, "task": config.task.to_dict(),
                       "size": config.size, "train": train, "extra": config.extra},
                      sort_keys=True, default=str)


_TASKS: dict[str, Any] = {}


def shared_tasks(experiment: NeuralProcessExperiment, config: ExperimentConfig, out_dir: Path,
                 log: Log) -> Any:
    """``experiment.tasks(config, out_dir, log)``, built once per process for all the runs
    that differ only in their training seed."""
    key = _tasks_key(experiment, config)
    if key not in _TASKS:
        _TASKS.clear()  # one experiment at a time: the test sets can be large
        _TASKS[key] = experiment.tasks(config, out_dir, log)
    return _TASKS[key]


def _quiet(_message: str) -> None:
    pass


def _init_worker(threads: int, parent: int | None = None) -> None:
    """Set a worker's torch threads; in a worker process (``parent``: the pid of the process
    that started it) also make it die with that process and ignore Ctrl-C."""
    import torch

    torch.set_num_threads(threads)
    if parent is not None:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops the workers
        die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Kill this process (``SIGKILL``) as soon as the process ``parent`` that started it dies,
    however it dies: on Linux the kernel does it (``PR_SET_PDEATHSIG``), elsewhere a daemon
    thread that checks the parent's pid twice a second. An orphaned worker would otherwise
    train on, writing checkpoints with no lock held on its run directory, and print a
    ``BrokenPipeError`` traceback when it tries to hand back its result."""
    import signal

    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the above took effect
        os._exit(1)
    if armed:
        return
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # the whole process, at once, writing nothing more

    threading.Thread(target=watch, name="approxeq-parent-watch", daemon=True).start()


def _work(args: tuple) -> tuple[int, str, str, float]:
    """One unit in a worker: train (resuming), evaluate (or reuse ``eval.json``); returns
    ``(run index, label, the entry's log line, seconds)``."""
    index, experiment, config, out_dir, label, fingerprint, device = args
    start = time.monotonic()
    out_dir = Path(out_dir)
    tasks = shared_tasks(experiment, config, out_dir, _quiet)
    mc = next(m for m in config.models if m.label == label)
    signature = experiment.signature(config, tasks)
    _, _, entry = experiment.run_unit(config, mc, tasks, out_dir / label, fingerprint,
                                      signature, progress=False, log=_quiet, device=device)
    lines: list[str] = []
    experiment.log_entry(label, entry, lines.append)
    return index, label, " ".join(lines), time.monotonic() - start


def run_parallel(experiment: Experiment, runs: Sequence[tuple[ExperimentConfig, str | Path]],
                 jobs: int, *, progress: bool = True, log: Log | None = None,
                 figures: Callable | None = None, device: str | None = None,
                 only: Sequence[str] | None = None, restart: bool = False,
                 cores: int | None = None) -> list[ExperimentResult]:
    """Run several runs of one neural-process experiment (e.g. one per training seed) with
    their (model, run) units spread over ``jobs`` worker processes (see the module docstring).

    Args:
        experiment: a :class:`~approxeq.experiments.np_runner.NeuralProcessExperiment`.
        runs: ``(config, out_dir)`` pairs; every directory is locked for the whole call.
        jobs: worker processes at most (1: the units run here, one after another); fewer
            run when as many workers of the models' thread counts would not fit ``cores``.
        progress: unused (workers show no progress bars; one line per finished unit instead).
        log, figures, device, only, restart: as for
            :meth:`~approxeq.experiments.np_runner.NeuralProcessExperiment.run`.
        cores: the cores to share among the workers (default: those this process may use).

    Returns:
        One :class:`~approxeq.experiments.ExperimentResult` per run, in order.

    Raises:
        ConfigError: ``jobs`` is not a positive int, the experiment is not a neural-process
            one, or this is a ``torchrun`` process group.
        RunDirError, CheckpointError: as for a sequential run, before any worker starts.
        ChildProcessError: a worker process died (killed, out of memory); the others are
            stopped and a rerun resumes.
    """
    del progress
    check_jobs(jobs)
    if not isinstance(experiment, NeuralProcessExperiment):
        raise ConfigError(f"jobs: experiment {experiment.name!r} trains its models in one "
                          f"process; run it with jobs 1 (got {jobs})")
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise ConfigError(f"jobs: under torchrun the ranks already share every model; run "
                          f"with jobs 1 (got {jobs})")
    log = log or default_log
    cores = cores or available_cores()
    threads = threads_per_job(jobs, cores)
    runs = [(with_threads(size_models(config), threads), Path(out)) for config, out in runs]
    counts = [mc.train.num_threads for config, _ in runs
              for mc in select_models(config, only, reserved=experiment.reserved)]
    workers = worker_count(jobs, counts, cores)
    if workers * max(counts, default=1) >= cores:  # no core left to prefetch on
        runs = [(with_threads(config, threads, spare_core=False), out) for config, out in runs]
    locks: list[RunLock] = []
    try:
        plans = [_prepare_run(experiment, config, out, locks, only=only, restart=restart,
                              log=log) for config, out in runs]
        # the task data once here first: a data cache (smoke) is then written by one process,
        # and the report below reuses them
        shared_tasks(experiment, runs[0][0], runs[0][1], log)
        units = [(k, experiment, config, str(out), mc.label, plans[k][1][mc.label], device)
                 for k, (config, out) in enumerate(runs) for mc in plans[k][0]]
        name = {k: (out.name if len(runs) > 1 else "") for k, (_, out) in enumerate(runs)}
        workers = min(workers, max(1, len(units)))
        if workers < min(jobs, len(units)):
            log(f"jobs: {workers} worker process(es) of the {jobs} asked fit the {cores} "
                f"core(s), since each model keeps the thread count its YAML sets "
                f"({max(counts)}): a run's thread count is part of its identity")
        shown = sorted(set(counts))
        log(f"{len(units)} unit(s) on {workers} worker process(es), each model on "
            f"{'/'.join(map(str, shown))} torch thread(s)")
        _train_units(units, workers, threads, name, log)
        results = []
        for k, (config, out) in enumerate(runs):
            chosen, fingerprints, start = plans[k]
            tasks = shared_tasks(experiment, config, out, _quiet)
            results.append(experiment._run_locked(
                config, out, chosen, fingerprints, main=True, progress=False, log=_quiet,
                figures=figures, device=device, start=start, tasks=tasks))
        return results
    finally:
        _TASKS.clear()
        for lock in locks:
            lock.release()


def _prepare_run(experiment: NeuralProcessExperiment, config: ExperimentConfig, out: Path,
                 locks: list[RunLock], *, only: Sequence[str] | None, restart: bool, log: Log
                 ) -> tuple[list, dict[str, Any], float]:
    """Lock ``out`` (the lock joins ``locks``) and check it as a sequential run would
    (layout, fingerprints, checkpoints, ``restart``), then save the configuration; returns
    ``(the chosen models, the fingerprints by label, the start time)``."""
    chosen = experiment.check_models(select_models(config, only, reserved=experiment.reserved))
    fingerprints = {mc.label: experiment.fingerprint(config, mc) for mc in config.models}
    lock = RunLock(out)
    lock.acquire()
    locks.append(lock)
    if (problem := layout_problem(out, 1)) is not None:
        raise RunDirError(problem)
    prepare_run_dirs([(out, experiment.experiment_fingerprint(config), "run")] +
                     [(out / mc.label, fingerprints[mc.label], mc.label) for mc in chosen],
                     restart=restart, log=log)
    save_experiment(config, out / CONFIG)
    return chosen, fingerprints, time.monotonic()


def _train_units(units: list[tuple], jobs: int, threads: int, name: dict[int, str],
                 log: Log) -> None:
    n = len(units)
    if n == 0:
        return

    def report(done: int, k: int, label: str, line: str, seconds: float) -> None:
        where = f"{name[k]}/{label}" if name[k] else label
        log(f"[{done}/{n}] {where} finished in {seconds:.0f} s: "
            f"{line.removeprefix(f'[{label}] ')}")

    if jobs == 1:
        import torch

        before = torch.get_num_threads()
        _init_worker(threads)
        try:
            for done, unit in enumerate(units, 1):
                report(done, *_work(unit))
        finally:
            torch.set_num_threads(before)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # an executor, not a multiprocessing.Pool: a Pool silently replaces a worker that dies
    # (killed, out of memory) and waits forever for its unit
    pool = ProcessPoolExecutor(min(jobs, n), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads, os.getpid()))
    try:
        pending, done = {pool.submit(_work, unit) for unit in units}, 0
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done += 1
                report(done, *future.result())
    except BrokenProcessPool:
        _stop(pool)
        raise ChildProcessError(
            "jobs: a worker process died (killed, or out of memory) while training a unit; "
            "the others were stopped. Rerun the same command to resume from the last "
            "checkpoints (with fewer --jobs if memory ran out)") from None
    except BaseException:
        # a failed unit stops the others at once; their checkpoints are written atomically,
        # so a rerun resumes from the last one
        _stop(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stop(pool: Any) -> None:
    """Stop every worker of ``pool`` now (``terminate_workers`` from Python 3.14)."""
    stop = getattr(pool, "terminate_workers", None)
    if stop is not None:
        stop()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


__all__ = ["available_cores", "check_jobs", "run_parallel", "shared_tasks", "threads_per_job",
           "with_threads", "worker_count"]
