"""Every run is fingerprinted: the graph, n-body and PATTERN runners record their settings, the
torch thread count and the version, and refuse a rerun with other settings; PATTERN's
pretrained backbone is pretrained again when what produced it changes."""

from __future__ import annotations

import json

import pytest
import torch

from approxeq.experiments.base import SettingsExperiment
from approxeq.experiments.schema import experiment_from_dict
from approxeq.train.rundir import RunDirError


class Settings(SettingsExperiment):
    name = "settings-test"
    outputs = ("weights.pt",)

    def run_settings(self, config, settings, out_dir, log):
        (out_dir / "weights.pt").write_text(json.dumps(settings["width"]))
        (out_dir / "metrics.json").write_text(json.dumps({"width": settings["width"]}))
        return {"width": settings["width"]}


def config(width: int = 8, **extra):
    return experiment_from_dict({
        "name": "settings", "task": {"name": "settings-test",
                                     "options": {"width": width, **extra}},
        "models": [{"label": "A", "name": "gin"}, {"label": "B", "name": "gin"}]})


def test_settings_runs_are_fingerprinted_and_refuse_other_settings(tmp_path):
    out = tmp_path / "run"
    Settings().run(config(), out, log=lambda m: None)
    fp = json.loads((out / "fingerprint.json").read_text())
    assert fp["task"]["width"] == 8 and fp["task"]["models"] == {"A": "gin/none", "B": "gin/none"}
    assert fp["train"]["num_threads"] == torch.get_num_threads()
    assert fp["extra"]["experiment"] == "settings-test" and "version" in fp
    Settings().run(config(), out, log=lambda m: None)  # the same settings run again
    with pytest.raises(RunDirError, match=r"task.width: 8 -> 16.*--restart"):
        Settings().run(config(16), out, log=lambda m: None)
    assert json.loads((out / "metrics.json").read_text()) == {"width": 8}
    with pytest.raises(RunDirError, match=r"task.models.A: \"gin/none\" -> \(absent\)"):
        # --only is another run too
        Settings().run(config(), out, only=["B"], log=lambda m: None)
    # a restart removes what the earlier run wrote before running again
    (out / "results.md").write_text("old")
    assert Settings().run(config(16), out, restart=True, log=lambda m: None).metrics == {
        "width": 16}
    assert not (out / "results.md").exists()
    assert json.loads((out / "fingerprint.json").read_text())["task"]["width"] == 16


def test_another_thread_count_is_another_settings_run(tmp_path):
    before = torch.get_num_threads()
    Settings().run(config(), tmp_path, log=lambda m: None)
    torch.set_num_threads(before + 1)
    try:
        with pytest.raises(RunDirError, match=rf"train.num_threads: {before} -> {before + 1}"):
            Settings().run(config(), tmp_path, log=lambda m: None)
    finally:
        torch.set_num_threads(before)


def test_pattern_pretrains_again_when_what_produced_its_backbone_changes(tmp_path):
    pytest.importorskip("sklearn")
    from approxeq.experiments.studies.pattern import digits_pretrained_vit
    from approxeq.nn.vit import ViTConfig, load_vit

    def vit(embed_dim: int) -> ViTConfig:
        return ViTConfig(patch_size=4, in_channels=5, embed_dim=embed_dim, depth=1,
                         num_heads=2, grid_size=2)

    lines: list[str] = []
    path = tmp_path / "pretrained-digits.pt"
    kwargs = dict(lr=1e-3, max_images=32, log=lines.append)
    digits_pretrained_vit(vit(8), path, epochs=1, **kwargs)
    stamp = path.stat().st_mtime_ns
    digits_pretrained_vit(vit(8), path, epochs=1, **kwargs)
    assert path.stat().st_mtime_ns == stamp  # the same settings: reused
    digits_pretrained_vit(vit(16), path, epochs=1, **kwargs)
    assert load_vit(path, in_channels=5, grid_size=2).config.embed_dim == 16
    assert "train.vit.embed_dim: 8 -> 16" in lines[-2] and "pretraining again" in lines[-2]
    digits_pretrained_vit(vit(16), path, epochs=2, **kwargs)
    assert "train.epochs: 1 -> 2" in lines[-2]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["train"]["epochs"] == 2 and 0 <= meta["heldout_accuracy"] <= 1
    # weights without their fingerprint (an older run, or killed before it was written)
    path.with_suffix(".json").unlink()
    digits_pretrained_vit(vit(16), path, epochs=2, **kwargs)
    assert "no pretrained-digits.json" in lines[-2]


def test_a_damaged_fingerprint_is_named_as_damaged_not_as_a_changed_configuration(tmp_path):
    from approxeq.train.rundir import check_fingerprint, make_fingerprint

    fp = make_fingerprint(spec={"name": "cnp"}, train={"lr": 1e-3}, task={"name": "eq"})
    check_fingerprint(tmp_path, fp)
    (tmp_path / "fingerprint.json").write_text('{"trunc')
    with pytest.raises(RunDirError, match=r"fingerprint.json is damaged .*--restart") as err:
        check_fingerprint(tmp_path, fp, label="CNP")
    assert "another configuration" not in str(err.value)
    assert check_fingerprint(tmp_path, fp, restart=True) == "restarted"


def test_the_python_entry_points_lock_and_fingerprint_their_runs_too(tmp_path):
    from approxeq.experiments.studies.nbody import run_nbody_experiment

    overrides = dict(n_train=10, n_val=5, n_test=5, epochs=1, batch_size=5, num_layers=1,
                     d_model=8, gnn_hidden=8, gnn_layers=1, k_train=1, k_eval=1, k_test=1,
                     eval_every_epochs=1, device="cpu", models=[["GNN-none", "gnn", "none"]],
                     simulation=dict(save_every=10, input_frame=3, target_frame=4))
    run_nbody_experiment(tmp_path, overrides=overrides, log=None)
    assert json.loads((tmp_path / "fingerprint.json").read_text())["task"]["d_model"] == 8
    with pytest.raises(RunDirError, match=r"task.d_model: 8 -> 16"):
        run_nbody_experiment(tmp_path, overrides={**overrides, "d_model": 16}, log=None)


def test_the_graph_entry_point_locks_and_fingerprints_its_runs(tmp_path):
    from approxeq.experiments.studies.graphs import run_graph_experiment

    overrides = dict(n_inits=1, k_eval=1, device="cpu", models=[["GIN", "gin", "none"]])
    run_graph_experiment("sr25", tmp_path, overrides=overrides, log=None)
    assert json.loads((tmp_path / "fingerprint.json").read_text())["task"]["n_inits"] == 1
    with pytest.raises(RunDirError, match=r"task.n_inits: 1 -> 2"):
        run_graph_experiment("sr25", tmp_path, overrides={**overrides, "n_inits": 2}, log=None)
