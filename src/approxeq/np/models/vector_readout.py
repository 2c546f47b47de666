"""Equivariant read-outs of vector outputs, shared by the E(2) models with ``y_rep`` vectors.

* :class:`DisplacementReadout` (E-TNP): a vector at a target as an attention-weighted sum of
  the context vectors and of the displacements to the context points, with weights and
  coefficients from invariant tokens and distances, so it turns with the scene.
* :func:`lift_vectors` / :func:`read_vectors` (EquivCNP): a planar vector field on a grid into
  two regular fields of ``D_N``/``C_N`` (``f(p, g_i) = M_iᵀ v(p)``) and back through the
  standard representation (``v(p) = |G|⁻¹ Σ_i M_i r(p, g_i)``).

Every function here leaves the decoder-output layout of
:class:`~approxeq.np.likelihood.RepresentationGaussian`: ``[means (dim_y), raw spreads
(dim_y), u (2 per vector, full covariance only)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from approxeq.groups.representation import OutputRep


@dataclass
class VectorTokens:
    """What a vector E-TNP's encoder hands its read-out: the final context and target tokens
    with the locations and context values they belong to.

    Shapes: ``zc [b, nc, width]``, ``zt [b, nt, width]``, ``xc [b, nc, 2]``,
    ``xt [b, nt, 2]``, ``yc [b, nc, dim_y]``.
    """

    zc: Tensor
    zt: Tensor
    xc: Tensor
    xt: Tensor
    yc: Tensor


class DisplacementReadout(nn.Module):
    """The E(2)-equivariant read-out of vector outputs from invariant tokens.

    For each output vector ``j`` (the mean of every vector field and, with ``full``, its
    covariance factor ``u``):

        v_j(x_n) = Σ_m α_nmj (a_nmj y_m^(k) + c_nmj (x_m − x_n)),

    where ``y_m^(k)`` is the context value of the vector field ``k`` the output belongs to and
    ``[logit, a, c]_nm = Linear(relu(Q z_n + K z_m + D p_nm))``, ``α = softmax_m(logit)``, with
    the pair invariants ``p_nm = [‖x_m − x_n‖, (x_m − x_n)·y_m^(k) for every vector field k]``
    (the dot products let a coefficient depend on a context vector's direction relative to
    the target, as a matrix kernel's ``r rᵀ`` term does): invariant weights times vectors that
    turn with the scene. Scalar means and every raw
    spread come from an MLP of the target token (invariant). An empty context gives zero
    vectors.

    Shapes: ``forward(VectorTokens)`` returns ``[b, nt, 2 dim_y (+ 2 num_vectors)]``.
    """

    def __init__(self, rep: OutputRep, width: int, full: bool = False) -> None:
        super().__init__()
        self.rep, self.full = rep, full
        self.num_out = rep.num_vectors * (2 if full else 1)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.distance = nn.Linear(1 + rep.num_vectors, width, bias=False)
        self.pair = nn.Linear(width, 3 * self.num_out)
        self.invariant = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                       nn.Linear(width, rep.num_scalars + rep.dim))

    def forward(self, tokens: VectorTokens) -> Tensor:
        zc, zt, xc, xt = tokens.zc, tokens.zt, tokens.xc, tokens.xt
        disp = xc[:, None, :, :] - xt[:, :, None, :]  # [b, nt, nc, 2]
        sq = (disp ** 2).sum(-1, keepdim=True)
        positive = sq > 0  # a zero (not NaN) gradient at distance 0
        dist = torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(),
                           torch.zeros_like(sq))
        vectors, _ = self.rep.split(tokens.yc)  # each [b, nc, 2]
        dots = [(disp * v[:, None]).sum(-1, keepdim=True) for v in vectors]
        invariants = torch.cat([dist, *dots], -1)  # [b, nt, nc, 1 + K]
        h = torch.relu(self.query(zt)[:, :, None] + self.key(zc)[:, None]
                       + self.distance(invariants))
        pair = self.pair(h).unflatten(-1, (self.num_out, 3))  # [b, nt, nc, J, 3]
        alpha = torch.softmax(pair[..., 0], dim=2)
        outs = []
        for j in range(self.num_out):
            y = vectors[j % self.rep.num_vectors][:, None]  # [b, 1, nc, 2]
            terms = pair[..., j, 1:2] * y + pair[..., j, 2:3] * disp
            outs.append((alpha[..., j:j + 1] * terms).sum(2))  # [b, nt, 2]
        inv = self.invariant(zt)
        scalars, raw = inv[..., :self.rep.num_scalars], inv[..., self.rep.num_scalars:]
        means = self.rep.merge(outs[:self.rep.num_vectors], scalars)
        return torch.cat([means, raw, *outs[self.rep.num_vectors:]], -1)


def lift_vectors(v: Tensor, matrices: Tensor) -> Tensor:
    """Vector fields on a grid as regular fields of a planar point group.

    Args:
        v: ``[b, K, 2, H, W]`` (channels-first) vector fields. matrices: ``[|G|, 2, 2]``, the
            group's matrices in the order of its elements.

    Returns:
        ``[b, 2 K · |G|, H, W]``, channel ``c·|G| + i`` holding component ``c % 2`` of
        ``M_iᵀ v``: under ``g`` it moves as ``F(p, g_i) ↦ F(g⁻¹p, g⁻¹g_i)``, a regular field.
    """
    b, k, _, h, w = v.shape
    lifted = torch.einsum("gji,bkjhw->bkigwh", matrices.to(v), v).transpose(-1, -2)
    return lifted.reshape(b, k * 2 * matrices.shape[0], h, w)


def read_vectors(r: Tensor, matrices: Tensor) -> Tensor:
    """Regular fields ``r [b, 2 K · |G|, H, W]`` (pairs of fields per output vector) read
    through the standard representation: ``v(p) = |G|⁻¹ Σ_i M_i (r_0(p, g_i), r_1(p, g_i))``,
    which turns with the scene. Returns ``[b, K, 2, H, W]``."""
    b, c, h, w = r.shape
    g = matrices.shape[0]
    r = r.reshape(b, c // (2 * g), 2, g, h, w)
    return torch.einsum("gij,bkjghw->bkihw", matrices.to(r), r) / g
