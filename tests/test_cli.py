"""The approxeq command: parsing, errors, the model list, and train/eval end to end."""

from __future__ import annotations

import json

import pytest
import yaml

from approxeq.cli import build_parser, main, resolve_experiment
from approxeq.experiments import save_batches
from approxeq.np import available_models

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
    ["nope"], ["train"], ["train", "x.yaml"], ["demo"], ["demo", "--out", "d", "--steps", "0"],
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
    names = [ln.split()[0] for ln in lines if ln and not ln[0].isspace()][:-1]
    assert names == list(available_models())


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


def test_experiments_resolve_by_name_or_path(tmp_path, monkeypatch):
    from approxeq.cli import CLIError
    from approxeq.experiments import CONFIGS_DIR

    (tmp_path / "mine.yaml").write_text(TINY)
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    # a user's own YAML, by path
    assert resolve_experiment(str(tmp_path / "mine.yaml")) == tmp_path / "mine.yaml"
    assert resolve_experiment("../../mine.yaml").resolve() == tmp_path / "mine.yaml"
    # the shipped experiments, by name, from any directory
    assert resolve_experiment("gp1d") == CONFIGS_DIR / "gp1d.yaml"
    assert resolve_experiment("gp1d.yaml") == CONFIGS_DIR / "gp1d.yaml"
    with pytest.raises(CLIError, match="shipped: .*gp1d"):
        resolve_experiment("mine")


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

    from approxeq.experiments import make_test_sets
    from approxeq.experiments.schema import load_experiment

    tasks = make_test_sets(load_experiment(config))["ood"][:1]
    save_batches(tmp_path / "shifted.pt", tasks)
    assert main(["eval", str(out), "--data", str(tmp_path / "shifted.pt")]) == 0
    on_file = json.loads((out / "eval" / "shifted" / "metrics.json").read_text())
    assert on_file["ConvCNP"]["shifted"]["n_tasks"] == tasks[0].batch_size
    assert main(["eval", str(out), "--data", str(config)]) == 1  # not a task file

    mtime = (out / "ConvCNP" / "best.pt").stat().st_mtime_ns
    assert main(["train", str(config), "--out", str(out), "--quiet", "--no-figures"]) == 0
    assert (out / "ConvCNP" / "best.pt").stat().st_mtime_ns == mtime
    assert yaml.safe_load((out / "config.yaml").read_text())["name"] == "tiny-cli"


@pytest.mark.parametrize(("flags", "size", "n_inits"), [
    (["--quick"], "quick", 2), ([], "quick", 2), (["--size", "paper"], "paper", 3)])
def test_settings_experiment_dispatches_by_task_name(tmp_path, monkeypatch, capsys, flags, size,
                                                     n_inits):
    import approxeq.experiments.studies.graphs.study as graphs

    calls = []

    def fake_runner(name, cfg, out_dir, size, log):
        calls.append((name, size, [m[0] for m in cfg["models"]], cfg["n_inits"]))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps({"models": {}}))
        (out_dir / "results.md").write_text("| model | pairs |\n")
        return {}

    monkeypatch.setattr(graphs, "_run_settings", fake_runner)
    cfg = tmp_path / "sep.yaml"
    cfg.write_text("name: my-sr25\ntask: {name: sr25, options: {n_inits: 3}}\n"
                   "models: [{label: GIN, name: gin, options: {strategy: none}}]\n"
                   "sizes: {quick: {task: {n_inits: 2}}, paper: {}}\n")
    argv = ["experiment", str(cfg), "--out", str(tmp_path / "run")] + flags
    assert main(argv) == 0
    assert calls == [("sr25", size, ["GIN"], n_inits)]
    assert "| model | pairs |" in capsys.readouterr().out


def test_shipped_experiments_share_one_schema_and_find_their_runner():
    from approxeq.experiments import experiment_for, experiment_names, load_named_experiment

    names = experiment_names()
    assert {"gp1d", "gp1d-ablation", "era5-uk", "graph8c", "exp-iso", "sr25", "exp-classify",
            "csl", "nbody"} <= set(names)
    for name in names:
        for size in ("quick", "paper"):
            config = load_named_experiment(name, size)
            assert config.name == name and config.models
            assert experiment_for(config).handles(config)


def test_unknown_task_and_old_runner_keys_are_refused(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("runner: os:system\nrunner_args: {command: 'true'}\n")
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "run")]) == 1
    assert "unknown key 'runner'" in capsys.readouterr().err
    cfg.write_text("name: x\ntask: {name: nowhere}\nmodels: [{name: cnp}]\n")
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "run")]) == 1
    assert "no experiment runs task 'nowhere'" in capsys.readouterr().err


def test_steps_overrides_every_model_in_train_and_experiment(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    from approxeq.train.checkpoint import load_checkpoint

    # the paper size asks for 100000 steps; --steps 3 runs 3, validating and checkpointing
    out = tmp_path / "exp"
    assert main(["experiment", str(config), "--size", "paper", "--steps", "3", "--out",
                 str(out), "--quiet", "--no-figures", "--only", "ConvCNP"]) == 0
    ckpt = load_checkpoint(out / "ConvCNP" / "last.pt")
    assert ckpt.step == 3
    history = json.loads((out / "ConvCNP" / "history.json").read_text())
    assert history["val"]["step"][-1] == 3
    assert main(["train", str(config), "--steps", "2", "--out", str(tmp_path / "tr"),
                 "--quiet", "--no-figures"]) == 0
    assert load_checkpoint(tmp_path / "tr" / "ConvCNP-approx" / "last.pt").step == 2
    assert yaml.safe_load((tmp_path / "tr" / "config.yaml").read_text())["models"][0]["train"][
        "steps"] == 2
    with pytest.raises(SystemExit):
        main(["train", str(config), "--steps", "0", "--out", str(tmp_path / "x")])
    capsys.readouterr()
