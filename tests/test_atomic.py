"""Atomic writes: files get the user's umask, and interrupted writes leave no litter behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from approxeq import files as files_module
from approxeq.files import (
    atomic_open,
    atomic_path,
    save_atomic,
    write_json_atomic,
    write_text_atomic,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and signals")
SRC = Path(files_module.__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _with_umask(mask: int, fn):
    old = os.umask(mask)
    try:
        return fn()
    finally:
        os.umask(old)


def _tmp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@posix_only
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_atomic_write_honours_the_umask(tmp_path, mask, expected):
    def write_all():
        write_json_atomic(tmp_path / "metrics.json", {"loglik": -1.0})
        write_text_atomic(tmp_path / "config.yaml", "steps: 1\n")
        save_atomic({"w": torch.zeros(2)}, tmp_path / "last.pt")
        with atomic_open(tmp_path / "raw.bin") as f:
            f.write(b"\0")

    _with_umask(mask, write_all)
    for name in ("metrics.json", "config.yaml", "last.pt", "raw.bin"):
        assert _mode(tmp_path / name) == expected, (name, oct(_mode(tmp_path / name)))


@posix_only
def test_the_writers_of_every_layer_honour_the_umask(tmp_path):
    # ViT weights, the smoke cache and a normaliser once had writers of their own that left
    # files 0600 (mkstemp's mode) or half-written; they all use approxeq.files now.
    from approxeq.data.normalise import Normaliser
    from approxeq.nn.vit import VisionTransformer, ViTConfig, save_vit

    def write_all():
        save_vit(VisionTransformer(ViTConfig(patch_size=4, embed_dim=8, depth=1, num_heads=2,
                                             grid_size=2)), tmp_path / "vit.pt")
        Normaliser(var="t2m", y_mean=280.0, y_std=5.0, centre=(54.0, -3.0),
                   scale=2.0).save(tmp_path / "norm.json")
        with atomic_path(tmp_path / "cache.nc") as tmp:
            tmp.write_bytes(b"netcdf")

    _with_umask(0o027, write_all)
    for name in ("vit.pt", "norm.json", "cache.nc"):
        assert _mode(tmp_path / name) == 0o640, name
    assert _tmp_files(tmp_path) == []


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".tmp" and tmp.name.endswith(".png.tmp")
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert _tmp_files(tmp_path) == []


@posix_only
def test_figures_honour_the_umask(tmp_path):
    pytest.importorskip("matplotlib")
    from approxeq.plot import plot_predictions_1d

    x = torch.linspace(-1, 1, 5)
    for mask, expected in [(0o022, 0o644), (0o027, 0o640)]:
        path = tmp_path / f"fig{mask:o}.png"
        _with_umask(mask, lambda p=path: plot_predictions_1d(x, x, x, (x, x.abs() + 0.1), path=p))
        assert _mode(path) == expected
    assert _tmp_files(tmp_path) == []


@posix_only
def test_a_killed_write_leaves_an_orphan_that_the_next_write_removes(tmp_path):
    # A separate process starts an atomic write and is SIGKILLed in the middle of it.
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(SRC)!r})
        from approxeq.files import atomic_open
        with atomic_open({str(tmp_path / "metrics.json")!r}, "w") as f:
            f.write("{{half")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    orphans = _tmp_files(tmp_path)
    assert len(orphans) == 1 and orphans[0].startswith(".metrics.json.")
    assert not (tmp_path / "metrics.json").exists()

    # the next write into that directory, of any file, removes the orphan
    write_json_atomic(tmp_path / "other.json", {"a": 1})
    assert _tmp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


@posix_only
def test_writes_in_progress_are_not_taken_for_orphans(tmp_path):
    host = files_module._HOST
    # a live process (another writer, still running) and one that has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        in_progress = tmp_path / f".a.json.{host}-{live.pid}-x1y2z3.tmp"
        orphan = tmp_path / f".b.json.{host}-{dead.pid}-q9w8e7.tmp"
        not_ours = tmp_path / ".notes.tmp"  # not named by atomic_open: never touched
        for p in (in_progress, orphan, not_ours):
            p.write_text("partial")
        with atomic_open(tmp_path / "c.json", "w") as f:
            # this write's own temporary file survives a write into the same directory
            write_text_atomic(tmp_path / "d.txt", "d")
            f.write("{}")
        assert in_progress.exists() and not_ours.exists()
        assert not orphan.exists()
        assert (tmp_path / "c.json").read_text() == "{}"
        assert sorted(_tmp_files(tmp_path)) == sorted([in_progress.name, not_ours.name])
    finally:
        live.kill()
        live.wait()


@posix_only
def test_temporary_files_of_another_host_are_removed_only_when_old(tmp_path):
    other = "0" * 8 if files_module._HOST != "0" * 8 else "1" * 8
    fresh = tmp_path / f".a.json.{other}-1-abc.tmp"
    stale = tmp_path / f".b.json.{other}-1-def.tmp"
    fresh.write_text("x")
    stale.write_text("x")
    old = stale.stat().st_mtime - 2 * files_module._FOREIGN_ORPHAN_AGE_S
    os.utime(stale, (old, old))
    write_text_atomic(tmp_path / "c.txt", "c")
    assert fresh.exists() and not stale.exists()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, "w") as f:
        f.write("{")
        raise RuntimeError("boom")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert _tmp_files(tmp_path) == []


def test_concurrent_writes_into_one_directory_keep_each_other(tmp_path, monkeypatch):
    # One thread's write in progress, spelled as a relative path, survives another write into
    # the same directory spelled as an absolute path.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    with atomic_open("run/a.json", "w") as f:
        write_text_atomic(tmp_path / "run" / "b.txt", "b")
        f.write("{}")
    assert (tmp_path / "run" / "a.json").read_text() == "{}"
    assert _tmp_files(tmp_path / "run") == []
