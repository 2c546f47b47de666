"""Loss, evaluation and memory-bounded prediction (targets in chunks) for neural processes
(model-agnostic)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import (
    Categorical,
    Distribution,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from approxeq.approximate.component import regularization_loss
from approxeq.np.base import NeuralProcess
from approxeq.np.batch import Batch

#: default memory budget of one forward pass over a chunk of targets (MiB), besides the TE
#: attention's own ``memory_budget_mb`` for its pairwise logit MLP
DEFAULT_MAX_MEMORY_MB = 1024.0


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over targets (dims 1..) per task; ``values`` is ``[batch, n_target, dim_y]``."""
    if mask is None:
        return values.flatten(1).mean(-1)
    m = mask.unsqueeze(-1).to(values.dtype).expand_as(values)
    return (values * m).flatten(1).sum(-1) / m.flatten(1).sum(-1).clamp_min(1)


def model_inputs(batch: Batch) -> dict:
    """Keyword inputs a model takes besides ``(xc, yc, xt)``: the auxiliary fields at context and
    target locations (``batch.aux_c``, ``batch.aux_t``) when the batch has them."""
    return batch.model_inputs()


def np_loss(model: torch.nn.Module, batch: Batch) -> Tensor:
    """Training loss: negative log-likelihood per target point, averaged over tasks, plus the
    regularisers of the model's symmetry-breaking modules
    (:func:`~approxeq.approximate.regularization_loss`: a fixed input's grid smoothness
    penalty; none by default).

    Returns a scalar tensor (differentiable).
    """
    if batch.yt is None:
        raise ValueError("batch.yt: the loss needs target outputs, got None")
    pred = model(batch.xc, batch.yc, batch.xt, **model_inputs(batch))
    logp = pred.log_prob(batch.yt)
    if len(pred.event_shape):  # a full covariance: per target point, made per output value
        logp = (logp / pred.event_shape.numel()).unsqueeze(-1)
    loss = -_masked_mean(logp, batch.mt).mean()
    penalty = regularization_loss(model)
    return loss if penalty is None else loss + penalty.to(loss.dtype)


@dataclass
class EvalResult:
    """Per-task metrics of one model on a set of tasks, all float64 ``[n_tasks]`` tensors."""

    loglik: Tensor
    rmse: Tensor
    coverage: Tensor

    def summary(self) -> dict[str, float]:
        n = self.loglik.numel()
        se = lambda v: float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
        return {
            "loglik": float(self.loglik.mean()),
            "loglik_se": se(self.loglik),
            "rmse": float(self.rmse.mean()),
            "rmse_se": se(self.rmse),
            "coverage95": float(self.coverage.mean()),
            "n_tasks": n,
        }

    @staticmethod
    def cat(results: list[EvalResult]) -> EvalResult:
        return EvalResult(*(torch.cat([getattr(r, k) for r in results])
                            for k in ("loglik", "rmse", "coverage")))


def gaussian_metrics(mean: Tensor, std: Tensor, yt: Tensor, mt: Tensor | None = None) -> EvalResult:
    """Per-task metrics of a factorised Gaussian prediction, computed in float64.

    Args:
        mean, std: ``[batch, n_target, dim_y]``.
        yt: ``[batch, n_target, dim_y]``.
        mt: optional target mask ``[batch, n_target]``.
    """
    mean, std, yt = mean.double(), std.double(), yt.double()
    dist = Normal(mean, std)
    loglik = _masked_mean(dist.log_prob(yt), mt)
    rmse = _masked_mean((mean - yt) ** 2, mt).sqrt()
    z = 1.959963984540054
    inside = ((yt - mean).abs() <= z * std).to(torch.float64)
    coverage = _masked_mean(inside, mt)
    return EvalResult(loglik=loglik, rmse=rmse, coverage=coverage)


@torch.no_grad()
def np_evaluate(model: torch.nn.Module, batch: Batch, *,
                max_memory_mb: float = DEFAULT_MAX_MEMORY_MB) -> EvalResult:
    """Evaluate ``model`` on ``batch``: mean Gaussian log-likelihood per target point (float64),
    RMSE of the predictive mean and the coverage of the central 95% interval, per task.

    The targets are predicted in chunks within ``max_memory_mb`` (:func:`forward_in_chunks`),
    which gives the same result as one call."""
    if batch.yt is None:
        raise ValueError("batch.yt: evaluation needs target outputs, got None")
    pred: Distribution = forward_in_chunks(model, batch.xc, batch.yc, batch.xt,
                                           **model_inputs(batch), max_memory_mb=max_memory_mb)
    return gaussian_metrics(pred.mean, pred.stddev, batch.yt, batch.mt)


# --------------------------------------------------------------------------------------------
# prediction in target chunks under a memory budget

