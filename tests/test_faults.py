"""Fault injection: runs killed at any moment, damaged checkpoints, changed configurations and
concurrent runs. A killed run, rerun with the same command, ends bit-identical to one that was
never interrupted; nothing another configuration produced is reused; a second run into a
directory in use is refused.

The kills use the test hook ``APPROXEQ_FAULT_AT=POINT:N`` (see
:func:`approxeq.train.rundir.fault_point`): the process SIGKILLs itself the N-th time it reaches
a named point, so each kill lands where intended however loaded the machine is."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from approxeq import cli
from approxeq.experiments import run_experiment
from approxeq.experiments.schema import experiment_from_dict
from approxeq.train.checkpoint import CheckpointError, load_checkpoint
from approxeq.train.rundir import FINGERPRINT, RunDirError

CONV = {"channels": 4, "num_layers": 1, "kernel_size": 3, "points_per_unit": 8}


def tiny(steps: int = 20, cnp_width: int = 8, kernel: str = "gibbs", **models) -> dict:
    """Two tiny models on a tiny GP task, checkpointed and validated every 5 steps."""
    return {
        "name": "faults",
        "task": {"name": kernel, "options": {"num_context": [2, 8], "num_target": 12}},
        "models": [
            {"label": "CNP", "name": "cnp", "options": {"width": cnp_width}},
            {"label": "ConvCNP", "name": "convcnp", "options": dict(CONV)},
            *models.get("more", []),
        ],
        "train": {"steps": steps, "batch_size": 4, "val_every": 5, "val_tasks": 4,
                  "checkpoint_every": 5, "test_tasks": 8, "eval_batch_size": 4,
                  "device": "cpu", "num_threads": 1},
        "extra": {"equivariance_elements": 2, "equivariance_tasks": 2, "figures": False},
    }


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(config: Path, out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("APPROXEQ_FAULT_AT", None)
    if fault:
        env["APPROXEQ_FAULT_AT"] = fault
    return subprocess.run([sys.executable, "-m", "approxeq.cli", "train", str(config), "--out",
                           str(out), "--quiet", "--no-figures"], env=env, capture_output=True,
                          text=True, timeout=300)


def model_entries(out: Path) -> dict:
    """metrics.json without the wall-clock fields."""
    metrics = json.loads((out / "metrics.json").read_text())
    for entry in metrics.values():
        entry.pop("train_seconds", None)
    return metrics


def curves(run_dir: Path) -> dict:
    """history.json without the wall-clock times."""
    history = json.loads((run_dir / "history.json").read_text())
    history["val"].pop("seconds", None)
    return history


def assert_same_checkpoints(a: Path, b: Path, labels=("CNP", "ConvCNP"),
                            names=("best.pt", "last.pt")) -> None:
    for label in labels:
        for name in names:
            x, y = load_checkpoint(a / label / name), load_checkpoint(b / label / name)
            assert x.step == y.step and x.best_step == y.best_step, (label, name)
            assert x.model_state.keys() == y.model_state.keys()
            for key, value in x.model_state.items():
                assert torch.equal(value, y.model_state[key]), (label, name, key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the two models (CLI), its config and its wall time."""
    import time

    root = tmp_path_factory.mktemp("reference")
    config = write_yaml(root / "faults.yaml", tiny())
    start = time.monotonic()
    proc = run_cli(config, root / "ref")
    assert proc.returncode == 0, proc.stderr
    return config, root / "ref", time.monotonic() - start


def assert_same_run(out: Path, ref: Path) -> None:
    assert model_entries(out) == model_entries(ref)
    assert_same_checkpoints(out, ref)
    for label in ("CNP", "ConvCNP"):
        assert curves(out / label) == curves(ref / label)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_at_any_moment_resumes_bit_identically(reference, tmp_path):
    config, ref, _ = reference
    # Each rerun is killed at the next point: mid-training (after a new best.pt that last.pt
    # does not know yet; between history.json and last.pt; after a checkpoint), during
    # evaluation (done but not yet cached), between the models and before the report. Which
    # checkpoints are hit is drawn from a seed; every kill must land (4 checkpoints a model).
    rng = random.Random(20261129)
    kills = ["best:1", f"history:{rng.randint(1, 4)}", f"checkpoint:{rng.randint(1, 3)}",
             "evaluated:1", "cached:1", "report:1"]
    out = tmp_path / "killed"
    for fault in kills:
        proc = run_cli(config, out, fault)
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr)
    final = run_cli(config, out)
    assert final.returncode == 0, final.stderr
    assert_same_run(out, ref)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_by_timers_resumes_bit_identically(reference, tmp_path):
    """SIGKILL after seeded random delays, wherever they land (inside a write included)."""
    import time

    config, ref, seconds = reference
    rng = random.Random(7)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("APPROXEQ_FAULT_AT", None)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "approxeq.cli", "train", str(config),
                                 "--out", str(out), "--quiet", "--no-figures"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * seconds)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    final = run_cli(config, out)
    assert final.returncode == 0, final.stderr
    assert_same_run(out, ref)


