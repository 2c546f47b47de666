"""What a run directory guarantees: it records what produced it, and only one run writes to it.

* **Fingerprint.** Each model's directory holds ``fingerprint.json``: the model's build spec, the
  training configuration, the task configuration and the library version that produced its
  checkpoints. A later run into the same directory compares its own fingerprint with the stored
  one and refuses, naming every changed field, rather than reuse checkpoints that a different
  configuration produced (:func:`check_fingerprint`); ``restart=True`` wipes the directory's
  checkpoints and trains afresh instead.
* **Lock.** :class:`RunLock` takes an exclusive ``flock`` on ``DIR/.lock``; a second run into the
  same directory is refused at once, naming the process that holds it, instead of racing it.

Both are plain files, so they survive a kill: the lock is released by the kernel when its process
dies, and the fingerprint is written atomically before the first checkpoint.

This module owns the layout of a run directory (the file names below), its JSON reading and
writing (through :mod:`approxeq.files`), the finished step of a model, the checks before a model
directory is reused (:func:`prepare_run_dirs`) and the evaluation cache (``eval.json``,
:func:`with_cached_entries`)::

    DIR/config.yaml  DIR/metrics.json  DIR/results.md  DIR/experiment.json  DIR/fingerprint.json
    DIR/<label>/{last.pt, best.pt, history.json, eval.json, fingerprint.json}
    DIR/seed-<k>/...  (a run of several seeds: one such directory per seed)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from approxeq.files import write_json_atomic
from approxeq.train.checkpoint import CheckpointError, load_checkpoint

#: the experiment configuration a run was made with (its YAML schema, resolved)
CONFIG = "config.yaml"
#: the run's results: one entry per model
METRICS = "metrics.json"
#: the results as a markdown table
RESULTS = "results.md"
#: what ran: the experiment, its size, the wall time
EXPERIMENT = "experiment.json"
#: per model: the latest checkpoint, the best one, the training curves
LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.json"
#: per model: its cached evaluation (test protocol, fingerprint, step and entry)
MODEL_EVAL = "eval.json"
FINGERPRINT = "fingerprint.json"
LOCK = ".lock"

# Checkpoint files a restart removes; other files in a model directory (figures) are outputs
# of the run and are rewritten anyway.
_RUN_FILES = (LAST, BEST, HISTORY, MODEL_EVAL, FINGERPRINT)


def run_paths(paths: Sequence[Path], out_dir: Path) -> list[str]:
    """``paths`` as a run's files record them: relative to ``out_dir`` where they lie inside
    it (so a moved run directory still names its figures), else as given."""
    return [str(p.relative_to(out_dir)) if p.is_relative_to(out_dir) else str(p) for p in paths]


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of ``path``, or ``None`` if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RunDirError(RuntimeError):
    """A run directory cannot be used as asked: it was produced by a different configuration,
    another run holds it, or it is not a directory."""


def make_fingerprint(*, spec: Mapping[str, Any] | None, train: Mapping[str, Any] | None,
                     task: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The fingerprint of one model's run: plain JSON values only (so that a stored fingerprint
    and a fresh one compare equal exactly when the configuration is the same)."""
    from approxeq import __version__

    fp = {"version": __version__, "model": spec, "train": train, "task": task}
    if extra:
        fp["extra"] = dict(extra)
    # a JSON round trip turns tuples into lists and keys into strings, as the stored copy has
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: obj}


def _show(value: Any, missing: object) -> str:
    return "(absent)" if value is missing else json.dumps(value, default=str)


#: fields that fingerprints gained after runs were already on disk: a stored fingerprint without
#: one was written before it was recorded, so its absence is no change (the field is added)
LATER_FIELDS = ("train.num_threads",)


def fingerprint_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One ``field: old -> new`` line per leaf that differs (``'version'`` included), except a
    :data:`LATER_FIELDS` entry that ``old`` lacks."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va is missing and key in LATER_FIELDS:
            continue
        if va != vb:
            lines.append(f"{key}: {_show(va, missing)} -> {_show(vb, missing)}")
    return lines


