"""The approxeq command: parsing, errors, the model list, and train/eval end to end."""

from __future__ import annotations

import json

import pytest
import yaml

from approxeq.cli import build_parser, main, resolve_experiment
from approxeq.np import available_models
from approxeq.train.experiment import save_batches

TINY = """
name: tiny-cli
task: {name: gibbs, options: {num_context: [2, 8], num_target: 12}}
models:
  - {label: ConvCNP, name: convcnp,
     options: {channels: 4, num_layers: 1, kernel_size: 3, points_per_unit: 8}}
  - {label: ConvCNP-approx, name: convcnp,
     options: {channels: 4, num_layers: 1, kernel_size: 3, points_per_unit: 8,
               approximate: true, num_fixed_inputs: 2}}
train: {steps: 4, val_every: 2, val_tasks: 4, test_tasks: 8, eval_batch_size: 4, device: cpu}
extra:
  equivariance_elements: 1
  equivariance_tasks: 2
  ablation: {parameter: B, series: [{name: ConvCNP, points: [[0, ConvCNP], [2, ConvCNP-approx]]}]}
sizes: {quick: {}, paper: {steps: 100000}}
"""


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["train"], ["train", "x.yaml"], ["demo"], ["demo", "--out", "d", "--steps", "0"],
    ["demo", "--out", "d", "--steps", "many"], ["eval"], ["eval", "d", "--checkpoint", "mid.pt"],
    ["experiment", "gp1d"],
])
def test_bad_arguments_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: approxeq" in capsys.readouterr().err


def test_help_documents_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(c in text for c in ("models", "demo", "experiment", "train", "eval"))
    args = build_parser().parse_args(["experiment", "gp1d", "--out", "d", "--quick"])
    assert args.quick and args.name == "gp1d"


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list(available_models())


def test_unknown_experiment_and_missing_config_fail_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "no-such-experiment", "--out", str(tmp_path / "o")]) == 1
    assert "no-such-experiment" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 1
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "no-run")]) == 1
    assert "no-run" in capsys.readouterr().err
    (tmp_path / "exp.yaml").write_text(TINY)
    assert main(["experiment", "exp.yaml", "--out", "o", "--quick", "--size", "paper"]) == 1
    assert main(["train", "exp.yaml", "--out", "o", "--size", "huge"]) == 1
    assert "huge" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text(TINY.replace("kernel_size: 3,", "bogus: 3,", 1))
    assert main(["train", "bad.yaml", "--out", "o2", "--quiet", "--no-figures"]) == 1
    assert "bogus" in capsys.readouterr().err


def test_experiment_names_resolve_by_walking_up(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.yaml").write_text(TINY)
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert resolve_experiment("mine") == tmp_path / "experiments" / "mine.yaml"
    assert resolve_experiment("mine.yaml") == tmp_path / "experiments" / "mine.yaml"
    # the repository's own experiments are found from the package location too
    assert resolve_experiment("gp1d").name == "gp1d.yaml"


def test_train_then_eval_end_to_end(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ConvCNP-approx" in printed and "oracle" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"ConvCNP", "ConvCNP-approx", "oracle"}
    assert all({"loglik", "loglik_se"} <= set(e) for e in metrics.values())
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"predictions_id.png", "predictions_ood.png", "fixed_inputs_ConvCNP-approx.png",
            "training_curves.png", "ablation_id.png", "ablation_ood.png"} <= figures
    assert all((out / "figures" / f).read_bytes()[:4] == b"\x89PNG" for f in figures)

    assert main(["eval", str(out), "--out", str(tmp_path / "re.json")]) == 0
    again = json.loads((tmp_path / "re.json").read_text())
    assert again["ConvCNP"]["id"]["loglik"] == pytest.approx(metrics["ConvCNP"]["id"]["loglik"])

    from approxeq.train.config import load_experiment
    from approxeq.train.experiment import make_test_sets

    tasks = make_test_sets(load_experiment(config))["ood"][:1]
    save_batches(tmp_path / "shifted.pt", tasks)
    assert main(["eval", str(out), "--data", str(tmp_path / "shifted.pt")]) == 0
    on_file = json.loads((out / "eval-shifted" / "metrics.json").read_text())
    assert on_file["ConvCNP"]["shifted"]["n_tasks"] == tasks[0].batch_size
    assert main(["eval", str(out), "--data", str(config)]) == 1  # not a task file

    mtime = (out / "ConvCNP" / "best.pt").stat().st_mtime_ns
    assert main(["train", str(config), "--out", str(out), "--quiet", "--no-figures"]) == 0
    assert (out / "ConvCNP" / "best.pt").stat().st_mtime_ns == mtime
    assert yaml.safe_load((out / "config.yaml").read_text())["name"] == "tiny-cli"


@pytest.mark.parametrize("quick", [True, False])
def test_experiment_with_own_runner_dispatches(tmp_path, monkeypatch, capsys, quick):
    import approxeq.train.graph_experiments as graphs

    calls = []

    def fake_runner(name, out_dir, quick, log):
        calls.append((name, quick))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps({"models": {}}))
        (out_dir / "results.md").write_text("| model | pairs |\n")

    monkeypatch.setattr(graphs, "run_graph_experiment", fake_runner)
    cfg = tmp_path / "sep.yaml"
    cfg.write_text("runner: approxeq.train.graph_experiments:run_graph_experiment\n"
                   "runner_args: {name: sr25}\n")
    argv = ["experiment", str(cfg), "--out", str(tmp_path / "run")] + (["--quick"] if quick else [])
    assert main(argv) == 0
    assert calls == [("sr25", quick)]
    assert "| model | pairs |" in capsys.readouterr().out


def test_shipped_runner_experiments_point_at_real_functions():
    import importlib

    for name in ("graph8c", "exp-iso", "sr25", "exp-classify", "csl", "nbody"):
        data = yaml.safe_load(resolve_experiment(name).read_text())
        module, _, func = data["runner"].partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_runner_outside_the_package_is_refused(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("runner: os:system\nrunner_args: {command: 'true'}\n")
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "run")]) == 1
    assert "runner must be 'approxeq." in capsys.readouterr().err
