"""A careless user's mistakes in experiment YAMLs, each refused in one line (exit status 1, no
traceback) before anything is simulated or trained: unknown keys named with the closest valid
key, zero and negative sizes, wrong kinds, missing extras, binary files."""

from __future__ import annotations

import copy
import sys

import pytest

yaml = pytest.importorskip("yaml")

from approxeq.cli import main  # noqa: E402
from approxeq.experiments.registry import CONFIGS_DIR  # noqa: E402


def shipped(name: str) -> dict:
    return yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text())


def one_line_error(argv: list[str], capsys) -> str:
    """The error line of a command that must fail with status 1 and print only that."""
    quiet = ["--quiet"] if argv[0] in ("train", "experiment") else []
    assert main([*argv, *quiet]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def write_variant(tmp_path, name: str, change) -> str:
    """The shipped YAML ``name`` with ``change(data)`` applied, as a file."""
    data = copy.deepcopy(shipped(name))
    change(data)
    path = tmp_path / f"{name}-variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def quick_task(data: dict) -> dict:
    return data["sizes"]["quick"]["task"]


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def assign(mapping_of, **values):
    return lambda data: mapping_of(data).update(values)


CASES = [
    # (experiment, change, what the line must say)
    ("pattern", lambda d: rename(quick_task(d), "epochs", "epoch"),
     "unknown key 'epoch' (did you mean 'epochs'?) in task.options"),
    ("pattern", lambda d: rename(quick_task(d)["vit"], "embed_dim", "embed_dims"),
     "unknown key 'embed_dims' (did you mean 'embed_dim'?) in task.options.vit"),
    ("pattern", lambda d: rename(quick_task(d)["generator"], "n_communities", "n_community"),
     "unknown key 'n_community' (did you mean 'n_communities'?) in task.options.generator"),
    ("pattern", lambda d: quick_task(d)["vit"].update(patch_size=0),
     "task.options.vit: patch_size: expected an int >= 1, got 0"),
    ("pattern", assign(quick_task, batch_size=0),
     "task.options.batch_size: expected an int >= 1, got 0"),
    ("pattern", lambda d: quick_task(d)["generator"].update(community_min=6, community_max=6),
     "community_max must exceed community_min = 6; got 6"),
    ("pattern", lambda d: quick_task(d).pop("epochs"), "missing setting(s) 'epochs'"),
    ("nbody", lambda d: rename(quick_task(d), "n_train", "n_trian"),
     "unknown key 'n_trian' (did you mean 'n_train'?) in task.options"),
    ("nbody", assign(quick_task, batch_size=0),
     "task.options.batch_size: expected an int >= 1, got 0"),
    ("nbody", assign(quick_task, lr="fast"), "task.options.lr: expected a number > 0, got 'fast'"),
    ("nbody", assign(quick_task, simulation={"save_evry": 10}),
     "unknown key 'save_evry' (did you mean 'save_every'?) in task.options.simulation"),
    ("graph8c", lambda d: rename(quick_task(d), "n_inits", "n_init"),
     "unknown key 'n_init' (did you mean 'n_inits'?) in task.options"),
    ("csl", assign(quick_task, mlp_hidden=[128, 0]),
     "task.options.mlp_hidden: expected a non-empty list of ints >= 1, got [128, 0]"),
    ("era5-uk", lambda d: rename(d["task"]["options"], "max_targets", "max_target"),
     "unknown key 'max_target' (did you mean 'max_targets'?) in task.options"),
    ("era5-uk", assign(lambda d: d["task"]["options"], var="t2n"),
     "task.options.var: 't2n' is not a variable of era5_t2m_uk_2019-03.nc (did you mean 't2m'?)"),
    ("era5-uk", assign(lambda d: d["task"]["options"], train_days=[21, 1]),
     "task.options.train_days: expected [first, last] days of the month with 1 <= first <= "
     "last <= 31, got [21, 1]"),
    ("terrain", lambda d: rename(d["task"]["options"]["field"], "lengthscale", "lengthscal"),
     "unknown key 'lengthscal' (did you mean 'lengthscale'?) in task.options.field"),
    ("pattern", assign(quick_task, device="gpu"),
     "task.options.device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'"),
    ("nbody", assign(quick_task, d_model=6), "task.options.d_model: expected a multiple of 4"),
    ("gp1d", lambda d: d["task"]["options"].update(num_contexts=[3, 10]),
     "unexpected keyword argument 'num_contexts' (did you mean 'num_context'?)"),
    ("smoke", lambda d: d["task"]["options"].update(settings={"gird": 16}),
     "unknown key 'gird' (did you mean 'grid'?) in task.options.settings"),
    ("smoke", lambda d: d["extra"].update(seeds=0),
     "extra.seeds: expected a positive int (training seeds per model), got 0"),
    ("smoke", lambda d: d["extra"].update(seeds="three"),
     "extra.seeds: expected a positive int (training seeds per model), got 'three'"),
    ("gp1d", lambda d: rename(d, "models", "model"),
     "unknown key 'model' (did you mean 'models'?) in the top level"),
    ("gp1d", lambda d: d["sizes"]["quick"].update(stpes=10),
     "unknown key 'stpes' (did you mean 'steps'?) in sizes.quick"),
]


@pytest.mark.parametrize("name, change, expected", CASES)
def test_yaml_mistakes_are_one_clear_line(name, change, expected, tmp_path, capsys):
    path = write_variant(tmp_path, name, change)
    err = one_line_error(["train", path, "--out", str(tmp_path / "run")], capsys)
    assert expected in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_unknown_model_and_option_name_the_closest():
    from approxeq.np import build_model

    with pytest.raises(ValueError, match=r"unknown option\(s\) 'chanels' \(did you mean "
                                         r"'channels'\?\)"):
        build_model("convcnp", 1, 1, chanels=4)
    with pytest.raises(ValueError, match=r"unknown model 'convnp' \(did you mean 'convcnp'\?\)"):
        build_model("convnp", 1, 1)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_misspelt_model_option_is_named_before_any_data_are_built(tmp_path, capsys, jobs):
    # gp1d builds its test sets (with the GP oracle) before the first model: minutes on 2
    # cores, after which the typo used to surface
    def change(d):
        next(m for m in d["models"] if m["name"] == "convcnp")["options"]["chanels"] = 4

    path = write_variant(tmp_path, "gp1d", change)
    err = one_line_error(["train", path, "--out", str(tmp_path / "run"), "--jobs", jobs], capsys)
    assert "models: cannot build" in err and "'chanels' (did you mean 'channels'?)" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_binary_yaml_is_named(tmp_path, capsys):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    err = one_line_error(["train", str(path), "--out", str(tmp_path / "run")], capsys)
    assert f"{path}: not a YAML text file" in err


def test_timm_missing_is_refused_before_any_model_trains(tmp_path, capsys, monkeypatch):
    # the first models need no timm; the run must stop before they train, not after
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    path = write_variant(tmp_path, "pattern", assign(quick_task, pretrained="timm:vit_tiny"))
    err = one_line_error(["train", path, "--out", str(tmp_path / "run")], capsys)
    assert "task.options.pretrained: 'timm:vit_tiny' needs timm" in err
    assert "pip install 'approxeq[vision]'" in err
    assert not (tmp_path / "run" / "experiment.json").exists()


@pytest.mark.parametrize("damage, why", [
    (lambda good: b"", "it is empty"),
    (lambda good: good[:len(good) // 3], "it is truncated or damaged"),
    (lambda good: good[:len(good) // 2] + bytes(256) + good[len(good) // 2 + 256:],
     "it is truncated or damaged"),
    (None, "it holds Python objects besides tensors"),
])
def test_load_vit_names_a_damaged_file_and_never_suggests_unsafe_loading(tmp_path, damage, why):
    import pathlib

    import torch

    from approxeq.nn.vit import VisionTransformer, ViTConfig, load_vit, save_vit

    good = save_vit(VisionTransformer(ViTConfig(patch_size=4, embed_dim=8, depth=1, num_heads=2,
                                                grid_size=2)), tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    if damage is None:
        torch.save({"weights": pathlib.PurePosixPath("elsewhere")}, bad)  # not plain data
    else:
        bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ValueError) as err:
        load_vit(bad)
    text = str(err.value)
    assert f"path: {bad} is not a readable ViT weights file: {why}" in text
    assert "weights_only" not in text and len(text.splitlines()) == 1


def test_eval_data_on_a_terrain_run_does_not_contradict_itself(tmp_path, capsys):
    run = tmp_path / "terrain-run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"name": "terrain", "task": {"name": "terrain", "dim_x": 2, "dim_y": 1},
         "models": [{"label": "ConvCNP", "name": "convcnp"}]}))
    field = tmp_path / "era5.nc"
    field.write_bytes(b"CDF\x01")
    err = one_line_error(["eval", str(run), "--data", str(field), "--var", "t2m"], capsys)
    assert "trained on synthetic fields on real terrain (task terrain), not on a gridded " \
           "data file" in err
    assert "approxeq eval RUN_DIR (without --data)" in err


def test_eval_of_a_run_without_checkpoints_says_so(tmp_path, capsys):
    # an n-body (or graph, PATTERN) run directory was written by approxeq train too
    run = tmp_path / "nbody-run"
    run.mkdir()
    (run / "experiment.json").write_text('{"experiment": "nbody", "size": "quick"}')
    err = one_line_error(["eval", str(run)], capsys)
    assert "is a nbody run, which keeps no checkpoints to evaluate again" in err
    assert "is it a directory written by" not in err


def test_an_empty_pretrained_file_is_named_before_any_model_trains(tmp_path, capsys):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"")
    path = write_variant(tmp_path, "pattern", assign(quick_task, pretrained=str(weights)))
    err = one_line_error(["train", path, "--out", str(tmp_path / "run")], capsys)
    assert f"path: {weights} is not a readable ViT weights file: it is empty" in err
    assert not (tmp_path / "run" / "experiment.json").exists()


def test_a_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "networkx", None)  # CSL graphs are built with networkx
    path = write_variant(tmp_path, "csl", lambda d: None)
    err = one_line_error(["train", path, "--out", str(tmp_path / "run")], capsys)
    assert "make_csl needs networkx: pip install 'approxeq[graphs]'" in err
