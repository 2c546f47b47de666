"""Run-directory guarantees: fingerprints, the lock, and unreadable checkpoints."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch

from approxeq.np import build_model
from approxeq.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from approxeq.train.rundir import (
    FINGERPRINT,
    RunDirError,
    RunLock,
    check_fingerprint,
    clear_run,
    fault_point,
    fingerprint_changes,
    fingerprint_problem,
    make_fingerprint,
)


def _fp(width=8, steps=10, kernel="eq"):
    return make_fingerprint(spec={"name": "cnp", "options": {"width": width}},
                            train={"steps": steps, "lr": 1e-3}, task={"kernel": kernel})


def test_fingerprint_new_then_same(tmp_path):
    assert check_fingerprint(tmp_path, _fp()) == "new"
    assert (tmp_path / FINGERPRINT).is_file()
    assert check_fingerprint(tmp_path, _fp()) == "same"


def test_changed_config_is_refused_naming_each_change(tmp_path):
    check_fingerprint(tmp_path, _fp())
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(RunDirError) as info:
        check_fingerprint(tmp_path, _fp(width=16, kernel="matern"))
    msg = str(info.value)
    assert "model.options.width: 8 -> 16" in msg and 'task.kernel: "eq" -> "matern"' in msg
    assert "--restart" in msg
    assert (tmp_path / "last.pt").exists()  # nothing removed without --restart


def test_restart_clears_checkpoints(tmp_path):
    check_fingerprint(tmp_path, _fp())
    (tmp_path / "last.pt").write_bytes(b"x")
    assert check_fingerprint(tmp_path, _fp(steps=20), restart=True) == "restarted"
    assert not (tmp_path / "last.pt").exists()
    assert check_fingerprint(tmp_path, _fp(steps=20)) == "same"


def test_checkpoints_without_fingerprint_are_not_reused(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match="no fingerprint"):
        check_fingerprint(tmp_path, _fp())


def test_fingerprint_problem_only_reads(tmp_path):
    assert fingerprint_problem(tmp_path, _fp()) is None
    assert not (tmp_path / FINGERPRINT).exists()  # nothing written by asking
    check_fingerprint(tmp_path, _fp())
    (tmp_path / "best.pt").write_bytes(b"x")
    problem = fingerprint_problem(tmp_path, _fp(steps=11), label="CNP")
    assert problem.startswith("CNP: ") and "train.steps: 10 -> 11" in problem
    assert (tmp_path / "best.pt").exists()


def test_clear_run_can_keep_the_fingerprint(tmp_path):
    check_fingerprint(tmp_path, _fp())
    (tmp_path / "last.pt").write_bytes(b"x")
    clear_run(tmp_path, keep_fingerprint=True)
    assert not (tmp_path / "last.pt").exists() and (tmp_path / FINGERPRINT).is_file()


def test_fault_point_fires_only_at_its_named_count(monkeypatch):
    import signal

    killed = []
    monkeypatch.setattr("os.kill", lambda pid, sig: killed.append(sig))
    monkeypatch.delenv("APPROXEQ_FAULT_AT", raising=False)
    fault_point("report")
    monkeypatch.setenv("APPROXEQ_FAULT_AT", "cached:2")
    fault_point("report")
    fault_point("cached")
    assert killed == []
    fault_point("cached")
    assert killed == [signal.SIGKILL]


def test_fingerprint_changes_lists_added_and_removed_keys():
    lines = fingerprint_changes({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"d": 2}})
    assert lines == ["b.c: 2 -> (absent)", "b.d: (absent) -> 2"]


def _try_lock(path, queue):
    try:
        with RunLock(path):
            queue.put("locked")
    except RunDirError as err:
        queue.put(str(err))


def test_second_run_into_a_locked_directory_is_refused(tmp_path):
    with RunLock(tmp_path):
        queue = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(target=_try_lock, args=(tmp_path, queue))
        p.start()
        p.join(60)
        msg = queue.get(timeout=5)
    assert "another approxeq run" in msg and "is writing to" in msg
    with RunLock(tmp_path):  # released: usable again
        pass


def test_lock_refuses_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        RunLock(f).acquire()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_names_the_file(tmp_path, damage):
    path = tmp_path / "last.pt"
    save_checkpoint(path, build_model("cnp", 1, 1), step=3)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 50,
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"last\.pt is not a readable checkpoint"):
        load_checkpoint(path)


def test_non_checkpoint_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "x.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not an approxeq checkpoint"):
        load_checkpoint(path)


def test_a_fingerprint_from_before_thread_counts_is_reused_and_records_them(tmp_path):
    import json

    old = make_fingerprint(spec={"name": "cnp"}, train={"lr": 1e-3}, task=None)
    new = make_fingerprint(spec={"name": "cnp"}, train={"lr": 1e-3, "num_threads": 2}, task=None)
    check_fingerprint(tmp_path, old)
    (tmp_path / "last.pt").write_bytes(b"x")
    assert check_fingerprint(tmp_path, new) == "same"  # the old run resumes
    assert json.loads((tmp_path / FINGERPRINT).read_text())["train"]["num_threads"] == 2
    with pytest.raises(RunDirError, match="train.num_threads: 2 -> 1"):
        check_fingerprint(tmp_path, make_fingerprint(
            spec={"name": "cnp"}, train={"lr": 1e-3, "num_threads": 1}, task=None))
