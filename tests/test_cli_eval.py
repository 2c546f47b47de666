"""`approxeq eval` never overwrites training results nor drops a model silently, and every
mistake on the command line is one line naming the argument, with nothing overwritten."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import pytest
import torch

from approxeq.cli import main
from approxeq.np import available_models, model_options
from approxeq.np.options import option_meaning

TINY = """
name: tiny-eval
task: {name: gibbs, options: {num_context: [2, 8], num_target: 12}}
models:
  - {label: ConvCNP, name: convcnp,
     options: {channels: 4, num_layers: 1, kernel_size: 3, points_per_unit: 8}}
  - {label: ConvCNP-approx, name: convcnp,
     options: {channels: 4, num_layers: 1, kernel_size: 3, points_per_unit: 8,
               approximate: true, num_fixed_inputs: 2}}
train: {steps: 3, val_every: 2, val_tasks: 4, test_tasks: 8, eval_batch_size: 4, device: cpu}
extra: {equivariance_elements: 1, equivariance_tasks: 2}
sizes: {quick: {}, paper: {steps: 100000}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-eval")
    (root / "tiny.yaml").write_text(TINY)
    assert main(["train", str(root / "tiny.yaml"), "--out", str(root / "run"), "--quiet",
                 "--no-figures"]) == 0
    return root


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run, free to damage."""
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def _snapshot(run):
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_eval_writes_beside_the_training_results_with_full_metadata(run, capsys):
    before = {n: (run / n).read_bytes() for n in ("metrics.json", "results.md")}
    trained = json.loads(before["metrics.json"])
    assert main(["eval", str(run), "--checkpoint", "last.pt"]) == 0
    assert {n: (run / n).read_bytes() for n in before} == before
    out = run / "eval" / "checkpoint-last" / "metrics.json"
    entries = json.loads(out.read_text())
    assert (out.parent / "results.md").is_file()
    for label in ("ConvCNP", "ConvCNP-approx"):
        e = entries[label]
        for key in ("name", "options", "parameters", "symmetry", "approximate",
                    "train_seconds", "id", "ood", "loglik", "loglik_se"):
            assert key in e, key
        assert e["steps"] == 3 and e["checkpoint_step"] == 3 and e["checkpoint"] == "last.pt"
        assert e["parameters"] == trained[label]["parameters"]
        assert e["id"]["loglik"] == e["loglik"]  # the top-level figures are the ID block's
    assert entries["ConvCNP-approx"]["approximate"] is True
    assert main(["eval", str(run)]) == 0
    assert (run / "eval" / "checkpoint-best" / "metrics.json").is_file()
    assert {n: (run / n).read_bytes() for n in before} == before
    # --out naming the run's own results is refused
    assert main(["eval", str(run), "--out", str(run / "metrics.json")]) == 1
    assert "training results" in capsys.readouterr().err
    assert {n: (run / n).read_bytes() for n in before} == before


@pytest.mark.parametrize("damage", ["missing", "garbage", "empty"])
def test_eval_never_drops_a_model_silently(run, capsys, damage):
    ckpt = run / "ConvCNP" / "best.pt"
    if damage == "missing":
        ckpt.unlink()
    else:
        ckpt.write_bytes(b"" if damage == "empty" else b"\x00not a checkpoint" * 10)
    before = _snapshot(run)
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "--skip-missing" in err
    assert _snapshot(run) == before  # nothing written, nothing overwritten
    assert main(["eval", str(run), "--skip-missing"]) == 0
    entries = json.loads((run / "eval" / "checkpoint-best" / "metrics.json").read_text())
    assert str(ckpt) in entries["ConvCNP"]["failed"]
    assert "loglik" in entries["ConvCNP-approx"] and "failed" not in entries["ConvCNP-approx"]
    assert "failed (--skip-missing): ConvCNP" in capsys.readouterr().out


def test_eval_on_a_run_of_the_wrong_kind_says_what_is_needed(run, tmp_path, capsys):
    field = tmp_path / "era5.nc"
    field.write_bytes(b"CDF\x01")
    assert main(["eval", str(run), "--data", str(field), "--var", "t2m"]) == 1
    err = capsys.readouterr().err
    assert "trained on 1-D GP tasks (task gibbs), not on a gridded data file" in err
    assert "era5-uk-style run" in err and "normaliser" not in err
    assert main(["eval", str(run), "--data", str(field)]) == 1
    assert "--var NAME" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["nonsense", "mps", "cuda", "cuda:7"])
def test_an_unavailable_device_is_one_line(trained, tmp_path, capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has that device")
    out = tmp_path / "out"
    assert main(["train", str(trained / "tiny.yaml"), "--out", str(out), "--device", device,
                 "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device: " in err and repr(device) in err
    assert not out.exists()
    assert main(["eval", str(trained / "run"), "--device", device]) == 1
    assert "--device" in capsys.readouterr().err


def test_out_never_replaces_a_file_or_a_special_file(run, trained, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert main(["train", str(trained / "tiny.yaml"), "--out", str(taken), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("approxeq train: error: --out:")
    assert taken.read_text() == "mine"
    assert main(["demo", "--out", str(taken), "--steps", "1"]) == 1
    assert "--out" in capsys.readouterr().err and taken.read_text() == "mine"
    assert main(["train", str(trained / "tiny.yaml"), "--out", str(taken / "sub"), "--quiet"]) == 1
    assert "--out: " in capsys.readouterr().err and taken.read_text() == "mine"
    assert main(["eval", str(run), "--out", str(taken / "m.json")]) == 1
    assert "not a directory" in capsys.readouterr().err and taken.read_text() == "mine"
    for special in ("/dev/null", str(tmp_path)):
        if not os.path.exists(special):
            continue
        kind = os.stat(special).st_mode
        assert main(["eval", str(run), "--out", special]) == 1
        assert "--out:" in capsys.readouterr().err
        assert os.stat(special).st_mode == kind
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_full_disk_is_one_line_and_replaces_nothing(run, monkeypatch, capsys):
    import builtins

    from approxeq import files

    def full(file, *args, **kwargs):
        f = builtins.open(file, *args, **kwargs)

        def write(*_a, **_k):
            raise OSError(errno.ENOSPC, "No space left on device", "metrics.json")

        f.write = write
        return f

    (run / "eval" / "checkpoint-best").mkdir(parents=True)
    (run / "eval" / "checkpoint-best" / "metrics.json").write_text("{}")
    before = _snapshot(run)
    monkeypatch.setattr(files, "open", full, raising=False)  # every write of the writer
    assert main(["eval", str(run)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the models' log lines
    assert last.startswith("approxeq eval: error: --out: no space left") and "Traceback" not in last
    assert _snapshot(run) == before
    with pytest.raises(OSError):
        main(["--traceback", "eval", str(run)])


def test_a_task_file_without_tensors_is_one_line(run, tmp_path, capsys):
    text = tmp_path / "tasks.pt"
    text.write_text("xc,yc\n1,2\n")
    lists = tmp_path / "lists.pt"
    torch.save([{"xc": [[0.0]], "yc": [[1.0]], "xt": [[0.5]], "yt": [[1.0]]}], lists)
    for path in (text, lists):
        assert main(["eval", str(run), "--data", str(path)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"data: {path}" in err
    assert not (run / "eval").exists()


def test_bare_command_prints_help_and_models_explain_their_options(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: approxeq") and "models" in out and "eval" in out
    assert main(["models", "convcnp"]) == 0
    out = capsys.readouterr().out
    assert "symmetry: T(1" in out and "points_per_unit" in out and "grid density" in out
    assert main(["models", "convcpn"]) == 1
    assert "did you mean 'convcnp'" in capsys.readouterr().err
    # every option of every model has a one-line meaning
    missing = [(m, o) for m in available_models() for o in model_options(m)
               if not option_meaning(o)]
    assert missing == []