def _run(data: dict, out: Path, **kwargs):
    return run_experiment(experiment_from_dict(data), out, progress=False, log=lambda m: None,
                          **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished four-step run of the two models."""
    out = tmp_path_factory.mktemp("finished")
    return out, _run(tiny(steps=4), out)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
    """The same two models trained for six steps from scratch."""
    out = tmp_path_factory.mktemp("six")
    _run(tiny(steps=6), out)
    return out


def _damage(path: Path, how: str) -> bytes:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 64,
                      "empty": b""}[how])
    return data


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_last_pt_is_refused_naming_the_model_and_file(finished, tmp_path, damage):
    out = _copy(finished[0], tmp_path / "run")
    last = out / "ConvCNP" / "last.pt"
    _damage(last, damage)
    damaged = last.read_bytes()
    with pytest.raises(CheckpointError) as info:
        _run(tiny(steps=6), out)  # resuming would read it
    msg = str(info.value)
    assert "'ConvCNP'" in msg and str(last) in msg and "--restart" in msg
    assert last.read_bytes() == damaged  # nothing touched without --restart


def test_restart_retrains_a_truncated_last_pt_and_resumes_the_rest(finished, six_steps,
                                                                   tmp_path):
    out = _copy(finished[0], tmp_path / "run")
    _damage(out / "ConvCNP" / "last.pt", "truncated")
    result = _run(tiny(steps=6), out, restart=True)
    assert result.metrics["ConvCNP"]["steps"] == 6
    # the damaged model was trained from scratch, the other one resumed: both end where a
    # six-step run does (best.pt of the resumed one may differ: it also saw step 4's validation)
    assert_same_checkpoints(out, six_steps, labels=("ConvCNP",))
    assert_same_checkpoints(out, six_steps, labels=("CNP",), names=("last.pt",))
    assert load_checkpoint(out / "CNP" / "last.pt").history["train"]["step"] == [4, 6]


def test_garbage_best_pt_of_a_finished_model_is_a_one_line_cli_error(finished, tmp_path,
                                                                     capsys):
    out = _copy(finished[0], tmp_path / "run")
    (out / "CNP" / "best.pt").write_bytes(b"not a checkpoint")
    config = write_yaml(tmp_path / "faults.yaml", tiny(steps=4))
    assert cli.main(["train", str(config), "--out", str(out), "--quiet", "--no-figures"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'CNP'" in err and "best.pt" in err and "--restart" in err
    assert cli.main(["train", str(config), "--out", str(out), "--quiet", "--no-figures",
                     "--restart"]) == 0
    assert load_checkpoint(out / "CNP" / "best.pt").step == 4


def test_changed_model_is_refused_naming_the_change_and_restart_retrains(finished, tmp_path):
    out = _copy(finished[0], tmp_path / "run")
    before = (out / "CNP" / "last.pt").read_bytes()
    with pytest.raises(RunDirError) as info:
        _run(tiny(steps=4, cnp_width=16), out)
    msg = str(info.value)
    assert "CNP" in msg and "model.options.width: 8 -> 16" in msg and "--restart" in msg
    assert "ConvCNP:" not in msg  # unchanged models are not blamed
    assert (out / "CNP" / "last.pt").read_bytes() == before
    result = _run(tiny(steps=4, cnp_width=16), out, restart=True)
    assert result.metrics["CNP"]["options"] == {"width": 16}
    assert json.loads((out / "CNP" / FINGERPRINT).read_text())["model"]["options"] == {
        "width": 16}
    # a restart retrains only what changed: the ConvCNP checkpoints are the earlier ones
    assert_same_checkpoints(out, finished[0], labels=("ConvCNP",))


def test_changed_training_and_task_are_refused(finished, tmp_path):
    out = _copy(finished[0], tmp_path / "run")
    data = tiny(steps=4)
    data["train"]["lr"] = 1e-2
    with pytest.raises(RunDirError, match=r"train\.lr: 0\.0005 -> 0\.01"):
        _run(data, out)
    # a new model on another task: the directory's other results were made for the old task
    more = [{"label": "CNP2", "name": "cnp", "options": {"width": 8}}]
    with pytest.raises(RunDirError, match=r'task\.name: "gibbs" -> "eq"'):
        _run(tiny(steps=4, kernel="eq", more=more), out, only=["CNP2"])
    assert not (out / "CNP2").exists()


def test_models_left_out_of_a_changed_config_are_not_reported(finished, tmp_path):
    out = _copy(finished[0], tmp_path / "run")
    result = _run(tiny(steps=4, cnp_width=16), out, only=["ConvCNP"])
    # CNP's evaluation was made with width 8, so it is left out rather than misreported
    assert set(result.metrics) == {"ConvCNP", "oracle"}


def test_a_second_run_into_a_directory_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    config = write_yaml(tmp_path / "faults.yaml", tiny(steps=2))
    codes: list[int] = []

    def second_run(_message: str) -> None:
        if not codes:  # the first run holds the directory: start another into it
            codes.append(cli.main(["train", str(config), "--out", str(out), "--quiet",
                                   "--no-figures"]))

    result = run_experiment(experiment_from_dict(tiny(steps=2)), out, progress=False,
                            log=second_run)
    assert codes == [1]
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "another approxeq run" in err and str(out) in err
    assert set(result.metrics) == {"CNP", "ConvCNP", "oracle"}
    assert cli.main(["train", str(config), "--out", str(out), "--quiet", "--no-figures"]) == 0


def test_graph_and_nbody_runners_hold_the_lock_too(tmp_path):
    from approxeq.experiments.base import SettingsExperiment
    from approxeq.train.rundir import RunLock

    class Settings(SettingsExperiment):
        name = "settings-test"

        def run_settings(self, config, settings, out_dir, log):
            return {"models": settings["models"]}

    config = experiment_from_dict(tiny(steps=2))
    with RunLock(tmp_path), pytest.raises(RunDirError, match="another approxeq run"):
        Settings().run(config, tmp_path, log=lambda m: None)
    assert Settings().run(config, tmp_path, log=lambda m: None).metrics["models"][0][0] == "CNP"
