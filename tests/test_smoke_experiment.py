"""The smoke experiment: EquivCNP symmetry on smoke tasks, and a tiny run end to end."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("scipy")
pytest.importorskip("xarray")
yaml = pytest.importorskip("yaml")

from approxeq.approximate import equivariance_error, equivariant_component
from approxeq.data.smoke import SmokeSettings, SmokeTaskGenerator, generate_smoke
from approxeq.np import build_model
from approxeq.testing import assert_equivariant

TINY = {"grid": 16, "n_simulations": 6, "steps": 24, "first_snapshot": 4, "snapshot_every": 4,
        "obstacle_radius": 0.15, "seed": 3}


@pytest.fixture(scope="module")
def tiny_tasks():
    data = generate_smoke(SmokeSettings(**TINY), progress=False)
    gen = SmokeTaskGenerator(data, "train", context_fraction=(0.2, 0.4), max_targets=40,
                             dtype=torch.float64)
    return gen.sample(3, torch.Generator().manual_seed(0))


def _d4_elements(model):
    # all 8 rotations and reflections of D4 about the origin, the centre of the [-1, 1]² box
    return model.symmetry.with_shifts(torch.zeros(1, 2, dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1])
def test_equivcnp_is_d4_equivariant_on_smoke_tasks_inside_its_component(tiny_tasks, seed):
    torch.manual_seed(seed)
    model = build_model("equivcnp", 2, 1, group="D4", approximate=True, channels=2,
                        num_layers=2, kernel_size=3, points_per_unit=8,
                        num_fixed_inputs=2, fixed_input_hidden=32).double().eval()
    # make the fixed input clearly non-zero, so breaking the symmetry is measurable
    with torch.no_grad():
        for p in model.encoder.fixed_input.parameters():
            p.add_(torch.randn_like(p))
    b = tiny_tasks
    task = (b.xc, b.yc, b.xt)
    elements = _d4_elements(model)
    assert elements.shape[0] == 8
    with equivariant_component(model):
        assert_equivariant(model, model.symmetry, task, elements=elements)
    outside = equivariance_error(model, model.symmetry, *task, elements=elements)
    assert outside.max_error > 1e-4


def _tiny_config(tmp_path, outputs="density", name="convcnp", **options):
    conv = {"channels": 4, "num_layers": 1, "kernel_size": 3, "points_per_unit": 4, **options}
    label = "ConvCNP" if name == "convcnp" else "EquivCNP-D4"
    cfg = {
        "name": "smoke-tiny", "description": "tiny smoke run",
        "task": {"name": "smoke", "dim_x": 2, "dim_y": 1 if outputs == "density" else 2,
                 "options": {"settings": TINY, "context_fraction": [0.1, 0.3],
                             "max_targets": 16, "transfer_simulations": 2, "outputs": outputs,
                             "cache_dir": str(tmp_path / "cache")}},
        "models": [{"label": label, "name": name, "options": conv},
                   {"label": f"{label}~", "name": name,
                    "options": {**conv, "approximate": True, "num_fixed_inputs": 2}}],
        "train": {"batch_size": 2, "val_every": 0, "test_tasks": 4, "eval_batch_size": 2,
                  "device": "cpu"},
        "extra": {"equivariance_elements": 2, "equivariance_tasks": 2, "map_tasks": 1},
    }
    path = tmp_path / "smoke-tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_tiny_smoke_run_goes_end_to_end(tmp_path):
    from approxeq.cli import main

    out = tmp_path / "run"
    assert main(["experiment", str(_tiny_config(tmp_path)), "--out", str(out), "--steps", "2",
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["ConvCNP", "ConvCNP~"]
    for label, entry in metrics.items():
        for key in ("loglik", "loglik_se", "rmse", "id", "transfer"):
            assert key in entry, (label, key)
        assert entry["id"]["loglik"] == entry["loglik"]
        assert "equivariance" in entry["id"]
        assert set(entry["transfer"]) == {"moved", "rotated"}
        for block in entry["transfer"].values():
            assert torch.isfinite(torch.tensor(block["loglik"]))
    approx = metrics["ConvCNP~"]
    assert "component" in approx["id"] and "delta_equiv" in approx
    for kind, block in approx["transfer"].items():
        assert block["exact"] == "ConvCNP"
        assert block["gain_over_component"] == pytest.approx(
            block["loglik"] - block["component_loglik"])
        assert block["gain_over_exact"] == pytest.approx(
            block["loglik"] - metrics["ConvCNP"]["transfer"][kind]["loglik"])
    assert "gain_over_component" not in metrics["ConvCNP"]["transfer"]["moved"]
    assert (out / "results.md").is_file() and (out / "experiment.json").is_file()
    pytest.importorskip("matplotlib")
    assert (out / "smoke_predictions.png").is_file()
    assert (out / "smoke_corrections.png").is_file()
    # the data was cached where the task options said
    assert list((tmp_path / "cache" / "smoke").glob("*.nc"))


def test_shipped_config_resolves_at_both_sizes():
    from approxeq.experiments import load_named_experiment
    from approxeq.experiments.studies.smoke import exact_partner, task_options

    for size in ("quick", "full", "paper"):
        config = load_named_experiment("smoke", size=size)
        task_options(config)
        labels = [m.label for m in config.models]
        kinds = {(m.name, m.options.get("group"), bool(m.options.get("approximate")))
                 for m in config.models}
        for name in ("te-pt-tnp", "convcnp", "e-tnp", "lps-tnp"):
            assert {(name, None, False), (name, None, True)} <= kinds
        for group in ("D4", "C4"):
            assert {("equivcnp", group, False), ("equivcnp", group, True)} <= kinds
        assert {("pt-tnp", None, False), ("relaxed-convcnp", None, False)} <= kinds
        for mc in config.models:
            model = build_model(mc.name, 2, 1, **mc.options)
            assert (model.symmetry is None) == (mc.name == "pt-tnp"), mc.label
            if mc.options.get("approximate") or mc.name == "relaxed-convcnp":
                assert exact_partner(config, mc, labels) is not None, mc.label


def test_map_corrections_are_made_without_training_dropout():
    import numpy as np

    from approxeq.experiments.studies.smoke import map_panels, map_tasks

    data = generate_smoke(SmokeSettings(**TINY), progress=False)
    tasks = map_tasks(SmokeTaskGenerator(data, "test"), 2, 0.3, 0)
    torch.manual_seed(0)
    model = build_model("convcnp", 2, 1, approximate=True, channels=4, num_layers=1,
                        kernel_size=3, points_per_unit=8, num_fixed_inputs=2)
    with torch.no_grad():  # clearly non-zero fixed inputs
        for p in model.encoder.fixed_input.parameters():
            p.add_(torch.randn_like(p))
    in_eval = map_panels(model.eval(), tasks)["correction"]
    in_train = map_panels(model.train(), tasks)["correction"]
    assert np.nanmax(np.abs(in_eval).reshape(len(tasks), -1), axis=-1).min() > 1e-3  # every map
    np.testing.assert_array_equal(in_train, in_eval)


@pytest.mark.parametrize("seed", [0, 1])
def test_vector_equivcnp_turns_smoke_velocities_inside_its_component(seed):
    from approxeq.testing import assert_vector_equivariant, vector_equivariance_error

    data = generate_smoke(SmokeSettings(**TINY), progress=False)
    gen = SmokeTaskGenerator(data, "train", outputs="velocity", context_fraction=(0.2, 0.4),
                             max_targets=40, dtype=torch.float64)
    b = gen.sample(3, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = build_model("equivcnp", 2, 2, group="D4", y_rep="vector", approximate=True,
                        channels=2, num_layers=2, kernel_size=3, points_per_unit=8,
                        num_fixed_inputs=2, fixed_input_hidden=32).double().eval()
    with torch.no_grad():
        for p in model.encoder.fixed_input.parameters():
            p.add_(torch.randn_like(p))
    task, elements = (b.xc, b.yc, b.xt), _d4_elements(model)
    with equivariant_component(model):
        assert_vector_equivariant(model, task, elements=elements)
    assert vector_equivariance_error(model, task, elements=elements) > 1e-4


def test_tiny_smoke_velocity_run_reports_vector_equivariance_and_arrows(tmp_path):
    import numpy as np

    from approxeq.cli import main

    out = tmp_path / "run"
    config = _tiny_config(tmp_path, "velocity", "equivcnp", group="D4", y_rep="vector")
    assert main(["experiment", str(config), "--out", str(out), "--steps", "2", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    exact = metrics["EquivCNP-D4"]
    # the velocity turns with the scene: the exact model's orbit error is rounding only (with
    # its outputs treated as scalars it would be of the order of the prediction)
    eq = exact["id"]["equivariance"]
    assert eq["equiv_err_max"] < 1e-4 * max(eq["scale"], 1.0)
    assert set(exact["transfer"]) == {"moved", "rotated"}
    assert metrics["EquivCNP-D4~"]["transfer"]["rotated"]["exact"] == "EquivCNP-D4"
    results = (out / "results.md").read_text()
    assert "velocity component" in results
    assert results.startswith("# Smoke plumes around an obstacle: the velocity")
    panels = np.load(out / "EquivCNP-D4~" / "panels.npz")
    n = TINY["grid"]
    for key in ("truth_uv", "mean_uv", "component_uv", "correction_uv"):
        assert panels[key].shape == (1, n, n, 2), key
    np.testing.assert_array_equal(panels["mean"], panels["mean_uv"][..., 0])
    pytest.importorskip("matplotlib")
    assert (out / "smoke_vectors.png").is_file()


def test_shipped_velocity_config_resolves_at_both_sizes():
    from approxeq.experiments import load_named_experiment
    from approxeq.experiments.studies.smoke import exact_partner, task_options

    for size in ("quick", "paper"):
        config = load_named_experiment("smoke-velocity", size=size)
        assert task_options(config)["outputs"] == "velocity" and config.task.dim_y == 2
        labels = [m.label for m in config.models]
        assert {"PT-TNP", "ConvCNP", "ConvCNP~", "EquivCNP-D4", "EquivCNP-D4~"} <= set(labels)
        for mc in config.models:
            model = build_model(mc.name, 2, 2, **mc.options)
            assert (model.symmetry is None) == (mc.name == "pt-tnp"), mc.label
            if model.symmetry is not None:
                assert mc.options["y_rep"] == "vector", mc.label
            if mc.options.get("approximate"):
                assert exact_partner(config, mc, labels) is not None, mc.label
