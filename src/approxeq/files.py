"""Files that are never left half-written: the one atomic writer every layer uses.

Every write goes to a temporary file in the target's own directory, is flushed and fsynced, and
only then renamed over the target with :func:`os.replace` (atomic on POSIX and Windows); the
folder is fsynced too, so the rename itself survives a power cut. The file gets the permissions
of any newly created file (``0o666`` less the umask). A crash or an exception during the write
leaves the previous file untouched and no partial file behind; temporary files that a killed
writer left are removed by the next write into the same folder.

* :func:`atomic_open`: a file object (``"wb"`` or ``"w"``);
* :func:`atomic_path`: a temporary path, for writers that want a file name (netCDF, figures);
* :func:`write_json_atomic`, :func:`write_text_atomic`, :func:`save_atomic` (``torch.save``).

This module sits below every layer: it imports nothing of approxeq.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

# Temporary files are named ``.<target>.<host>-<pid>-<random>.tmp``: the host and the process id
# tell an orphan (its writer was killed) from a write that is still in progress elsewhere.
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]+(\.[^.]+)?\.tmp$")
# A temporary file written from another machine (a shared file system) is only taken for an
# orphan once it is this old, since whether its writer still runs cannot be checked from here.
_FOREIGN_ORPHAN_AGE_S = 24 * 3600.0
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
# Names (not paths, which may be spelled differently) of this process's writes in progress:
# threads may write into one directory at once.
_active_tmp: set[str] = set()


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on every platform.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask. Reading it with :func:`os.umask` means setting it for a moment, so
    Linux's ``/proc`` is asked first."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap, side-effect-free check: leave it to the age rule
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _remove_orphaned_tmp(directory: Path) -> None:
    """Remove temporary files that interrupted atomic writes (a kill, a power cut) left in
    ``directory``; those of writes still in progress, here or in another process, are kept."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        if match is None or entry.name in _active_tmp:
            continue
        pid = int(match["pid"])
        try:
            if match["host"] == _HOST:
                orphan = pid == os.getpid() or not _pid_alive(pid)
            else:
                orphan = now - entry.stat(follow_symlinks=False).st_mtime > _FOREIGN_ORPHAN_AGE_S
            if orphan and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            pass  # another process removed or replaced it meanwhile


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path``; on a clean exit the file written there is fsynced
    and replaces ``path`` atomically.

    If the body raises, the temporary file is removed and ``path`` keeps its previous content.
    The temporary name keeps the target's suffix, so writers that choose a format by suffix
    (matplotlib's ``savefig``) write the right one. Temporary files that earlier, interrupted
    writes left in the same directory are removed first.

    Args:
        path: the final file; its directory is created if missing.

    Raises:
        FileNotFoundError: the body wrote nothing at the temporary path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_tmp(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix=f"{path.suffix}.tmp",
                                    prefix=f".{path.name}.{_HOST}-{os.getpid()}-")
    os.close(fd)
    tmp = Path(tmp_name)
    _active_tmp.add(tmp.name)
    try:
        yield tmp
        _fsync_file(tmp)
        # mkstemp creates the file 0600; results are meant to be read like any other file.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        _active_tmp.discard(tmp.name)
    _fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path`` atomically
    (see :func:`atomic_path`).

    Args:
        path: the final file; its directory is created if missing.
        mode: ``"wb"`` (binary) or ``"w"`` (text, UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp, \
            open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
        yield f


def _json_ready(obj: Any) -> Any:
    """Tensors, numpy values and paths to plain JSON values; non-finite floats to ``None``."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_ready(obj.detach().cpu().tolist())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()  # numpy scalar
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return _json_ready(obj.tolist())  # numpy array
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/inf
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically and return the path.

    Tensors, numpy arrays and scalars become lists and numbers; NaN and infinities become
    ``null`` so the file is strict JSON.
    """
    text = json.dumps(_json_ready(obj), indent=indent, allow_nan=False)
    with atomic_open(path, "w") as f:
        f.write(text + "\n")
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


__all__ = ["atomic_open", "atomic_path", "save_atomic", "write_json_atomic", "write_text_atomic"]
