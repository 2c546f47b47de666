"""The experiment runner: training, ID/OOD evaluation against the oracle, resumption, files."""

from __future__ import annotations

import json

import pytest
import torch

from approxeq.experiments import (
    evaluate_run,
    load_batches,
    make_test_sets,
    results_markdown,
    run_experiment,
    save_batches,
)
from approxeq.experiments.schema import experiment_from_dict, load_experiment
from approxeq.train.config import ConfigError

CONV = {"channels": 4, "num_layers": 1, "kernel_size": 3, "points_per_unit": 8}


def tiny_config(steps: int = 6, **extra) -> dict:
    return {
        "name": "tiny",
        "task": {"name": "gibbs", "options": {"num_context": [2, 8], "num_target": 12}},
        "models": [
            {"label": "TNP", "name": "tnp",
             "options": {"width": 8, "num_layers": 1, "num_heads": 2}},
            {"label": "ConvCNP", "name": "convcnp", "options": dict(CONV)},
            {"label": "ConvCNP-approx", "name": "convcnp",
             "options": {**CONV, "approximate": True, "num_fixed_inputs": 2}},
        ],
        "train": {"steps": steps, "val_every": 3, "val_tasks": 4, "test_tasks": 8,
                  "eval_batch_size": 4, "device": "cpu"},
        "extra": {"equivariance_elements": 2, "equivariance_tasks": 2, **extra},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    messages: list[str] = []
    result = run_experiment(experiment_from_dict(tiny_config()), out, progress=False,
                            log=messages.append)
    return out, result, messages


def test_metrics_have_loglik_and_se_for_every_model_and_setting(run):
    out, result, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"TNP", "ConvCNP", "ConvCNP-approx", "oracle"}
    for entry in metrics.values():
        for where in (entry, entry["id"], entry["ood"]):
            assert {"loglik", "loglik_se"} <= set(where)
            assert where["loglik_se"] > 0
    assert metrics["TNP"]["loglik"] == metrics["TNP"]["id"]["loglik"]
    assert metrics == json.loads(json.dumps(result.metrics))


def test_oracle_beats_barely_trained_models(run):
    metrics = run[1].metrics
    for setting in ("id", "ood"):
        assert all(metrics["oracle"][setting]["loglik"] > metrics[m][setting]["loglik"]
                   for m in ("TNP", "ConvCNP", "ConvCNP-approx"))


def test_approximate_model_reports_component_and_delta_equiv(run):
    metrics = run[1].metrics
    approx, exact = metrics["ConvCNP-approx"], metrics["ConvCNP"]
    assert approx["id"]["delta_equiv"] > 0
    # OOD inputs lie outside the fixed-input domain, where t = 0: the model is its component
    assert approx["ood"]["delta_equiv"] == pytest.approx(0.0, abs=1e-6)
    assert approx["ood"]["component_loglik"] == pytest.approx(approx["ood"]["loglik"], abs=1e-5)
    assert "delta_equiv" not in exact["id"] and "component" not in exact["id"]


def test_orbit_equivariance_error_separates_exact_and_approximate(run):
    metrics = run[1].metrics
    exact = metrics["ConvCNP"]["id"]["equivariance"]
    approx = metrics["ConvCNP-approx"]["id"]["equivariance"]
    assert exact["equiv_err_max"] < 1e-4
    assert approx["component_equiv_err_max"] < 1e-4 < approx["equiv_err_max"]
    assert "equivariance" not in metrics["TNP"]["id"]  # symmetry None: nothing to test


def test_run_directory_files(run):
    out = run[0]
    for label in ("TNP", "ConvCNP", "ConvCNP-approx"):
        assert {"best.pt", "last.pt", "history.json", "eval.json"} <= {
            p.name for p in (out / label).iterdir()}
    assert load_experiment(out / "config.yaml", "quick").models[2].options["approximate"]
    md = (out / "results.md").read_text()
    assert all(s in md for s in ("ConvCNP-approx", "oracle", "±", "Δequiv"))


def test_rerun_skips_finished_and_resumes_unfinished(run, tmp_path):
    out = run[0]
    before = (out / "ConvCNP" / "last.pt").stat().st_mtime_ns
    messages: list[str] = []
    again = run_experiment(experiment_from_dict(tiny_config()), out, progress=False,
                           log=messages.append)
    assert (out / "ConvCNP" / "last.pt").stat().st_mtime_ns == before
    assert sum("finished earlier" in m for m in messages) == 3
    assert again.metrics["ConvCNP"]["id"] == run[1].metrics["ConvCNP"]["id"]
    messages.clear()
    longer = run_experiment(experiment_from_dict(tiny_config(steps=8)), out, progress=False,
                            log=messages.append, only=["TNP"])
    assert any("resuming from step 6" in m for m in messages)
    assert longer.metrics["TNP"]["steps"] == 8
    # the models left out keep their earlier evaluations
    assert longer.metrics["ConvCNP"] == again.metrics["ConvCNP"]