def read_fingerprint(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The stored fingerprint of ``run_dir``, or ``None`` if it has none (or it is unreadable,
    which is treated as a mismatch by :func:`check_fingerprint`)."""
    path = Path(run_dir) / FINGERPRINT
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"unreadable": str(path)}
    return value if isinstance(value, dict) else {"unreadable": str(path)}


def has_run_files(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds any checkpoint or result of an earlier run."""
    d = Path(run_dir)
    return any((d / name).exists() for name in _RUN_FILES if name != FINGERPRINT)


def clear_run(run_dir: str | os.PathLike, *, keep_fingerprint: bool = False) -> None:
    """Remove the checkpoints, curves and (unless ``keep_fingerprint``) the fingerprint of
    ``run_dir``, for a restart."""
    for name in _RUN_FILES:
        if keep_fingerprint and name == FINGERPRINT:
            continue
        with contextlib.suppress(FileNotFoundError):
            (Path(run_dir) / name).unlink()


def fingerprint_problem(run_dir: str | os.PathLike, fingerprint: Mapping[str, Any], *,
                        label: str | None = None) -> str | None:
    """Why ``run_dir`` cannot be reused with ``fingerprint`` (the message of the
    :class:`RunDirError` that :func:`check_fingerprint` would raise), or ``None`` if it can:
    it holds nothing yet, or what it holds was produced by the same configuration. Reads only."""
    run_dir = Path(run_dir)
    stored = read_fingerprint(run_dir)
    if stored is None and not has_run_files(run_dir):
        return None
    if stored is not None and not fingerprint_changes(stored, fingerprint):
        return None
    if stored is None:
        why = "it holds checkpoints but no fingerprint.json (written by an older approxeq)"
    elif set(stored) == {"unreadable"}:
        why = (f"its {FINGERPRINT} is damaged (not a JSON object), so what produced its "
               "checkpoints is unknown")
    else:
        changes = fingerprint_changes(stored, fingerprint)
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8
                                           else "")
        why = f"what it holds was produced by another configuration ({shown})"
    return (f"{label or run_dir.name}: {run_dir} cannot be reused: {why}. Rerun with --restart "
            "to train it again from scratch, or choose another --out")


def check_fingerprint(run_dir: str | os.PathLike, fingerprint: Mapping[str, Any], *,
                      restart: bool = False, label: str | None = None) -> str:
    """Make ``run_dir`` safe to train into with ``fingerprint``; return what was done.

    Returns ``"new"`` (nothing there: the fingerprint is written), ``"same"`` (the stored
    fingerprint matches: its checkpoints may be reused or resumed) or ``"restarted"`` (it did
    not match, or there were checkpoints without a fingerprint, and ``restart`` cleared them).

    Raises:
        RunDirError: when the directory was produced by another configuration and ``restart``
            is false; the message names every changed field and the way out.
    """
    run_dir = Path(run_dir)
    stored = read_fingerprint(run_dir)
    if stored is None and not has_run_files(run_dir):
        write_json_atomic(run_dir / FINGERPRINT, dict(fingerprint))
        return "new"
    problem = fingerprint_problem(run_dir, fingerprint, label=label)
    if problem is None:
        if stored is not None and _flatten(dict(stored)) != _flatten(dict(fingerprint)):
            write_json_atomic(run_dir / FINGERPRINT, dict(fingerprint))  # adds LATER_FIELDS
        return "same"
    if restart:
        clear_run(run_dir)
        write_json_atomic(run_dir / FINGERPRINT, dict(fingerprint))
        return "restarted"
    raise RunDirError(problem)


