"""The terrain experiment runner: a tiny end-to-end run, fixed inputs that vanish out of region,
and the aggregation over training seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("xarray")

from tiny_terrain import tiny_terrain  # noqa: E402

from approxeq.approximate import FixedInput, equivariant_component
from approxeq.experiments import experiment_for, load_named_experiment
from approxeq.experiments.np_runner import model_options
from approxeq.experiments.schema import experiment_from_dict
from approxeq.experiments.seeds import aggregate_seeds, seed_of, with_seed
from approxeq.experiments.studies.terrain import make_generator, task_options
from approxeq.train.checkpoint import ModelSpec
from approxeq.train.config import ConfigError

TINY = tiny_terrain("terrain-tiny")


def test_tiny_run_writes_id_ood_oracle_and_blind(tmp_path):
    from approxeq.cli import main

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "sizes": {"quick": {}}}))
    out = tmp_path / "run"
    assert main(["experiment", str(path), "--quick", "--out", str(out), "--quiet",
                 "--seeds", "1", "--no-figures"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"ConvCNP~", "TE-PT-TNP+elev", "oracle", "terrain-blind"}
    for entry in metrics.values():
        for setting in ("id", "ood"):
            block = entry[setting]
            assert math.isfinite(block["loglik"]) and block["loglik_se"] >= 0
            assert block["rmse_K"] == pytest.approx(block["rmse"] * 4.0)
    for label in ("ConvCNP~", "TE-PT-TNP+elev"):
        assert "component" in metrics[label]["id"] and "delta_equiv" in metrics[label]["ood"]
        assert -1.0 <= metrics[label]["correction_lapse_corr"] <= 1.0
    # out of region the fixed inputs vanish: the approximate model is its component there
    assert metrics["ConvCNP~"]["ood"]["delta_equiv"] == 0.0
    assert metrics["ConvCNP~"]["ood"]["loglik"] == metrics["ConvCNP~"]["ood"]["component"][
        "loglik"]
    # the oracle knows the terrain term, the blind reference does not
    assert metrics["oracle"]["id"]["loglik"] > metrics["terrain-blind"]["id"]["loglik"]


def test_maps_of_a_tiny_run(tmp_path):
    pytest.importorskip("matplotlib")
    from approxeq.plot.terrain import terrain_figures

    config = experiment_from_dict({**TINY, "models": TINY["models"][:1],
                                   "train": {**TINY["train"], "steps": 1}}, size="tiny")
    result = experiment_for(config).run(config, tmp_path, progress=False, log=lambda m: None,
                                        figures=terrain_figures)
    assert [p.name for p in result.figures] == ["terrain-maps-ConvCNP_.png"]
    assert result.figures[0].is_file()


def _conus_inputs(o):
    gen = make_generator(o, o["ood_region"], oracle=False)
    topo = gen.topography
    lat, lon = np.meshgrid(topo.lat, topo.lon, indexing="ij")
    x = gen.normaliser.normalise_x(lat.reshape(-1), lon.reshape(-1))
    return torch.as_tensor(x, dtype=torch.float32)[None], gen


def test_fixed_inputs_are_zero_everywhere_in_the_far_region():
    config = load_named_experiment("terrain", size="quick")
    o = task_options(config)
    domain = make_generator(o, o["region"], oracle=False).domain
    x, gen = _conus_inputs(o)
    checked = 0
    for mc in config.models:
        options = model_options(mc, domain)
        if not (options.get("approximate") or mc.name == "relaxed-convcnp"):
            continue
        torch.manual_seed(0)
        model = ModelSpec(mc.name, 2, 1, options).build().eval()
        fixed = [m for m in model.modules() if isinstance(m, FixedInput)]
        assert fixed, mc.label
        for f in fixed:
            assert torch.equal(f(x), torch.zeros(*x.shape[:2], f.num_channels)), mc.label
        # and so the model is its equivariant component on a CONUS task
        b = gen.sample(2, torch.Generator().manual_seed(1))
        if mc.name == "e-tnp":  # 2 s a step: a smaller task says the same
            b = type(b)(xc=b.xc[:, :8], yc=b.yc[:, :8], xt=b.xt[:, :8], yt=b.yt[:, :8],
                        aux_c=b.aux_c[:, :8], aux_t=b.aux_t[:, :8])
        kwargs = b.model_inputs() if int(options.get("dim_aux", 0) or 0) else {}
        with torch.no_grad():
            torch.manual_seed(0)
            full = model(b.xc, b.yc, b.xt, **kwargs)
            with equivariant_component(model):
                torch.manual_seed(0)
                comp = model(b.xc, b.yc, b.xt, **kwargs)
        if not kwargs:  # auxiliary inputs are real data out of region too
            assert torch.equal(full.mean, comp.mean) and torch.equal(full.stddev, comp.stddev)
        checked += 1
    assert checked >= 5


def test_seed_aggregation():
    runs = [{"M": {"loglik": 1.0, "loglik_se": 0.1, "name": "m",
                   "id": {"loglik": 1.0, "loglik_se": 0.1, "rmse": 2.0,
                          "component": {"loglik": 0.5}}}},
            {"M": {"loglik": 2.0, "loglik_se": 0.3, "name": "m",
                   "id": {"loglik": 2.0, "loglik_se": 0.3, "rmse": 4.0,
                          "component": {"loglik": 1.5}}}},
            {"M": {"loglik": 6.0, "loglik_se": 0.2, "name": "m",
                   "id": {"loglik": 6.0, "loglik_se": 0.2, "rmse": 6.0,
                          "component": {"loglik": 0.5}}}}]
    out = aggregate_seeds(runs, [0, 11, 22])["M"]
    assert out["seeds"] == [0, 11, 22] and out["name"] == "m"
    assert out["loglik"] == pytest.approx(3.0)
    assert out["loglik_seeds"] == [1.0, 2.0, 6.0]
    # s.e. of the mean over seeds: sqrt(var / n), var with n - 1
    assert out["loglik_seeds_se"] == pytest.approx(math.sqrt(7.0 / 3.0))
    assert out["loglik_se"] == pytest.approx(0.2)  # mean per-task s.e.
    assert out["id"]["rmse_seeds_mean"] == pytest.approx(4.0)
    assert out["id"]["rmse_seeds_se"] == pytest.approx(math.sqrt(4.0 / 3.0))
    assert out["id"]["component"]["loglik"] == pytest.approx(2.5 / 3.0)
    with pytest.raises(ValueError, match="runs, seeds"):
        aggregate_seeds(runs, [0])


def test_seeds_are_derived_from_the_experiment_seed():
    config = experiment_from_dict(TINY, size="tiny")
    assert seed_of(config.train.seed, 0) == config.train.seed
    seeds = [seed_of(config.train.seed, i) for i in range(3)]
    assert len(set(seeds)) == 3
    s = with_seed(config, seeds[2])
    assert s.train.seed == seeds[2] and all(m.train.seed == seeds[2] for m in s.models)


def test_bad_options_name_the_key():
    bad = {**TINY, "task": {**TINY["task"], "options": {"patch_size": 3}}}
    with pytest.raises(ConfigError, match="patch_size"):
        task_options(experiment_from_dict(bad, size="tiny"))
    bad = {**TINY, "models": [{"label": "x", "name": "convcnp", "options": {"dim_aux": 1}}]}
    config = experiment_from_dict(bad, size="tiny")
    with pytest.raises(ConfigError, match="dim_aux"):
        experiment_for(config).train_tasks_only(config)


def test_run_seeds_trains_each_seed_into_its_own_directory(tmp_path):
    from approxeq.experiments.base import Experiment, ExperimentResult
    from approxeq.experiments.seeds import run_seeds

    class Fake(Experiment):
        name = "fake"

        def run(self, config, out_dir, **kwargs):
            out_dir.mkdir(parents=True)
            seed = config.models[0].train.seed
            assert config.train.seed == seed
            return ExperimentResult(out_dir=out_dir, metrics={
                "M": {"loglik": float(seed % 7), "loglik_se": 0.5}}, seconds=1.0)

    config = experiment_from_dict(TINY, size="tiny")
    result = run_seeds(Fake(), config, tmp_path, 3, progress=False)
    seeds = [seed_of(config.train.seed, i) for i in range(3)]
    assert sorted(p.name for p in tmp_path.glob("seed-*")) == ["seed-0", "seed-1", "seed-2"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == result.metrics and saved["M"]["seeds"] == seeds
    assert saved["M"]["loglik_seeds"] == [float(s % 7) for s in seeds]
    assert result.seconds == 3.0 and (tmp_path / "results.md").is_file()


@pytest.mark.parametrize("size", ["quick", "full", "paper"])
def test_shipped_terrain_models_build(size):
    config = load_named_experiment("terrain", size=size)
    o = task_options(config)
    domain = make_generator(o, o["region"], oracle=False, aux=False).domain
    kinds = set()
    for mc in config.models:
        model = ModelSpec(mc.name, 2, 1, model_options(mc, domain)).build()
        assert (model.symmetry is None) == (mc.name == "pt-tnp"), mc.label
        kinds.add((mc.name, bool(mc.options.get("approximate")),
                   int(mc.options.get("dim_aux", 0))))
    for name in ("te-pt-tnp", "convcnp", "equivcnp", "e-tnp"):
        assert {(name, False, 0), (name, True, 0)} <= kinds
    assert {("convcnp", True, 2), ("te-pt-tnp", True, 2), ("relaxed-convcnp", False, 0),
            ("pt-tnp", False, 0)} <= kinds


def test_the_correction_is_measured_without_training_dropout():
    from approxeq.experiments.studies.terrain import correction_lapse_correlation

    config = load_named_experiment("terrain", size="quick")
    o = task_options(config)
    gen = make_generator(o, o["region"], oracle=False)
    mc = next(m for m in config.models if m.label == "ConvCNP~+elev")
    torch.manual_seed(0)
    model = ModelSpec(mc.name, 2, 1, model_options(mc, gen.domain)).build()
    with torch.no_grad():  # clearly non-zero fixed inputs
        for f in (m for m in model.modules() if isinstance(m, FixedInput)):
            for p in f.parameters():
                p.add_(torch.randn_like(p))
    batches = [gen.sample(4, torch.Generator().manual_seed(k)) for k in range(2)]
    in_eval = correction_lapse_correlation(model.eval(), batches, gen)
    # in training mode fixed-input and elevation dropout would enter full minus component
    in_train = correction_lapse_correlation(model.train(), batches, gen)
    assert math.isfinite(in_eval) and in_train == in_eval
    assert model.training


def test_history_tracks_what_the_fixed_inputs_learn(tmp_path):
    config = experiment_from_dict({**TINY, "models": TINY["models"][:1],
                                   "train": {**TINY["train"], "steps": 2, "val_every": 1}},
                                  size="tiny")
    experiment_for(config).run(config, tmp_path, progress=False, log=lambda m: None,
                               figures=None)
    (path,) = tmp_path.rglob("history.json")
    val = json.loads(path.read_text())["val"]
    assert val["step"] == [1, 2]
    for key in ("component_loglik", "fixed_input_gain", "correction_lapse_corr",
                "correction_oracle_corr"):
        assert len(val[key]) == 2 and all(math.isfinite(v) for v in val[key]), key
    for full, comp, gain in zip(val["loglik"], val["component_loglik"],
                                val["fixed_input_gain"]):
        assert gain == pytest.approx(full - comp)


def test_the_oracle_correction_scores_a_perfect_correction_one_and_is_not_the_lapse_map():
    """A model whose full prediction is the exact oracle's and whose component is the
    terrain-blind GP's has the ideal correction: correlation 1 with the oracle's correction.
    β·h⁺ is not that ideal (the context reveals part of the terrain), so its correlation is
    lower."""
    from torch import nn
    from torch.distributions import Normal

    from approxeq.approximate import SymmetryBreaking
    from approxeq.experiments.studies.terrain.maps import correction_correlations

    config = load_named_experiment("terrain", size="quick")
    o = task_options(config)
    gen = make_generator(o, o["region"], oracle=False)

    class OracleNP(nn.Module):
        def __init__(self):
            super().__init__()
            self.switch = SymmetryBreaking()
            self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))

        def forward(self, xc, yc, xt, **aux):
            oracle = gen.blind_oracle if self.switch.zeroed else gen.exact_oracle
            mean = oracle.posterior(xc.double(), yc.double(), xt.double()).mean
            return Normal(mean + self.anchor, torch.ones_like(mean))

    batches = [gen.sample(4, torch.Generator().manual_seed(k)) for k in range(2)]
    corr = correction_correlations(OracleNP(), batches, gen)
    assert corr["correction_oracle_corr"] == pytest.approx(1.0)
    assert corr["correction_lapse_corr"] < 0.9