def test_evaluate_run_reproduces_metrics_and_reads_saved_batches(run, tmp_path):
    out, result, _ = run
    metrics, path = evaluate_run(out, out=tmp_path / "again.json", log=lambda m: None)
    assert path == tmp_path / "again.json" and path.is_file()
    expected = result.metrics["ConvCNP"]["id"]["loglik"]
    assert metrics["ConvCNP"]["id"]["loglik"] == pytest.approx(expected)
    batches = make_test_sets(experiment_from_dict(tiny_config()))["ood"][:1]
    save_batches(tmp_path / "tasks.pt", batches)
    metrics, path = evaluate_run(out, data=tmp_path / "tasks.pt", log=lambda m: None)
    assert path == out / "eval" / "tasks" / "metrics.json"
    assert metrics["ConvCNP"]["tasks"]["n_tasks"] == batches[0].batch_size
    assert metrics["oracle"]["loglik"] == pytest.approx(float(batches[0].meta["gt_loglik"].mean()))


def test_saved_batches_round_trip_and_bad_files(tmp_path):
    batches = make_test_sets(experiment_from_dict(tiny_config()))["id"][:2]
    loaded = load_batches(save_batches(tmp_path / "b.pt", batches))
    for a, b in zip(batches, loaded):
        for k in ("xc", "yc", "xt", "yt"):
            assert torch.equal(getattr(a, k), getattr(b, k))
        assert torch.equal(a.meta["gt_loglik"], b.meta["gt_loglik"])
    torch.save({"something": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an approxeq task file"):
        load_batches(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="data"):
        load_batches(tmp_path / "missing.pt")


def test_unknown_task_and_label_are_rejected(tmp_path):
    bad = tiny_config()
    bad["task"]["name"] = "no-such-task"
    with pytest.raises(ConfigError, match="no-such-task"):
        run_experiment(experiment_from_dict(bad), tmp_path, progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="only"):
        run_experiment(experiment_from_dict(tiny_config()), tmp_path, progress=False,
                       log=lambda m: None, only=["Nope"])


def test_results_markdown_lists_every_entry():
    metrics = {"A": {"loglik": 1.0, "loglik_se": 0.1, "id": {"loglik": 1.0, "loglik_se": 0.1}},
               "oracle": {"loglik": 2.0, "loglik_se": 0.2, "id": {"loglik": 2.0, "loglik_se": 0.2}}}
    md = results_markdown(metrics, title="t")
    assert "| A " in md and "1.000 ± 0.100" in md and "2.000 ± 0.200" in md


@pytest.mark.parametrize("name", ["gp1d", "gp1d-ablation"])
@pytest.mark.parametrize("size", ["quick", "paper"])
def test_bundled_experiments_build(name, size):
    from approxeq.experiments import CONFIGS_DIR
    from approxeq.np import build_model

    path = CONFIGS_DIR / f"{name}.yaml"
    config = load_experiment(path, size)
    assert config.task.name == "gibbs"
    for m in config.models[:3] + config.models[-2:]:
        model = build_model(m.name, 1, 1, **m.options)
        assert model.symmetry is not None or m.name == "tnp"


def test_gp1d_compares_the_aenp_models_and_ablation_covers_b_and_p():
    from approxeq.experiments import CONFIGS_DIR as root

    models = load_experiment(root / "gp1d.yaml", "paper").models
    kinds = {(m.name, bool(m.options.get("approximate"))) for m in models}
    assert kinds == {("tnp", False), ("te-tnp", False), ("te-tnp", True), ("convcnp", False),
                     ("convcnp", True), ("relaxed-convcnp", False)}
    ablation = load_experiment(root / "gp1d-ablation.yaml", "quick").models
    grid = {(m.name, m.options.get("num_fixed_inputs", 0), m.options.get("fixed_input_dropout"))
            for m in ablation}
    for name in ("te-tnp", "convcnp"):
        assert (name, 0, None) in grid
        assert {(name, b, p) for b in (1, 2, 4, 8, 16) for p in (0.0, 0.5)} <= grid