def fault_point(name: str) -> None:
    """A test hook for the fault-injection tests: with ``APPROXEQ_FAULT_AT=NAME:N`` in the
    environment, the process kills itself (``SIGKILL``, as a crash or an out-of-memory kill
    would) the ``N``-th time it reaches the point ``name`` (default ``N`` = 1). Without the
    variable it does nothing. Points: ``history`` (after ``history.json``, before ``last.pt``),
    ``checkpoint`` (after ``last.pt``), ``best`` (after ``best.pt``), ``trained`` (a model
    trained, not yet evaluated), ``evaluated`` (evaluated, not yet cached in ``eval.json``),
    ``cached`` (after ``eval.json``), ``report`` (before the results are written)."""
    wanted = os.environ.get("APPROXEQ_FAULT_AT")
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(count or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_fault_counts: dict[str, int] = {}


class RunLock:
    """An exclusive lock on a run directory, held for the life of one run.

    Example::

        with RunLock(out_dir):
            ...  # train and write into out_dir

    Raises:
        RunDirError: on entry, if another process holds the lock (naming its pid), or if
            ``run_dir`` exists and is not a directory.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"out: {self.run_dir} exists and is not a directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks, run unguarded
            self._fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(
                    f"out: another approxeq run (pid {holder}) is writing to {self.run_dir}; "
                    "wait for it to finish or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            # the file stays: removing it would let a third process lock a different inode
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def locked_run(run_dir: str | os.PathLike) -> Iterator[Path]:
    """``with locked_run(dir) as d:``, the functional form of :class:`RunLock`."""
    with RunLock(run_dir) as lock:
        yield lock.run_dir


def finished_step(run_dir: Path) -> int:
    """The step of ``run_dir/last.pt`` (0 when there is none).

    Raises:
        CheckpointError: ``last.pt`` is unreadable (naming it).
    """
    last = Path(run_dir) / LAST
    return load_checkpoint(last).step if last.is_file() else 0


def checkpoint_problem(run_dir: Path, label: str) -> str | None:
    """Why a checkpoint of ``run_dir`` cannot be read, naming the model and the file, or
    ``None`` when every one there is readable."""
    for name in (LAST, BEST):
        path = Path(run_dir) / name
        if path.is_file():
            try:
                load_checkpoint(path)
            except CheckpointError as err:
                how = "" if "--restart" in str(err) else (
                    "; delete it or rerun with --restart to train the model again")
                return f"model {label!r}: {err}{how}"
    return None


def prepare_run_dirs(dirs: Sequence[tuple[Path, Mapping[str, Any] | None, str]], *,
                     restart: bool = False, log: Callable[[str], None] | None = None) -> None:
    """Make each ``(run_dir, fingerprint, label)`` safe to train into: nothing there, or
    checkpoints produced by the same configuration (``fingerprint``; ``None``: not compared)
    that are all readable. Nothing is changed unless every directory passes, or ``restart``
    clears those that do not (they train again from scratch).

    Raises:
        RunDirError: a changed configuration, naming the directories and what changed.
        CheckpointError: an unreadable checkpoint, naming the model and the file.
    """
    problems: list[tuple[type[Exception], str, int]] = []
    for k, (run_dir, fp, label) in enumerate(dirs):
        problem = None if fp is None else fingerprint_problem(run_dir, fp, label=label)
        if problem is not None:
            problems.append((RunDirError, problem, k))
        elif (problem := checkpoint_problem(run_dir, label)) is not None:
            problems.append((CheckpointError, problem, k))
    if problems and not restart:
        kind = problems[0][0]
        raise kind(" | ".join(msg for _, msg, _ in problems))
    redo = {k for _, _, k in problems}
    for k, (run_dir, fp, label) in enumerate(dirs):
        if k in redo:
            (log or _stderr_log)(f"[{label}] --restart: removing its earlier checkpoints")
            clear_run(run_dir, keep_fingerprint=fp is None)
        if fp is not None and (k in redo or not (run_dir / FINGERPRINT).is_file()):
            write_json_atomic(run_dir / FINGERPRINT, dict(fp))


def cached_evaluation(run_dir: Path, signature: Any, step: int,
                      fingerprint: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``metrics.json`` entry cached in ``run_dir/eval.json`` when it was made with the
    same test protocol (``signature``), at ``step`` and from the same ``fingerprint``; else
    ``None``."""
    cached = read_json(Path(run_dir) / MODEL_EVAL)
    if (isinstance(cached, dict) and cached.get("signature") == signature
            and cached.get("step") == step and cached.get("fingerprint") == fingerprint):
        return cached["entry"]
    return None


def cache_evaluation(run_dir: Path, signature: Any, step: int,
                     fingerprint: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> None:
    """Record ``entry`` in ``run_dir/eval.json`` (see :func:`cached_evaluation`)."""
    write_json_atomic(Path(run_dir) / MODEL_EVAL, {
        "signature": signature, "fingerprint": fingerprint, "step": step, "entry": entry})


def with_cached_entries(labels: Sequence[str], out_dir: Path, entries: dict[str, Any],
                        signature: Any, *, fingerprints: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
    """``entries`` completed, in the order of ``labels`` (every model of the experiment), with
    the still-valid cached evaluations of the models not run this time (``only``): same test
    protocol (``signature``) and, when ``fingerprints`` (by label) is given, produced by the
    same configuration."""
    merged = dict(entries)
    for label in labels:
        cached = read_json(Path(out_dir) / label / MODEL_EVAL)
        if label not in merged and isinstance(cached, dict) and \
                cached.get("signature") == signature and (
                    fingerprints is None
                    or cached.get("fingerprint") == fingerprints.get(label)):
            merged[label] = cached["entry"]
    return {label: merged[label] for label in labels if label in merged}


def seed_run_dirs(out_dir: str | Path) -> list[Path]:
    """The ``seed-<i>`` folders an earlier multi-seed run left in ``out_dir``, in order."""
    found = [p for p in Path(out_dir).glob("seed-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def layout_problem(out_dir: str | Path, n_seeds: int) -> str | None:
    """Why a run of ``n_seeds`` seeds cannot write into ``out_dir``, or ``None``: a single run
    (its ``config.yaml`` or ``fingerprint.json`` at the top) and a run of several seeds
    (``seed-*/``) never share a directory, as each would overwrite the other's
    ``metrics.json``. A run of more or fewer seeds than an earlier one is fine (its seeds
    are reused; ``metrics.json`` says over which)."""
    out_dir = Path(out_dir)
    found = seed_run_dirs(out_dir)
    single = [n for n in (CONFIG, FINGERPRINT) if (out_dir / n).is_file()]
    if n_seeds > 1 and single:
        return (f"out: {out_dir} holds a single-seed run ({single[0]}), not a run of several "
                f"seeds; rerun without --seeds (or with --seeds 1), or choose another --out")
    if n_seeds == 1 and found:
        shown = ", ".join(f"{p.name}/" for p in found[:3]) + (", ..." if len(found) > 3 else "")
        return (f"out: {out_dir} holds a run of several seeds ({shown}), not a single-seed "
                f"run; rerun with --seeds {max(2, len(found))}, or choose another --out")
    return None


__all__ = [
    "BEST", "CONFIG", "EXPERIMENT", "FINGERPRINT", "HISTORY", "LAST", "LOCK", "METRICS",
    "MODEL_EVAL", "RESULTS", "RunDirError", "cache_evaluation", "cached_evaluation",
    "checkpoint_problem", "finished_step", "layout_problem", "prepare_run_dirs", "read_json",
    "run_paths",
    "seed_run_dirs",
    "with_cached_entries", "RunLock", "check_fingerprint", "clear_run", "fault_point",
    "fingerprint_changes", "fingerprint_problem", "has_run_files", "locked_run", "make_fingerprint",
    "read_fingerprint",
]
