"""Saved task files: :func:`save_batches` writes fixed tasks that :func:`load_batches` (and
``approxeq eval RUN_DIR --data FILE``) reads back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from approxeq.files import save_atomic
from approxeq.np.batch import Batch

BATCHES_FORMAT = "approxeq-batches"


def save_batches(path: str | Path, batches: Sequence[Batch]) -> Path:
    """Write tasks to a ``.pt`` file that :func:`load_batches` (and ``approxeq eval --data``)
    reads.

    Format: ``torch.save`` of ``{"format": "approxeq-batches", "version": 1, "batches": [...]}``
    where each batch is a dict of tensors ``xc [b, nc, dx]``, ``yc [b, nc, dy]``,
    ``xt [b, nt, dx]``, ``yt [b, nt, dy]``, optional masks ``mc [b, nc]``, ``mt [b, nt]``,
    optional auxiliary inputs ``aux_c [b, nc, dim_aux]``, ``aux_t [b, nt, dim_aux]``, and
    ``meta``, a dict of the batch's tensor-valued metadata (e.g. the oracle's
    ``gt_loglik [b]``). Files of version 1 kept both in one ``aux`` dict; they still load.
    It holds only tensors, so it loads with ``weights_only=True``. Written atomically.
    """
    if len(batches) == 0:
        raise ValueError("batches: expected at least one batch, got none")
    out = []
    for i, b in enumerate(batches):
        if not isinstance(b, Batch):
            raise TypeError(f"batches[{i}]: expected an approxeq.np.Batch, got {type(b).__name__}")
        d = {k: getattr(b, k) for k in ("xc", "yc", "xt", "yt", "mc", "mt", "aux_c", "aux_t")
             if getattr(b, k) is not None}
        d["meta"] = {k: v for k, v in (b.meta or {}).items() if isinstance(v, Tensor)}
        out.append(d)
    return save_atomic({"format": BATCHES_FORMAT, "version": 2, "batches": out}, path)


def load_batches(path: str | Path) -> list[Batch]:
    """Read a file written by :func:`save_batches` (or a plain list of such batch dicts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: no file at {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"data: {path} is not a saved task file ({err})") from None
    if isinstance(raw, dict):
        if raw.get("format") != BATCHES_FORMAT:
            raise ValueError(f"data: {path} is not an approxeq task file (expected a dict with "
                             f"format={BATCHES_FORMAT!r}, as written by save_batches)")
        raw = raw["batches"]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"data: {path}: expected a non-empty list of batches")
    batches = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict) or not {"xc", "yc", "xt", "yt"} <= set(d):
            raise ValueError(f"data: {path}: batch {i} must be a dict with xc, yc, xt, yt")
        meta = dict(d.get("meta") or {})
        # version 1 kept the auxiliary inputs among the metadata
        legacy = dict(d.get("aux") or {})
        aux_c, aux_t = d.get("aux_c", legacy.pop("aux_c", None)), d.get("aux_t",
                                                                          legacy.pop("aux_t", None))
        meta.update(legacy)
        batches.append(Batch(xc=d["xc"], yc=d["yc"], xt=d["xt"], yt=d["yt"], mc=d.get("mc"),
                             mt=d.get("mt"), aux_c=aux_c, aux_t=aux_t, meta=meta))
    return batches


__all__ = ["BATCHES_FORMAT", "load_batches", "save_batches"]
