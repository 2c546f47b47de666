"""Where evaluations write, and what they refuse to write over.

``approxeq eval RUN`` never touches the run's own ``metrics.json`` and ``results.md`` (the
training results): it writes into ``RUN/eval/<name>/``, where ``<name>`` says what was
evaluated (:func:`eval_name`), or to the file the user names. No output path may replace a
special file (a device node, a pipe) or a directory, and a run directory given as ``--out``
must be a directory if it exists.
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from approxeq.train.checkpoint import load_checkpoint
from approxeq.train.rundir import BEST, CONFIG, EXPERIMENT, METRICS, RESULTS, read_json

EVAL_DIR = "eval"
#: the files of a run directory that belong to its training and that no evaluation replaces
TRAINING_RESULTS = (METRICS, RESULTS, EXPERIMENT, CONFIG)


def eval_name(checkpoint: str = BEST, data: str | Path | None = None,
              var: str | None = None) -> str:
    """The name of an evaluation's folder under ``RUN/eval/``: ``checkpoint-best`` (the
    experiment's own test sets), or the data file's stem (and variable), with
    ``-checkpoint-last`` when the last rather than the best checkpoint is evaluated."""
    which = Path(checkpoint).stem
    if data is None:
        return f"checkpoint-{which}"
    name = Path(data).stem + (f"-{var}" if var else "")
    return name if which == "best" else f"{name}-checkpoint-{which}"


def check_output_dir(path: str | Path, *, arg: str = "--out") -> Path:
    """``path`` as an output directory; a ``ValueError`` naming ``arg`` when it exists and is
    not a directory (so a file or a device node is never replaced)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{arg}: {path} exists and is not a directory ({_kind(path)}); give a "
                         "new or existing directory")
    _check_parents(path, arg)
    return path


def _check_parents(path: Path, arg: str) -> None:
    """The nearest existing parent of ``path`` must be a directory."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{arg}: {parent} is {_kind(parent)}, not a directory")
            return


def check_output_file(path: str | Path, *, arg: str = "--out",
                      protect: Path | None = None) -> Path:
    """``path`` as a file to write; a ``ValueError`` naming ``arg`` when it exists and is not
    a regular file (a directory, a device node such as ``/dev/null``, a pipe), when its
    parent is not a directory, or when it is one of the training results of run directory
    ``protect``."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{arg}: {path} is {_kind(path)}, not a regular file; name a file to "
                         "write (e.g. results/metrics.json)")
    _check_parents(path, arg)
    if protect is not None and path.parent.resolve() == Path(protect).resolve() \
            and path.name in TRAINING_RESULTS:
        raise ValueError(f"{arg}: {path} holds the run's training results; evaluations are "
                         f"written elsewhere (default {Path(protect) / EVAL_DIR}/<name>/)")
    return path


def markdown_path(metrics_path: Path) -> Path:
    """Where the markdown table goes beside a metrics file: ``results.md`` next to a
    ``metrics.json``, else the metrics file's name with ``.md`` (so ``--out scores.json``
    never writes over some unrelated ``results.md``)."""
    if metrics_path.name == METRICS:
        return metrics_path.with_name(RESULTS)
    return metrics_path.with_suffix(".md")


def _kind(path: Path) -> str:
    mode = path.lstat().st_mode if path.is_symlink() else path.stat().st_mode
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file"


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint ``path`` cannot be evaluated (missing, unreadable), or ``None``."""
    if not path.is_file():
        return f"no checkpoint {path}"
    try:
        load_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - any failure to read it is the user's to know
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"cannot read checkpoint {path} ({first})"
    return None


def checkpoint_entry(path: Path, *, skip_missing: bool, log: Callable[[str], None],
                     label: str) -> dict[str, Any] | None:
    """``None`` when the checkpoint can be evaluated; a ``{"failed": reason}`` entry when it
    cannot and ``skip_missing`` is set; otherwise a ``FileNotFoundError`` naming the file (so
    an evaluation never silently drops a model)."""
    problem = checkpoint_problem(path)
    if problem is None:
        return None
    if not skip_missing:
        raise FileNotFoundError(f"checkpoint of {label!r}: {problem}; nothing was written "
                                "(--skip-missing keeps the other models and marks this one "
                                "as failed)")
    log(f"[{label}] {problem}: marked as failed")
    return {"failed": problem}


def never_trained(run_dir: Path, labels: list[str], log: Callable[[str], None] | None = None
                  ) -> set[str]:
    """The labels of a run's ``config.yaml`` that the run never trained (``--only`` trained
    the others): no folder in ``run_dir`` and no entry in its ``metrics.json``. An evaluation
    leaves them out rather than call them failed; a model that has a folder or an entry and
    no checkpoint is still reported missing. ``log`` gets one line naming them."""
    reported = read_json(Path(run_dir) / METRICS)
    if not isinstance(reported, dict):
        reported = {}
    left = [x for x in labels if not (Path(run_dir) / x).is_dir() and x not in reported]
    if left and log is not None:
        log(f"left out, never trained in {run_dir} (a run with --only): {', '.join(left)}")
    return set(left)


def task_description(task: Any) -> str:
    """What a run was trained on, in words, from its :class:`TaskConfig`: ``"1-D GP tasks
    (task gibbs)"``, ``"a gridded data file (task era5-uk)"``."""
    from approxeq.data.gp import TASK_NAMES

    if task.name in TASK_NAMES:
        return f"{task.dim_x}-D GP tasks (task {task.name})"
    if task.name == "era5-uk":
        return f"a gridded data file (task {task.name})"
    if task.name == "terrain":
        return f"synthetic fields on real terrain (task {task.name})"
    if task.name == "smoke":
        return f"smoke simulations (task {task.name})"
    return f"task {task.name}"


def no_space_message(err: OSError, arg: str = "--out") -> str | None:
    """A one-line message for a full disk or quota, or ``None`` for other errors."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {err.filename}" if isinstance(err.filename, str) else ""
        return (f"{arg}: no space left on the device{where}; nothing was replaced (free space "
                f"or choose another {arg})")
    return None


__all__ = ["EVAL_DIR", "TRAINING_RESULTS", "check_output_dir", "check_output_file",
           "checkpoint_entry", "checkpoint_problem", "eval_name", "markdown_path", "never_trained",
           "no_space_message", "task_description"]
