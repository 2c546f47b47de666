"""Multi-seed runs: one lock on the run directory covers every seed, a single run and a run of
several seeds never share a directory, and what is reported over seeds never misreports a seed
that could not be evaluated."""

from __future__ import annotations

import json

import pytest
import yaml

from approxeq.cli import main
from approxeq.experiments import experiment_for
from approxeq.experiments.schema import experiment_from_dict
from approxeq.experiments.seeds import aggregate_seeds, run_seeds
from approxeq.train.rundir import RunDirError, RunLock


def tiny_gp(steps: int = 2) -> dict:
    """Two tiny models on a tiny GP task: a run takes a second."""
    return {
        "name": "seed-runs",
        "task": {"name": "eq", "options": {"num_context": [2, 6], "num_target": 8}},
        "models": [{"label": "CNP", "name": "cnp", "options": {"width": 8}},
                   {"label": "ConvCNP", "name": "convcnp",
                    "options": {"channels": 4, "num_layers": 1, "kernel_size": 3,
                                "points_per_unit": 8}}],
        "train": {"steps": steps, "batch_size": 2, "val_every": steps, "val_tasks": 2,
                  "test_tasks": 4, "eval_batch_size": 2, "device": "cpu", "num_threads": 1},
        "extra": {"equivariance_elements": 1, "equivariance_tasks": 1, "figures": False},
        "sizes": {"quick": {}},
    }


def quiet(_message: str) -> None:
    pass


