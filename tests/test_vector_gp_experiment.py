"""The vector-GP experiment: a tiny end-to-end run (id/ood/oracle blocks, figures, re-evaluation),
the oracle against an untrained model, in- and out-of-region tasks that differ by the pinned flow
only, equivariance measured with vectors turning, and the shipped YAML at every size."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from approxeq.approximate import equivariance_error
from approxeq.experiments import experiment_for, load_named_experiment
from approxeq.experiments.evaluation import evaluate_model, oracle_metrics
from approxeq.experiments.registry import CONFIGS_DIR
from approxeq.experiments.schema import experiment_from_dict
from approxeq.experiments.studies.vector_gp import (
    add_flow_blind,
    make_generator,
    task_options,
)
from approxeq.np import build_model
from approxeq.np.registry import check_model
from approxeq.train.config import ConfigError

SHIPPED = yaml.safe_load((CONFIGS_DIR / "vector-gp.yaml").read_text())
TINY_TASK = {"num_context": [2, 8], "num_target": 8}
TINY_MODELS = {
    "TNP": {"width": 8, "num_layers": 1, "num_heads": 2},
    "ConvCNP": {"channels": 4, "num_layers": 1, "points_per_unit": 2},
    "E-TNP": {"width": 8, "num_layers": 1, "num_heads": 2},
    "E-TNP~": {"width": 8, "num_layers": 1, "num_heads": 2, "num_fixed_inputs": 4},
    "EquivCNP": {"channels": 2, "num_layers": 1, "points_per_unit": 2},
    "EquivCNP~": {"channels": 2, "num_layers": 1, "points_per_unit": 2, "num_fixed_inputs": 4},
}


def tiny(flow="shipped", labels=tuple(TINY_MODELS)) -> dict:
    """The shipped experiment with tiny tasks, models and test sets (one size, ``tiny``)."""
    options = {**SHIPPED["task"]["options"], **TINY_TASK}
    if flow != "shipped":
        options["flow"] = flow
    models = [{**m, "options": {**m["options"], **TINY_MODELS[m["label"]]}}
              for m in SHIPPED["models"] if m["label"] in labels]
    return {**SHIPPED, "task": {**SHIPPED["task"], "options": options}, "models": models,
            "train": {**SHIPPED["train"], "steps": 2, "val_every": 0, "test_tasks": 16,
                      "eval_batch_size": 8, "num_threads": 1, "device": "cpu"},
            "extra": {**SHIPPED["extra"], "seeds": 1, "figure_grid": 5, "figure_context": 6},
            "sizes": {"tiny": {}}}


def test_tiny_run_writes_id_ood_and_oracle_blocks(tmp_path):
    pytest.importorskip("matplotlib")
    from approxeq.cli import main

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "run"
    assert main(["experiment", str(path), "--size", "tiny", "--out", str(out), "--quiet",
                 "--steps", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == [*TINY_MODELS, "oracle", "flow-blind"]
    for label, entry in metrics.items():
        for setting in ("id", "ood"):
            block = entry[setting]
            assert math.isfinite(block["loglik"]) and block["loglik_se"] > 0
            assert block["rmse"] > 0 and 0 <= block["coverage95"] <= 1
            if label not in ("oracle", "flow-blind"):  # two steps: far below the posterior
                assert block["loglik"] < metrics["oracle"][setting]["loglik"]
    # out of region the flow is zero: knowing it is worth nothing there
    assert metrics["flow-blind"]["ood"]["loglik"] == pytest.approx(
        metrics["oracle"]["ood"]["loglik"], abs=1e-9)
    for label in ("E-TNP~", "EquivCNP~"):
        ood = metrics[label]["ood"]
        assert "component" in metrics[label]["id"] and "component" in ood
        # out of region every fixed input is zero: the model is its component there
        assert ood["delta_equiv"] == 0.0 and ood["loglik"] == ood["component"]["loglik"]
        assert metrics[label]["id"]["delta_equiv"] > 0
        assert metrics[label]["ood_beyond_reach"]  # which is why the component is exact
    for label in ("E-TNP", "EquivCNP"):  # vectors turning: float32 rounding only
        eq = metrics[label]["id"]["equivariance"]
        assert eq["y_rep"] == "'vector'" and eq["equiv_err_max"] < 1e-3 * max(eq["scale"], 1)
    assert "equivariance" not in metrics["TNP"]["id"]
    assert {p.name for p in out.glob("*.png")} == {"vector-gp-task.png",
                                                  "vector-gp-correction.png"}
    assert "| oracle" in (out / "results.md").read_text()
    # approxeq eval: the run's own test sets rebuilt, the same scores, the oracle added
    assert main(["eval", str(out)]) == 0
    again = json.loads((out / "eval" / "checkpoint-best" / "metrics.json").read_text())
    assert set(again) == set(metrics)
    for label in TINY_MODELS:
        assert again[label]["ood"]["loglik"] == pytest.approx(metrics[label]["ood"]["loglik"],
                                                              abs=1e-6)


def _config(data: dict):
    return experiment_from_dict(data, size="tiny")


def test_the_oracle_beats_an_untrained_model():
    o = task_options(_config(tiny()))
    batches = make_generator(o, "id").fixed_set(32, 16, 0)
    model = build_model("e-tnp", 2, 2, y_rep="vector", **TINY_MODELS["E-TNP"])
    untrained = evaluate_model(model, batches, equivariance_elements=0)
    oracle = oracle_metrics(batches)
    assert oracle["loglik"] - 3 * oracle["loglik_se"] > untrained["loglik"] + 3 * untrained[
        "loglik_se"]
    assert oracle["rmse"] < untrained["rmse"]


def test_knowing_the_flow_is_worth_something_in_region():
    """The shipped task is one where the symmetry breaking matters: the exact posterior that
    knows the pinned flow beats the same posterior without it, paired on the same tasks."""
    o = task_options(load_named_experiment("vector-gp", size="quick"))
    batches = make_generator(o, "id").fixed_set(128, 1, 0)
    add_flow_blind(batches)
    gain = torch.cat([b.meta["gt_loglik"] - b.meta["blind_loglik"] for b in batches])
    assert gain.mean() > 0.1 and gain.mean() > 5 * gain.std() / math.sqrt(gain.numel())


def test_in_and_out_of_region_tasks_differ_by_the_pinned_flow_only():
    """The same seed draws the same GP and noise in both regions (the windows are moved, the
    kernel is stationary), so targets differ by the flow at the in-region inputs: the flow
    is there in region and zero out of it."""
    o = task_options(_config(tiny()))
    ids, ood = (make_generator(o, s).sample(4, torch.Generator().manual_seed(3))
                for s in ("id", "ood"))
    flow = make_generator(o, "id").flow
    torch.testing.assert_close(ood.xt, ids.xt + torch.tensor([16.0, 0.0]))
    torch.testing.assert_close(ids.yt - ood.yt, flow(ids.xt.double()).float(), atol=1e-5,
                               rtol=0)
    assert flow(ids.xt.double()).abs().max() > 0.1 and flow(ood.xt.double()).abs().max() < 1e-6


def test_without_the_flow_the_oracle_scores_agree_in_and_out_of_region():
    o = task_options(_config(tiny(flow=None)))
    # independent tasks, one per batch (a batch's tasks share their context count)
    scores = [oracle_metrics(make_generator(o, s).fixed_set(256, 1, seed))
              for s, seed in (("id", 0), ("ood", 1))]
    se = math.hypot(*(s["loglik_se"] for s in scores))
    assert abs(scores[0]["loglik"] - scores[1]["loglik"]) < 3 * se


def test_equivariance_is_measured_with_vectors_turning(float64):
    o = task_options(_config(tiny()))
    batch = make_generator(o, "id").fixed_set(4, 4, 0)[0].to(dtype=float64)
    model = build_model("e-tnp", 2, 2, y_rep="vector", **TINY_MODELS["E-TNP"])
    # the shared evaluation turns the vectors
    eq = evaluate_model(model, [batch], equivariance_elements=4, equivariance_tasks=4)
    assert eq["equivariance"]["equiv_err_max"] < 1e-9
    # the same model measured as if its outputs were two scalars is far from equivariant
    scalar = equivariance_error(model, model.symmetry, batch.xc, batch.yc, batch.xt,
                                n_elements=4, generator=torch.Generator().manual_seed(0))
    assert scalar.summary()["equiv_err_max"] > 1e-3
    approx = build_model("e-tnp", 2, 2, y_rep="vector", approximate=True,
                         fixed_input_domain=o["region"], **TINY_MODELS["E-TNP~"])
    eq = evaluate_model(approx, [batch], equivariance_elements=4,
                        equivariance_tasks=4)["equivariance"]
    assert eq["component_equiv_err_max"] < 1e-9 < 1e-3 < eq["equiv_err_max"]


@pytest.mark.parametrize("size", ["quick", "paper"])
def test_the_shipped_yaml_loads_at_every_size(size):
    config = load_named_experiment("vector-gp", size=size)
    o = task_options(config)
    assert o["flow"] is not None and o["kernel"] == "divergence-free"
    assert [m.label for m in config.models] == list(TINY_MODELS)
    for mc in config.models:
        check_model(mc.name, **mc.options)
        assert mc.options.get("y_rep") == "vector" or mc.name == "tnp"
    assert experiment_for(config).name == "vector-gp"
    if size == "quick":
        assert config.train.num_threads == 1
        assert {mc.train.steps for mc in config.models} == {config.train.steps}  # one budget


@pytest.mark.parametrize("change, message", [
    ({"ood_shift": [3.0, 0.0]}, "task.options.ood_shift: the out-of-region box"),
    ({"flow": {"centre": [0.0, 0.0], "radius": 0.5, "speed": 1.0}}, "task.options.flow:"),
    ({"region": [[2.0, -2.0], [-2.0, 2.0]]}, "task.options.region: expected lo < hi"),
    ({"kernel": "matern"}, "task.options.kernel: expected one of"),
    ({"ood_shifts": 8.0}, "ood_shifts"),
])
def test_bad_task_options_are_named_in_one_line(change, message):
    data = tiny()
    data["task"]["options"] = {**data["task"]["options"], **change}
    with pytest.raises(ConfigError, match=message) as err:
        task_options(_config(data))
    assert "\n" not in str(err.value)
