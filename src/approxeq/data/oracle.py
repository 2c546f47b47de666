"""The exact GP posterior predictive ("oracle") for tasks drawn from a GP or a finite GP mixture.

Everything is computed in float64 from one Cholesky factor ``L`` of the noisy prior covariance
of the stacked inputs ``[xc; xt]``: with ``L = [[L_cc, 0], [L_tc, L_tt]]`` the context evidence is
read from ``L_cc``, the predictive mean is ``L_tc L_cc^{-1} yc`` and the predictive covariance is
``L_tt L_tt^T``. Outputs (``dim_y > 1``) are independent GPs with the same kernel.

The log-likelihoods use the normalisation of :func:`approxeq.np.np_evaluate`: per task, the sum
over target points and output dimensions divided by ``n_target * dim_y``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from approxeq.data.kernels import Kernel

NoiseStd = float | Tensor
_LOG_2PI = math.log(2.0 * math.pi)


def _shape(t: Tensor) -> str:
    return f"[{', '.join(str(s) for s in t.shape)}]"


def _noise_variance(noise_std: NoiseStd, batch: int) -> Tensor:
    """``[batch, 1]`` float64 noise variances from a float or a ``[batch]`` tensor."""
    s = torch.as_tensor(noise_std, dtype=torch.float64)
    if s.dim() > 1 or (s.dim() == 1 and s.numel() not in (1, batch)):
        raise ValueError(f"noise_std: expected a float or a tensor of shape [batch] = [{batch}], "
                         f"got {_shape(s)}")
    if (s < 0).any():
        raise ValueError(f"noise_std: must be >= 0, got {s}")
    return (s**2).reshape(-1, 1).expand(batch, 1)


def noisy_cholesky(kernel: Kernel, noise_std: NoiseStd, x: Tensor, jitter: float = 1e-6,
                   max_tries: int = 5) -> Tensor:
    """Lower Cholesky factor of ``k(x, x) + (noise_std^2 + jitter) I`` in float64.

    Args:
        x: ``[batch, n, dim_x]``.

    Returns:
        ``[batch, n, n]``. Should the factorisation fail, the jitter is raised tenfold up to
        ``max_tries`` times; generators and the oracle call this with the same inputs, so they
        agree on the covariance.
    """
    k = noisy_covariance(kernel, noise_std, x.to(torch.float64), jitter)
    diag = torch.diagonal(k, dim1=-2, dim2=-1)
    info = torch.empty(k.shape[:-2], dtype=torch.int32, device=k.device)
    for _ in range(max_tries):
        chol = column_major_cholesky(k, info)
        if not bool((info > 0).any()):
            return chol
        diag.add_(9.0 * jitter)
        jitter = 10.0 * jitter
    raise RuntimeError(f"noisy_cholesky: covariance of {type(kernel).__name__} is not positive "
                       f"definite even with jitter {jitter / 10:g}")


def column_major_cholesky(k: Tensor, info: Tensor) -> Tensor:
    """``torch.linalg.cholesky_ex(k)``'s factor bit for bit, with its ``info`` written to
    ``info: [batch]`` (int32), in less time: ``k: [batch, n, n]`` is copied whole into LAPACK's
    column-major layout and factorised there in place, the same ``potrf`` call on the same
    numbers; ``cholesky_ex``'s own copy of the lower triangle is an element-by-element loop,
    slower than a whole copy (``benchmarks/README.md``)."""
    chol = k.mT.contiguous().mT
    torch.linalg.cholesky_ex(chol, out=(chol, info))
    return chol


def float32_noisy_cholesky(kernel: Kernel, noise_std: NoiseStd, x: Tensor,
                           jitter: float = 1e-6) -> Tensor | None:
    """:func:`noisy_cholesky` computed in float32 (kernel and factorisation), or ``None`` where
    the float32 factorisation fails (the caller then uses the float64 one).

    The factor overwrites the covariance in place (no copy beyond LAPACK's), and subnormal
    numbers are flushed to 0 on this thread while it is computed: the factorisation's far
    entries underflow, and each subnormal operation costs the CPU a slow microcode path
    (``benchmarks/README.md``), for a change below the smallest normal float32.

    Args:
        x: ``[batch, n, dim_x]`` (any float dtype).

    Returns:
        float32 ``[batch, n, n]`` (column-major strides) or ``None``.
    """
    return float32_cholesky_(noisy_covariance(kernel, noise_std, x.to(torch.float32), jitter))


def noisy_covariance(kernel: Kernel, noise_std: NoiseStd, x: Tensor,
                     jitter: float = 1e-6) -> Tensor:
    """``k(x, x) + (noise_std^2 + jitter) I``, ``[batch, n, n]`` in the dtype of
    ``x: [batch, n, dim_x]``, as a fresh tensor."""
    k = kernel(x, x)  # a fresh tensor (Kernel.compute's contract): its diagonal is raised in place
    diag = torch.diagonal(k, dim1=-2, dim2=-1)
    diag.add_((_noise_variance(noise_std, x.shape[0]) + jitter).to(k.dtype))
    return k


def float32_cholesky_(k: Tensor) -> Tensor | None:
    """The lower Cholesky factor of the float32 covariances ``k: [batch, n, n]``, written over
    ``k`` where it is contiguous (else over a contiguous copy; ``k`` is read as symmetric: its
    upper triangle is used), with subnormals flushed (see :func:`float32_noisy_cholesky`), or
    ``None`` where a factorisation fails."""
    # LAPACK reads the lower triangle of its column-major input: k's upper one
    a = k.mT if k.is_contiguous() else k.contiguous().mT
    info = torch.empty(a.shape[:-2], dtype=torch.int32, device=a.device)
    with flush_subnormals():
        torch.linalg.cholesky_ex(a, out=(a, info))
    return None if bool((info > 0).any()) else a


def _flushes_subnormals() -> bool:
    """Whether this thread flushes subnormal float results to 0 already."""
    return torch.tensor(1e-40, dtype=torch.float32).item() == 0.0


@contextmanager
def flush_subnormals() -> Iterator[None]:
    """Within the block this thread's CPU flushes subnormal float results (and inputs) to 0
    (``torch.set_flush_denormal``), where it can; the mode is as it was after the block."""
    if _flushes_subnormals() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass
class GPPredictive:
    """Gaussian predictive of noisy target outputs under one GP.

    Attributes:
        mean: ``[batch, n_target, dim_y]``.
        cov: ``[batch, n_target, n_target]`` (shared by the output dimensions), noise included.
    """

    mean: Tensor
    cov: Tensor

    @property
    def var(self) -> Tensor:
        """Marginal variances ``[batch, n_target, dim_y]``."""
        return torch.diagonal(self.cov, dim1=-2, dim2=-1)[..., None].expand_as(self.mean)


@dataclass
class OracleLoglik:
    """Oracle log-likelihoods of the targets given the context, float64 ``[batch]`` each.

    Attributes:
        marginal: mean over target points (and output dims) of the per-point log-density.
        joint: log-density of all targets jointly divided by ``n_target * dim_y``.
    """

    marginal: Tensor
    joint: Tensor


def _check(xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor | None = None) -> None:
    for name, t in (("xc", xc), ("yc", yc), ("xt", xt)) + ((("yt", yt),) if yt is not None else ()):
        if not isinstance(t, Tensor) or t.dim() != 3:
            raise ValueError(f"{name}: expected shape [batch, n, dim], got "
                             f"{_shape(t) if isinstance(t, Tensor) else type(t).__name__}")
    if yc.shape[:2] != xc.shape[:2]:
        raise ValueError(f"yc: expected [{xc.shape[0]}, {xc.shape[1]}, dim_y] to match xc, "
                         f"got {_shape(yc)}")
    if xt.shape[0] != xc.shape[0] or xt.shape[-1] != xc.shape[-1]:
        raise ValueError(f"xt: expected [{xc.shape[0]}, n_target, {xc.shape[-1]}], "
                         f"got {_shape(xt)}")
    if yt is not None and (yt.shape[:2] != xt.shape[:2] or yt.shape[-1] != yc.shape[-1]):
        raise ValueError(f"yt: expected [{xt.shape[0]}, {xt.shape[1]}, {yc.shape[-1]}], "
                         f"got {_shape(yt)}")


class GPOracle:
    """Exact predictive of a finite mixture of GPs ``sum_k pi_k GP(0, k_k) + noise``.

    With one kernel it is the GP posterior. With several, components are weighted by their
    posterior probability given the context, ``w_k ∝ pi_k p_k(yc)`` (the prior with an empty
    context), so the predictive is the Bayes-optimal mixture ``sum_k w_k p_k(yt | yc)``.

    Args:
        kernels: one kernel or a sequence of ``K`` kernels.
        noise_std: observation noise std (float or ``[batch]``), shared by the components.
        weights: prior weights ``pi_k`` (normalised here); uniform by default.
        jitter: added to the covariance diagonal, as by the generators.
    """

    def __init__(self, kernels: Kernel | Sequence[Kernel], noise_std: NoiseStd,
                 weights: Sequence[float] | None = None, jitter: float = 1e-6) -> None:
        self.kernels = [kernels] if isinstance(kernels, Kernel) else list(kernels)
        if not self.kernels:
            raise ValueError("kernels: expected at least one kernel, got none")
        w = torch.ones(len(self.kernels), dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (len(self.kernels),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: expected {len(self.kernels)} non-negative weights with a "
                             f"positive sum, got {weights}")
        self.log_prior = torch.log(w / w.sum())
        self.noise_std = noise_std
        self.jitter = jitter

    def __repr__(self) -> str:
        return f"GPOracle(kernels={self.kernels}, noise_std={self.noise_std})"

    def _component(self, kernel: Kernel, x: Tensor, yc: Tensor,
                   known: tuple[Kernel, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """``log p(yc) [batch]``, predictive ``mean [batch, n_target, dim_y]`` and ``L_tt``."""
        nc, dim_y = yc.shape[1], yc.shape[2]
        chol = known[1] if known is not None and kernel is known[0] else \
            noisy_cholesky(kernel, self.noise_std, x, self.jitter)
        l_cc, l_tc, l_tt = chol[:, :nc, :nc], chol[:, nc:, :nc], chol[:, nc:, nc:]
        z_c = torch.linalg.solve_triangular(l_cc, yc, upper=False)
        log_evidence = (-0.5 * z_c.pow(2).sum((-2, -1))
                        - dim_y * torch.diagonal(l_cc, dim1=-2, dim2=-1).log().sum(-1)
                        - 0.5 * nc * dim_y * _LOG_2PI)
        return log_evidence, l_tc @ z_c, l_tt

    def _posterior_log_weights(self, log_evidence: Tensor) -> Tensor:
        log_w = self.log_prior.to(log_evidence.device)[:, None] + log_evidence
        return log_w - torch.logsumexp(log_w, dim=0, keepdim=True)

    def components(self, xc: Tensor, yc: Tensor, xt: Tensor,
                   known: tuple[Kernel, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component predictives.

        Args:
            xc: ``[batch, n_context, dim_x]``, yc: ``[batch, n_context, dim_y]``,
            xt: ``[batch, n_target, dim_x]``.
            known: optional ``(kernel, chol)`` where ``chol`` is :func:`noisy_cholesky` of that
                kernel at ``[xc; xt]`` with this oracle's noise and jitter (a generator has it
                from sampling), reused for the component that ``is`` that kernel.

        Returns:
            ``log_w [K, batch]`` posterior log-weights, ``mean [K, batch, n_target, dim_y]`` and
            ``chol [K, batch, n_target, n_target]`` (Cholesky factor of the predictive covariance).
        """
        _check(xc, yc, xt)
        x = torch.cat([xc, xt], dim=1).to(torch.float64)
        parts = [self._component(k, x, yc.to(torch.float64), known) for k in self.kernels]
        log_evidence, mean, l_tt = (torch.stack(t) for t in zip(*parts))
        return self._posterior_log_weights(log_evidence), mean, l_tt

    def posterior(self, xc: Tensor, yc: Tensor, xt: Tensor) -> GPPredictive:
        """Moment-matched (mean and covariance) predictive of the mixture, for plotting.

        Returns a :class:`GPPredictive` with ``mean [batch, n_target, dim_y]``; its ``cov`` is
        the mixture covariance of the first output dimension.
        """
        log_w, mean, l_tt = self.components(xc, yc, xt)
        w = log_w.exp()
        cov_k = l_tt @ l_tt.transpose(-1, -2)
        m = (w[..., None, None] * mean).sum(0)
        m0, mk0 = m[..., 0], mean[..., 0]
        second = (w[..., None, None] * (cov_k + mk0[..., :, None] * mk0[..., None, :])).sum(0)
        return GPPredictive(mean=m, cov=second - m0[..., :, None] * m0[..., None, :])

    def loglik(self, xc: Tensor, yc: Tensor, xt: Tensor, yt: Tensor,
               known: tuple[Kernel, Tensor] | None = None) -> OracleLoglik:
        """Per-point and joint oracle log-likelihood of ``yt: [batch, n_target, dim_y]``.

        Per point: ``log sum_k w_k N(yt_i | mu_k,i, s2_k,i)``; joint: ``log sum_k w_k
        N(yt | mu_k, S_k)``; both divided by ``n_target * dim_y`` (float64 ``[batch]``).
        ``known``: see :meth:`components`.
        """
        _check(xc, yc, xt, yt)
        x = torch.cat([xc, xt], dim=1).to(torch.float64)
        yc, yt = yc.to(torch.float64), yt.to(torch.float64)
        nt, dim_y = yt.shape[1], yt.shape[2]
        # One kernel at a time: stacking K covariance factors would cost more than computing them.
        log_evidence, point, joint = [], [], []
        for kernel in self.kernels:
            evidence, mean, l_tt = self._component(kernel, x, yc, known)
            resid = yt - mean
            var = torch.linalg.vector_norm(l_tt, dim=-1).square_()[..., None]
            point.append(-0.5 * (resid.pow(2) / var + var.log() + _LOG_2PI))
            z_t = torch.linalg.solve_triangular(l_tt, resid, upper=False)
            joint.append(-0.5 * z_t.pow(2).sum((-2, -1))
                         - dim_y * torch.diagonal(l_tt, dim1=-2, dim2=-1).log().sum(-1)
                         - 0.5 * nt * dim_y * _LOG_2PI)
            log_evidence.append(evidence)
        log_w = self._posterior_log_weights(torch.stack(log_evidence))
        marginal = torch.logsumexp(log_w[..., None, None] + torch.stack(point), dim=0)
        marginal = marginal.mean((-2, -1))
        joint = torch.logsumexp(log_w + torch.stack(joint), dim=0) / (nt * dim_y)
        return OracleLoglik(marginal=marginal, joint=joint)


def gp_posterior(kernel: Kernel, noise_std: NoiseStd, xc: Tensor, yc: Tensor, xt: Tensor,
                 jitter: float = 1e-6) -> GPPredictive:
    """Exact GP predictive of noisy outputs at ``xt`` given ``(xc, yc)``, float64.

    Args:
        xc: ``[batch, n_context, dim_x]`` (``n_context`` may be 0: the prior).
        yc: ``[batch, n_context, dim_y]``.
        xt: ``[batch, n_target, dim_x]``.

    Returns:
        :class:`GPPredictive` with ``mean [batch, n_target, dim_y]`` and
        ``cov [batch, n_target, n_target]``.
    """
    _, mean, l_tt = GPOracle(kernel, noise_std, jitter=jitter).components(xc, yc, xt)
    return GPPredictive(mean=mean[0], cov=l_tt[0] @ l_tt[0].transpose(-1, -2))


def oracle_loglik(kernels: Kernel | Sequence[Kernel], noise_std: NoiseStd, xc: Tensor, yc: Tensor,
                  xt: Tensor, yt: Tensor, weights: Sequence[float] | None = None,
                  jitter: float = 1e-6) -> OracleLoglik:
    """Oracle per-point and joint log-likelihoods (float64 ``[batch]``); see :class:`GPOracle`."""
    return GPOracle(kernels, noise_std, weights, jitter).loglik(xc, yc, xt, yt)


__all__ = ["GPOracle", "GPPredictive", "OracleLoglik", "gp_posterior", "oracle_loglik",
           "noisy_cholesky"]
