"""The :class:`Batch` of neural-process tasks and the input checks every model runs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from approxeq.approximate.auxiliary import check_aux_inputs


@dataclass
class Batch:
    """A batch of regression tasks, channels-last.

    Attributes:
        xc: context inputs ``[batch, n_context, dim_x]`` (``n_context`` may be 0).
        yc: context outputs ``[batch, n_context, dim_y]``.
        xt: target inputs ``[batch, n_target, dim_x]``.
        yt: target outputs ``[batch, n_target, dim_y]`` (``None`` at prediction time).
        mc: optional context mask ``[batch, n_context]`` (bool, ``True`` = observed), for
            padded batches whose tasks have different context sizes.
        mt: optional target mask ``[batch, n_target]``.
        aux_c: optional auxiliary model inputs at the context points ``[batch, n_context,
            dim_aux]`` (e.g. normalised elevation); passed to the model as ``aux_c=``.
        aux_t: the same at the target points ``[batch, n_target, dim_aux]`` (``aux_t=``).
        meta: optional metadata that is *not* a model input: the oracle's log-likelihood
            ``gt_loglik [batch]``, the oracle object, the kernel, ``time_index [batch]``, ...
            :meth:`to` moves its tensors to another device but never casts them, so float64
            oracle values stay float64.
    """

    xc: Tensor
    yc: Tensor
    xt: Tensor
    yt: Tensor | None = None
    mc: Tensor | None = None
    mt: Tensor | None = None
    aux_c: Tensor | None = None
    aux_t: Tensor | None = None
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_np_inputs(self.xc, self.yc, self.xt, self.yt)
        check_aux_inputs(self.xc, self.xt, self.aux_c, self.aux_t)

    @property
    def aux(self) -> dict[str, Any] | None:
        """Read-only alias of :attr:`meta` (the metadata dict, ``None`` when absent), kept for
        code written before the auxiliary inputs became the typed fields ``aux_c``/``aux_t``."""
        return self.meta

    def model_inputs(self) -> dict[str, Tensor]:
        """Keyword inputs of the model besides ``(xc, yc, xt)``: ``aux_c`` and ``aux_t`` when
        the batch has them."""
        return {k: v for k, v in (("aux_c", self.aux_c), ("aux_t", self.aux_t))
                if v is not None}

    @property
    def batch_size(self) -> int:
        return self.xc.shape[0]

    @property
    def dim_x(self) -> int:
        return self.xc.shape[-1]

    @property
    def dim_y(self) -> int:
        return self.yc.shape[-1]

    def to(self, *args: Any, **kwargs: Any) -> Batch:
        """Move/cast the model inputs like ``Tensor.to`` (masks keep their bool dtype); the
        tensors of :attr:`meta` only change device, never dtype."""
        device = kwargs.get("device")
        if device is None and args and not isinstance(args[0], torch.dtype):
            device = args[0].device if isinstance(args[0], Tensor) else args[0]
        out: dict[str, Any] = {}
        for name in ("xc", "yc", "xt", "yt", "aux_c", "aux_t"):
            v = getattr(self, name)
            out[name] = None if v is None else v.to(*args, **kwargs)
        for name in ("mc", "mt"):
            v = getattr(self, name)
            out[name] = v.to(device=device) if v is not None and device is not None else v
        if self.meta is not None and device is not None:
            out["meta"] = {k: v.to(device=device) if isinstance(v, Tensor) else v
                           for k, v in self.meta.items()}
        return replace(self, **out)


def _shape(t: Tensor) -> str:
    return f"[{', '.join(str(s) for s in t.shape)}]"


def check_np_inputs(xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor | None = None) -> None:
    """Validate the inputs of a neural process; raise ``ValueError``/``TypeError`` naming the
    argument, the expected shape and what was given.
    """
    named = {"xc": xc, "yc": yc, "xt": xt}
    if yt is not None:
        named["yt"] = yt
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(
                f"{name}: expected shape [batch, n, dim] (3 dimensions), got {_shape(t)}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    b = xc.shape[0]
    for name, t in named.items():
        if t.shape[0] != b:
            raise ValueError(
                f"{name}: batch size {t.shape[0]} does not match xc's batch size {b} "
                f"(xc is {_shape(xc)}, {name} is {_shape(t)})")
    if yc.shape[1] != xc.shape[1]:
        raise ValueError(f"yc: expected [batch, {xc.shape[1]}, dim_y] to match xc {_shape(xc)}, "
                         f"got {_shape(yc)}")
    if xt.shape[-1] != xc.shape[-1]:
        raise ValueError(f"xt: expected dim_x = {xc.shape[-1]} (as xc {_shape(xc)}), "
                         f"got {_shape(xt)}")
    if yt is not None:
        if yt.shape[1] != xt.shape[1]:
            raise ValueError(f"yt: expected [batch, {xt.shape[1]}, dim_y] to match xt "
                             f"{_shape(xt)}, "
                             f"got {_shape(yt)}")
        if yt.shape[-1] != yc.shape[-1]:
            raise ValueError(f"yt: expected dim_y = {yc.shape[-1]} (as yc {_shape(yc)}), "
                             f"got {_shape(yt)}")
    dtypes = {t.dtype for t in named.values()}
    if len(dtypes) > 1:
        raise TypeError("xc, yc, xt" + (", yt" if yt is not None else "")
                        + f": expected one floating dtype, got {sorted(str(d) for d in dtypes)}")
    for name, t in named.items():
        if t.numel() and not torch.isfinite(t).all():
            raise ValueError(f"{name}: contains NaN or inf values")


def check_model_dims(model_name: str, dim_x: int, dim_y: int, xc: Tensor, yc: Tensor) -> None:
    """Check that data dimensions match the ones the model was built for."""
    if xc.shape[-1] != dim_x:
        raise ValueError(f"xc: {model_name} was built for dim_x = {dim_x}, got {_shape(xc)}")
    if yc.shape[-1] != dim_y:
        raise ValueError(f"yc: {model_name} was built for dim_y = {dim_y}, got {_shape(yc)}")