#: activation values a target holds whatever the context (its tokens through the layers, the
#: decoder's hidden layers): an upper estimate for widths up to a few hundred
_VALUES_PER_TARGET = 4096
#: values per (target, context point, head) pair of an attention: dot products, logits,
#: softmax weights and the copies a permute makes
_VALUES_PER_PAIR = 6


def _attention_heads(model: torch.nn.Module) -> int:
    from approxeq.nn.attention import AttentionHeads

    return max((m.num_heads for m in model.modules() if isinstance(m, AttentionHeads)),
               default=0)


def _draws(model: torch.nn.Module) -> int:
    """Predictions per target a symmetrised model makes (``n_samples_eval``), else 1."""
    inner = getattr(model, "symmetrized", None)
    return max(1, int(getattr(inner, "n_samples_eval", 1) or 1))


def target_chunk_size(model: torch.nn.Module, batch: int, n_context: int, n_target: int,
                      itemsize: int, max_memory_mb: float) -> int:
    """Targets per forward pass so that one pass stays within ``max_memory_mb``.

    The estimate per target is ``batch * (n_context * heads * draws * 6 + 4096)`` values of
    ``itemsize`` bytes: attention from the targets to the context holds a ``[heads, n_target,
    n_context]`` array a few times over, and every target carries its tokens and decoder
    activations. It is deliberately generous; the memory of the context's own processing
    (self-attention among context points, a grid) does not depend on the targets and is not
    part of it.
    """
    per_target = batch * (n_context * _attention_heads(model) * _draws(model) * _VALUES_PER_PAIR
                          + _VALUES_PER_TARGET) * itemsize
    return max(1, min(n_target, int(max_memory_mb * 2 ** 20) // max(1, per_target)))


def cat_distributions(parts: Sequence[Distribution]) -> Distribution:
    """Join predictions for consecutive chunks of targets along the target dimension (dim 1 of
    batch shape ``[batch, n_target, dim_y]``). Supports the factorised ``Normal``, the
    ``MultivariateNormal`` of vector outputs with a full covariance (batch shape
    ``[batch, n_target]``) and the ``MixtureSameFamily`` of ``Normal`` components that the
    models here return."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if all(type(p) is Normal for p in parts):
        return Normal(torch.cat([p.loc for p in parts], 1), torch.cat([p.scale for p in parts], 1))
    if all(type(p) is MultivariateNormal for p in parts):  # vector outputs, full covariance
        return MultivariateNormal(torch.cat([p.loc for p in parts], 1),
                                  scale_tril=torch.cat([p.scale_tril for p in parts], 1))
    if all(isinstance(p, MixtureSameFamily) and type(p.component_distribution) is Normal
           for p in parts):
        logits = torch.cat([p.mixture_distribution.logits for p in parts], 1)
        loc = torch.cat([p.component_distribution.loc for p in parts], 1)
        scale = torch.cat([p.component_distribution.scale for p in parts], 1)
        return MixtureSameFamily(Categorical(logits=logits), Normal(loc, scale))
    raise TypeError(f"max_memory_mb: the model returns a {type(first).__name__}, whose "
                    "predictions for separate chunks of targets cannot be joined; raise "
                    "max_memory_mb so that every target fits in one pass")


def _grid_model(model: torch.nn.Module) -> bool:
    # A grid model's encoder builds one grid around the context and the targets; decoding the
    # targets in chunks from that one grid gives exactly the unchunked prediction, whereas
    # encoding each chunk separately would build a different grid (and change the edges).
    # Its representation must carry the targets as fields ``xt`` and ``aux_t`` (as
    # :class:`~approxeq.np.models.convcnp.GridRepresentation` does) to be decoded in chunks;
    # another grid model is called per chunk like any model.
    return isinstance(model, NeuralProcess) and \
        getattr(model.encoder, "points_per_unit", None) is not None


def forward_in_chunks(model: torch.nn.Module, xc: Tensor, yc: Tensor, xt: Tensor, *,
                      aux_c: Tensor | None = None, aux_t: Tensor | None = None,
                      max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
                      chunk_targets: int | None = None) -> Distribution:
    """``model(xc, yc, xt, aux_c=, aux_t=)``, computed over chunks of targets so that memory
    grows linearly with the number of targets, with the same result as one call.

    Every model here predicts the targets independently of each other given the context, so the
    chunks' predictions are joined (:func:`cat_distributions`):

    * attention models attend from targets to the context (or pseudo-tokens) only;
    * grid models (ConvCNP, EquivCNP, ...) are encoded once, with the grid covering the context
      and *all* targets, and only the set convolution to the targets and the decoder run per
      chunk, so the grid is the one an unchunked call builds;
    * a symmetrised model that samples group elements (``forward_with_samples``, e.g. the
      LPS-TNP) draws its noise on the first chunk and reuses it for the others, so every chunk
      sees the same elements.

    With an empty context some models anchor on the targets (the TE-PT-TNP's pseudo-token
    locations and the LPS-TNP's centring are computed from them), and the cost per target no
    longer involves any context: such calls run in one pass.

    Args:
        model: a neural process ``forward(xc, yc, xt, **aux) -> Distribution``.
        xc ``[b, nc, dim_x]``, yc ``[b, nc, dim_y]``, xt ``[b, nt, dim_x]``: the task.
        aux_c ``[b, nc, dim_aux]``, aux_t ``[b, nt, dim_aux]``: auxiliary inputs, if the model
            reads them.
        max_memory_mb: memory budget of one pass over a chunk (see :func:`target_chunk_size`).
        chunk_targets: a fixed number of targets per chunk instead (``None``: from the budget).

    Returns:
        The predictive distribution with batch shape ``[b, nt, dim_y]``.
    """
    if not (isinstance(max_memory_mb, (int, float)) and math.isfinite(max_memory_mb)
            and max_memory_mb > 0):
        raise ValueError(f"max_memory_mb: expected a finite number > 0, got {max_memory_mb!r}")
    if chunk_targets is not None and (not isinstance(chunk_targets, int) or chunk_targets < 1):
        raise ValueError(f"chunk_targets: expected a positive int or None, got {chunk_targets!r}")
    inputs = {k: v for k, v in (("aux_c", aux_c), ("aux_t", aux_t)) if v is not None}
    b, nc, nt = xt.shape[0], xc.shape[1], xt.shape[1]
    chunk = chunk_targets or target_chunk_size(model, b, nc, nt, xt.element_size(), max_memory_mb)
    if chunk >= nt or nc == 0:
        return model(xc, yc, xt, **inputs)
    starts = range(0, nt, chunk)
    rep = None
    if _grid_model(model):
        model.check_inputs(xc, yc, xt, aux_c, aux_t)
        rep = model.encode(xc, yc, xt, aux_c, aux_t)
    if dataclasses.is_dataclass(rep) and hasattr(rep, "xt") and hasattr(rep, "aux_t"):
        parts = []
        for s in starts:
            part = dataclasses.replace(rep, xt=rep.xt[:, s:s + chunk],
                                       aux_t=None if rep.aux_t is None
                                       else rep.aux_t[:, s:s + chunk])
            parts.append(model.likelihood(model.decoder(part)))
        return cat_distributions(parts)

    def aux_chunks(s: int) -> dict[str, Tensor]:
        return inputs if aux_t is None else {**inputs, "aux_t": aux_t[:, s:s + chunk]}

    if hasattr(model, "forward_with_samples"):
        first = model.forward_with_samples(xc, yc, xt[:, :chunk], **aux_chunks(0))
        parts = [first.distribution]
        for s in starts[1:]:
            parts.append(model.forward_with_samples(xc, yc, xt[:, s:s + chunk], **aux_chunks(s),
                                                    noise=first.noise).distribution)
        return cat_distributions(parts)
    return cat_distributions([model(xc, yc, xt[:, s:s + chunk], **aux_chunks(s)) for s in starts])


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode inside the context (no fixed-input or auxiliary dropout, the
    evaluation sample counts), its previous mode restored on exit, also on exceptions.
    Predictions that are reported (metrics, maps, corrections) are made inside it, so that they
    do not depend on the mode a caller left the model in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class TargetChunked(torch.nn.Module):
    """``model`` whose forward runs :func:`forward_in_chunks`, for code that calls a model on
    all targets at once (e.g. :func:`~approxeq.approximate.delta_equiv`,
    :func:`~approxeq.approximate.equivariance_error`): same predictions, memory linear in the
    number of targets. The wrapped model is a submodule, so
    :func:`~approxeq.approximate.equivariant_component` of the wrapper reaches its fixed inputs;
    ``symmetry``, ``dim_x``, ``dim_y``, ``dim_aux`` are the model's.

    Shapes: as the model's ``forward(xc, yc, xt, aux_c=None, aux_t=None)``.
    """

    def __init__(self, model: torch.nn.Module,
                 max_memory_mb: float = DEFAULT_MAX_MEMORY_MB) -> None:
        super().__init__()
        self.model, self.max_memory_mb = model, max_memory_mb
        # a new module starts in training mode: without this, code that restores the wrapper's
        # mode (``model.train(was_training)``) would switch the wrapped model to training
        self.train(model.training)
        for name in ("symmetry", "dim_x", "dim_y", "dim_aux"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> Distribution:
        return forward_in_chunks(self.model, xc, yc, xt, aux_c=aux_c, aux_t=aux_t,
                                 max_memory_mb=self.max_memory_mb)