def error_line(capsys) -> str:
    """The one error line the command printed (after the line naming the experiment)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if ": error: " in x]
    return line


def test_one_lock_on_the_run_directory_covers_every_seed(tmp_path):
    config = experiment_from_dict(tiny_gp(), size="quick")
    out = tmp_path / "run"
    # another run (say with another --seeds) holds DIR: this one must not start a seed
    with RunLock(out), pytest.raises(RunDirError, match="another approxeq run"):
        run_seeds(experiment_for(config), config, out, 3, progress=False, log=quiet)
    assert not list(out.glob("seed-*"))


def test_single_and_multi_seed_runs_never_share_a_directory(tmp_path, capsys):
    path = tmp_path / "gp.yaml"
    path.write_text(yaml.safe_dump(tiny_gp()))
    single, multi = tmp_path / "single", tmp_path / "multi"
    common = ["--quiet", "--no-figures"]
    assert main(["experiment", str(path), "--out", str(single), *common]) == 0
    assert main(["experiment", str(path), "--out", str(multi), "--seeds", "2", *common]) == 0
    capsys.readouterr()
    before = (single / "metrics.json").read_bytes(), (multi / "metrics.json").read_bytes()
    assert main(["experiment", str(path), "--out", str(single), "--seeds", "2", *common]) == 1
    err = error_line(capsys)
    assert "holds a single-seed run" in err and "--seeds" in err
    assert main(["experiment", str(path), "--out", str(multi), *common]) == 1
    err = error_line(capsys)
    assert "holds a run of several seeds (seed-0/, seed-1/)" in err and "--seeds 2" in err
    after = (single / "metrics.json").read_bytes(), (multi / "metrics.json").read_bytes()
    assert after == before and not list(single.glob("seed-*"))
    # more seeds than before extends the run: its seeds are reused
    assert main(["experiment", str(path), "--out", str(multi), "--seeds", "3", *common]) == 0


def test_a_model_that_a_seed_cannot_evaluate_is_failed_not_a_mean_of_the_others():
    def entry(loglik, gain=None):
        moved = {"loglik": loglik, "loglik_se": 0.1}
        if gain is not None:
            moved["gain_over_exact"] = gain
        return {"name": "convcnp", "loglik": loglik, "loglik_se": 0.1,
                "transfer": {"moved": moved}}

    failed = {"name": "convcnp", "options": {}, "failed": "best.pt: unreadable"}
    runs = [{"exact": entry(1.0), "approx": entry(2.0, gain=1.0)},
            {"exact": failed, "approx": entry(4.0)},  # no gain: its exact model failed
            {"exact": entry(3.0), "approx": entry(6.0, gain=3.0)}]
    out = aggregate_seeds(runs, [0, 11, 22], names=["seed-0", "seed-1", "seed-2"])
    assert out["exact"]["failed"] == "seed-1: best.pt: unreadable"
    assert out["exact"]["failed_seeds"] == ["seed-1"] and "loglik" not in out["exact"]
    assert out["approx"]["loglik"] == 4.0 and out["approx"]["loglik_seeds"] == [2.0, 4.0, 6.0]
    # a derived number that one seed lacks is left out, not the mean of the others
    assert "gain_over_exact" not in out["approx"]["transfer"]["moved"]
    assert out["approx"]["transfer"]["moved"]["loglik"] == 4.0


def test_eval_of_a_run_trained_with_only_leaves_out_the_models_it_never_trained(tmp_path,
                                                                                capsys):
    path = tmp_path / "gp.yaml"
    path.write_text(yaml.safe_dump(tiny_gp()))
    run = tmp_path / "run"
    assert main(["experiment", str(path), "--out", str(run), "--only", "ConvCNP",
                 "--quiet", "--no-figures"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0  # no --skip-missing needed
    out, err = capsys.readouterr()
    assert "failed" not in out and "never trained" in err and "CNP" in err
    metrics = json.loads((run / "eval" / "checkpoint-best" / "metrics.json").read_text())
    assert "ConvCNP" in metrics and "CNP" not in metrics
    # a model that was trained and lost its checkpoint is still an error, then failed
    (run / "ConvCNP" / "best.pt").unlink()
    assert main(["eval", str(run)]) == 1
    assert "--skip-missing" in capsys.readouterr().err


def test_multi_seed_smoke_tables_print_the_standard_error_over_seeds():
    from approxeq.experiments.studies.smoke import smoke_results_table

    def entry(loglik, gain):
        moved = {"loglik": loglik, "loglik_se": 0.5, "gain_over_component": gain,
                 "gain_over_exact": -gain}
        return {"ConvCNP~": {"loglik": loglik, "loglik_se": 0.5, "rmse": 0.1,
                             "component_loglik": loglik - 1, "delta_equiv": 0.01,
                             "transfer": {"moved": moved}}}

    metrics = aggregate_seeds([entry(1.0, 0.2), entry(2.0, 0.4)], [0, 11])
    header, row = smoke_results_table(metrics)
    # ± 0.500 is the mean per-task s.e.; the spread over the 2 seeds is s.e. 0.500 of 1.0, 2.0
    assert row[1] == "1.500 ± 0.500 (seeds ± 0.500)"
    assert row[3] == "0.500 (seeds ± 0.500)"
    assert row[6] == ("1.500 ± 0.500 (seeds ± 0.500) (+0.300 (seeds ± 0.100), "
                      "-0.300 (seeds ± 0.100))")
    single = smoke_results_table(aggregate_seeds([entry(1.0, 0.2)], [0]))[1]
    assert single[1] == "1.000 ± 0.500"  # one seed: no spread to show


def test_seeds_are_refused_for_runners_that_ignore_the_training_seed(tmp_path, capsys):
    # graph, n-body and PATTERN runners repeat by their own options: N copies of one run
    # would have passed for N seeds
    assert main(["experiment", "sr25", "--out", str(tmp_path / "sr"), "--seeds", "2",
                 "--no-figures"]) == 1
    assert "seeds: experiment 'sr25' repeats its models" in error_line(capsys)
    assert not (tmp_path / "sr").exists()


def test_multi_seed_tables_of_the_other_experiments_print_it_too():
    from approxeq.experiments.report import results_table

    def entry(loglik):
        block = {"loglik": loglik, "loglik_se": 0.5, "component_loglik": loglik - 1,
                 "component_loglik_se": 0.5}
        return {"M": {"id": dict(block), "ood": dict(block)}}

    header, row = results_table(aggregate_seeds([entry(1.0), entry(2.0)], [0, 11]))
    assert header[1] == "log-lik ID" and row[1] == "1.500 ± 0.500 (seeds ± 0.500)"
    assert row[3] == "0.500 ± 0.500 (seeds ± 0.500)"  # the component, ID
    assert results_table(entry(1.0))[1][1] == "1.000 ± 0.500"


def test_several_seeds_in_worker_processes_report_like_one_process(tmp_path, capsys):
    """The --jobs path reports each seed without going through ``run`` (where the GP study
    once kept its start time): every seed's experiment.json gets its wall time."""
    path = tmp_path / "gp.yaml"
    path.write_text(yaml.safe_dump(tiny_gp()))
    out = tmp_path / "run"
    assert main(["experiment", str(path), "--out", str(out), "--seeds", "2", "--jobs", "2",
                 "--quiet", "--no-figures"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    for seed in sorted(out.glob("seed-*")):
        assert json.loads((seed / "experiment.json").read_text())["seconds"] > 0
    assert set(json.loads((out / "metrics.json").read_text())) >= {"CNP", "ConvCNP"}
