"""``--jobs N``: the (model, seed) units of a run in worker processes give the numbers of the
sequential run, resume, respect run locks and refuse what they cannot run."""

from __future__ import annotations

import json
import os

import pytest
import yaml

pytest.importorskip("xarray")

from tiny_terrain import tiny_terrain  # noqa: E402

from approxeq.experiments import experiment_for
from approxeq.experiments.parallel import (
    check_jobs,
    run_parallel,
    threads_per_job,
    with_threads,
    worker_count,
)
from approxeq.experiments.schema import experiment_from_dict
from approxeq.train.config import ConfigError
from approxeq.train.rundir import RunDirError, RunLock

# one thread per model in both modes, so that the arithmetic is the same
TINY = tiny_terrain("terrain-jobs", steps=4, val_every=2, num_threads=1)
# the dropout of the elevation input draws from the generator, so it is part of the check
TINY["models"][1] = {**TINY["models"][1], "options": {**TINY["models"][1]["options"],
                                                      "aux_dropout": 0.5}}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _metrics(run_dir):
    return _without_timings(json.loads((run_dir / "metrics.json").read_text()))


def test_jobs_give_the_numbers_of_the_sequential_run_and_resume(tmp_path, monkeypatch, capsys):
    from approxeq.cli import main
    from approxeq.experiments.seeds import run_seeds

    config = experiment_from_dict(TINY, size="quick")
    experiment = experiment_for(config)
    run_seeds(experiment, config, tmp_path / "one", 2, progress=False, log=lambda m: None)

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "sizes": {"quick": {}}}))
    out = tmp_path / "two"
    # the workers evaluate; the report in this process must reuse their evaluations
    real_evaluate = type(experiment).evaluate

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the report re-evaluated a model the workers evaluated")

    monkeypatch.setattr(type(experiment), "evaluate", no_evaluation)
    assert main(["experiment", str(path), "--out", str(out), "--seeds", "2", "--jobs", "2",
                 "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "4 unit(s) on 2 worker process(es)" in err
    assert sum("finished in" in line for line in err.splitlines()) == 4  # one line per unit
    assert _metrics(out) == _metrics(tmp_path / "one")
    for i in range(2):
        assert _metrics(out / f"seed-{i}") == _metrics(tmp_path / "one" / f"seed-{i}")

    # a rerun finds every unit finished and evaluated: nothing is trained or evaluated again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    assert main(["experiment", str(path), "--out", str(out), "--seeds", "2", "--jobs", "2",
                 "--no-figures", "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == before
    assert _metrics(out) == _metrics(tmp_path / "one")
    monkeypatch.setattr(type(experiment), "evaluate", real_evaluate)


def test_a_locked_run_directory_is_refused_before_any_worker_starts(tmp_path):
    config = experiment_from_dict(TINY, size="quick")
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirError):
            run_parallel(experiment_for(config), [(config, tmp_path / "run")], 2,
                         log=lambda m: None)
    assert not (tmp_path / "run" / "ConvCNP~").exists()


def test_jobs_are_checked_and_share_the_cores():
    with pytest.raises(ConfigError, match="jobs: expected a positive int, got 0"):
        check_jobs(0)
    assert threads_per_job(2, cores=2) == 1
    assert threads_per_job(2, cores=16) == 8
    assert threads_per_job(4, cores=2) == 1
    # a count the YAML sets is kept (it is part of the run's identity); an unset one is filled
    config = experiment_from_dict({**TINY, "models": [
        {**TINY["models"][0], "train": {"num_threads": 4}}, TINY["models"][1]],
        "train": {**TINY["train"], "num_threads": None}}, size="quick")
    assert [m.train.num_threads for m in with_threads(config, 2).models] == [4, 2]
    assert [m.train.num_threads for m in with_threads(config, 8).models] == [4, 8]
    # and the workers that fit the cores run
    assert worker_count(2, [2, 2], cores=2) == 1
    assert worker_count(2, [1, 1], cores=2) == 2
    assert worker_count(4, [2, 1], cores=16) == 4
    assert worker_count(2, [4], cores=2) == 1


def test_jobs_keep_each_models_thread_count_which_the_fingerprint_records(tmp_path):
    import torch

    lines: list[str] = []
    # the YAML sets 2 threads (as era5-uk's quick size does): --jobs 2 on 2 cores keeps them
    config = experiment_from_dict(tiny_terrain("terrain-threads", ("ConvCNP", "ConvCNP~"),
                                               steps=2, val_every=2, num_threads=2),
                                  size="quick")
    experiment = experiment_for(config)
    experiment.run(config, tmp_path / "one", progress=False, log=lambda m: None)
    run_parallel(experiment, [(config, tmp_path / "two")], 2, log=lines.append, cores=2)
    assert any("1 worker process(es) of the 2 asked fit the 2 core(s)" in x for x in lines)
    assert _metrics(tmp_path / "two") == _metrics(tmp_path / "one")
    for label in ("ConvCNP", "ConvCNP~"):
        fp = json.loads((tmp_path / "two" / label / "fingerprint.json").read_text())
        assert fp["train"]["num_threads"] == 2
    # unset, the count is the one the run trained on: here 2, in a worker of --jobs 2 on 2
    # cores 1, so the run cannot be resumed or reused with --jobs 2
    unset = experiment_from_dict(tiny_terrain("terrain-threads", ("ConvCNP",), steps=2,
                                              val_every=2), size="quick")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        experiment.run(unset, tmp_path / "three", progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(RunDirError, match=r"train.num_threads: 2 -> 1"):
        run_parallel(experiment, [(unset, tmp_path / "three")], 2, log=lambda m: None,
                     cores=2)


def test_a_size_runs_the_labels_of_its_models_option(tmp_path):
    from approxeq.experiments import load_named_experiment
    from approxeq.experiments.np_runner import size_models

    for name, quick in (("terrain", ["PT-TNP", "ConvCNP", "ConvCNP~", "ConvCNP+elev",
                                     "ConvCNP~+elev"]),
                        ("smoke", ["PT-TNP", "ConvCNP", "ConvCNP~"])):
        narrowed = size_models(load_named_experiment(name, size="quick"))
        assert [m.label for m in narrowed.models] == quick
        assert "models" not in narrowed.task.options
        full = size_models(load_named_experiment(name, size="full"))
        assert len(full.models) == 14
        for mc in narrowed.models:  # the quick models train in the full size exactly as here
            twin = next(m for m in full.models if m.label == mc.label)
            assert (twin.options, twin.train) == (mc.options, mc.train)
    config = experiment_from_dict({**TINY, "task": {
        **TINY["task"], "options": {**TINY["task"]["options"], "models": ["nope"]}}})
    with pytest.raises(ConfigError, match=r"task.options.models: unknown label\(s\) \['nope'\]"):
        size_models(config)


def test_experiments_without_independent_units_refuse_jobs(tmp_path):
    from approxeq.experiments import load_named_experiment

    config = load_named_experiment("graph8c", size="quick")
    with pytest.raises(ConfigError, match="jobs: experiment .* in one process"):
        run_parallel(experiment_for(config), [(config, tmp_path)], 2, log=lambda m: None)


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _start_long_run(tmp_path):
    """A --jobs 2 run of the tiny terrain models for 100,000 steps, once both workers have
    written a checkpoint: ``(main process, its worker pids, its stderr file, run dir)``."""
    import subprocess
    import sys
    import time

    config = {**TINY, "train": {**TINY["train"], "steps": 100_000, "checkpoint_every": 2,
                                "val_every": 100_000}, "sizes": {"quick": {}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out, log = tmp_path / "run", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as err:
        main = subprocess.Popen([sys.executable, "-m", "approxeq.cli", "experiment", str(path),
                                 "--out", str(out), "--jobs", "2", "--no-figures"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 240
    while not all((out / m["label"] / "last.pt").is_file() for m in TINY["models"]):
        if main.poll() is not None or time.monotonic() > deadline:
            main.kill()
            raise AssertionError(log.read_text())
        time.sleep(0.2)
    workers = [w for w in _children(main.pid)
               if "spawn_main" in open(f"/proc/{w}/cmdline").read()]
    assert len(workers) == 2
    return main, workers, log, out


def _wait_dead(pids, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def _kill_all(pids) -> None:
    import signal

    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


LINUX = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")


@pytest.mark.slow
@LINUX
def test_workers_die_with_a_killed_main_process_and_print_nothing(tmp_path):
    """SIGKILL of the main process of a --jobs 2 run: its workers stop at once (they would
    train on with no lock held on the directory) and print no BrokenPipeError traceback."""
    import signal
    import time

    main, workers, log, out = _start_long_run(tmp_path)
    try:
        main.send_signal(signal.SIGKILL)
        main.wait()
        assert _wait_dead(workers, 5), "workers outlived the main process"
        stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        time.sleep(1.5)
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
        assert "Traceback" not in log.read_text() and "BrokenPipe" not in log.read_text()
    finally:
        _kill_all([main.pid, *workers])


@pytest.mark.slow
@LINUX
def test_a_killed_worker_stops_the_run_in_one_line_instead_of_a_hang(tmp_path):
    """SIGKILL of one worker (the out-of-memory killer, say): the run stops the other worker
    and exits 1 with one line, where a multiprocessing pool waited forever for the unit."""
    import signal
    import subprocess

    main, workers, log, _ = _start_long_run(tmp_path)
    try:
        os.kill(workers[0], signal.SIGKILL)
        try:
            assert main.wait(timeout=30) == 1
        except subprocess.TimeoutExpired:
            raise AssertionError("the run hangs after a worker died") from None
        assert _wait_dead(workers, 5)
        err = log.read_text()
        assert "Traceback" not in err
        assert "error: jobs: a worker process died" in err.splitlines()[-1]
    finally:
        _kill_all([main.pid, *workers])


def test_the_help_and_readme_say_a_runs_thread_count_is_part_of_its_identity(capsys):
    from pathlib import Path

    from approxeq.cli import main

    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert "thread count is part of its identity" in " ".join(capsys.readouterr().out.split())
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if readme.is_file():  # a source checkout
        assert "thread count is part of its identity" in " ".join(readme.read_text().split())
