"""``approxeq eval RUN`` on terrain and smoke runs: the run's own test sets give back the run's
own numbers from the best checkpoints, nothing of the training results is touched, multi-seed
runs are aggregated, and runs it cannot evaluate are refused in one line naming the kind."""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("xarray")

from tiny_terrain import tiny_terrain  # noqa: E402

from approxeq.cli import main

TERRAIN = {**tiny_terrain("terrain-eval", ("ConvCNP", "ConvCNP~")), "sizes": {"quick": {}}}


def _snapshot(run):
    return {p: p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and "eval" not in p.relative_to(run).parts[:1]}


def _scores(entry):
    """The numbers of an entry that an evaluation produces (not timings or bookkeeping)."""
    def keep(block):
        return {k: v for k, v in block.items() if isinstance(v, (int, float, dict))
                and "seconds" not in k and k not in ("steps", "checkpoint_step")}
    return {k: keep(v) if isinstance(v, dict) else v for k, v in keep(entry).items()}


@pytest.fixture(scope="module")
def terrain_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("terrain-eval")
    (root / "terrain.yaml").write_text(yaml.safe_dump(TERRAIN))
    assert main(["experiment", str(root / "terrain.yaml"), "--out", str(root / "run"),
                 "--seeds", "2", "--quiet", "--no-figures"]) == 0
    return root / "run"


def test_terrain_eval_gives_back_the_runs_numbers_and_touches_nothing(terrain_run, capsys):
    before = _snapshot(terrain_run)
    assert main(["eval", str(terrain_run)]) == 0
    assert "oracle" in capsys.readouterr().out
    assert _snapshot(terrain_run) == before
    out = terrain_run / "eval" / "checkpoint-best"
    trained = json.loads((terrain_run / "metrics.json").read_text())
    evaluated = json.loads((out / "metrics.json").read_text())
    assert set(evaluated) == set(trained) == {"ConvCNP", "ConvCNP~", "oracle", "terrain-blind"}
    for label, entry in trained.items():
        assert _scores(evaluated[label]) == _scores(entry), label
    for i in range(2):  # each seed's own evaluation beside the aggregate
        seed = json.loads((out / f"seed-{i}" / "metrics.json").read_text())
        own = json.loads((terrain_run / f"seed-{i}" / "metrics.json").read_text())
        assert _scores(seed["ConvCNP~"]) == _scores(own["ConvCNP~"])
        meta = seed["ConvCNP~"]
        assert meta["checkpoint"] == "best.pt" and meta["checkpoint_step"] == 3
        assert meta["steps"] == 3 and meta["approximate"] is True and meta["parameters"] > 0
        assert meta["experiment"] == "terrain-eval" and meta["size"] == "quick"
    assert evaluated["ConvCNP~"]["loglik_seeds"] == trained["ConvCNP~"]["loglik_seeds"]
    assert (out / "results.md").is_file()


def test_terrain_eval_of_one_seed_and_last_checkpoint_to_a_named_file(terrain_run, tmp_path):
    target = tmp_path / "scores.json"
    assert main(["eval", str(terrain_run / "seed-1"), "--checkpoint", "last.pt",
                 "--out", str(target)]) == 0
    entries = json.loads(target.read_text())
    assert entries["ConvCNP"]["checkpoint"] == "last.pt"
    assert "id" in entries["ConvCNP"] and "ood" in entries["ConvCNP"]
    assert (tmp_path / "scores.md").is_file()


def test_terrain_runs_refuse_a_task_file(terrain_run, tmp_path, capsys):
    data = tmp_path / "tasks.pt"
    data.write_bytes(b"")
    assert main(["eval", str(terrain_run), "--data", str(data)]) == 1
    assert "data: a terrain run is evaluated on its own test sets" in capsys.readouterr().err


def test_runs_of_other_kinds_are_refused_naming_the_kind(tmp_path, capsys):
    run = tmp_path / "graphs"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"name": "g", "task": {"name": "graph8c"}, "models": [{"label": "GIN", "name": "gin"}],
         "sizes": {"quick": {}}}))
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err
    assert "trained on task 'graph8c'" in err and "cannot re-evaluate" in err
    assert all(kind in err for kind in ("GP runs", "terrain runs", "smoke runs", "--var NAME"))
    seeds = tmp_path / "gp-seeds"
    (seeds / "seed-0").mkdir(parents=True)
    (seeds / "seed-0" / "config.yaml").write_text(yaml.safe_dump(
        {"name": "g", "task": {"name": "gibbs"}, "models": [{"label": "C", "name": "convcnp"}],
         "sizes": {"quick": {}}}))
    assert main(["eval", str(seeds)]) == 1
    assert "evaluate each seed's directory" in capsys.readouterr().err


def test_smoke_eval_gives_back_the_runs_numbers_without_writing_panels(tmp_path):
    pytest.importorskip("scipy")
    from test_smoke_experiment import _tiny_config

    out = tmp_path / "run"
    assert main(["experiment", str(_tiny_config(tmp_path)), "--out", str(out), "--steps", "2",
                 "--quiet", "--no-figures"]) == 0
    before = _snapshot(out)
    assert main(["eval", str(out)]) == 0
    assert _snapshot(out) == before
    evaluated = json.loads((out / "eval" / "checkpoint-best" / "metrics.json").read_text())
    trained = json.loads((out / "metrics.json").read_text())
    assert list(evaluated) == list(trained) == ["ConvCNP", "ConvCNP~"]
    for label in trained:
        assert _scores(evaluated[label]) == _scores(trained[label]), label
    assert evaluated["ConvCNP~"]["transfer"]["moved"]["exact"] == "ConvCNP"
    assert not list((out / "eval").rglob("*.npz"))


def test_a_seed_with_a_damaged_checkpoint_marks_its_model_failed(terrain_run, tmp_path,
                                                                  capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(terrain_run, run, ignore=shutil.ignore_patterns("eval"))
    (run / "seed-1" / "ConvCNP~" / "best.pt").write_bytes(b"damaged")
    assert main(["eval", str(run), "--skip-missing"]) == 0
    assert "failed (--skip-missing): ConvCNP~ (seed-1)" in capsys.readouterr().out
    out = run / "eval" / "checkpoint-best"
    metrics = json.loads((out / "metrics.json").read_text())
    entry = metrics["ConvCNP~"]
    assert entry["failed_seeds"] == ["seed-1"] and entry["failed"].startswith("seed-1: ")
    assert "id" not in entry and "loglik" not in entry  # not seed 0's numbers as a mean
    assert metrics["ConvCNP"]["id"]["loglik_seeds"] == json.loads(
        (terrain_run / "metrics.json").read_text())["ConvCNP"]["id"]["loglik_seeds"]
    text = (out / "results.md").read_text()
    assert "Mean over 2 training seeds" in text and "ConvCNP~ (seed-1)" in text


def test_a_seed_without_its_config_is_not_silently_dropped(terrain_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(terrain_run, run, ignore=shutil.ignore_patterns("eval"))
    (run / "seed-1" / "config.yaml").unlink()
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err
    assert "seed-1" in err and "--skip-missing" in err and "Traceback" not in err
    assert main(["eval", str(run), "--skip-missing"]) == 0
    out = run / "eval" / "checkpoint-best"
    assert len(json.loads((out / "metrics.json").read_text())["ConvCNP"]["seeds"]) == 1
    assert "Left out, without a config.yaml: seed-1." in (out / "results.md").read_text()
