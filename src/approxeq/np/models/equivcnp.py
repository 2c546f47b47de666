"""The E(2)-equivariant convolutional CNP (EquivCNP), exact and approximately equivariant.

Pipeline: set convolution of ``[y, 1]`` with one shared, isotropic RBF lengthscale onto a square
grid → point-wise MLP (``dim_y + 1 -> C``) → group CNN over ``D_N``/``C_N``
(:class:`~approxeq.nn.group_conv.GroupCNN`: lifting, group convolutions, pooling over the group
to invariant fields) → isotropic set convolution back to the targets → MLP (``C -> 2 dim_y``)
→ heteroscedastic Gaussian.

**The grid.** :func:`symmetric_lattice_grid` centres a square grid of ``2n + 1`` points per
axis, spacing ``h = 1 / points_per_unit``, on the lattice point nearest the centroid of all
inputs (context and targets), with ``n`` cells covering the largest ``∞``-norm distance of an
input from that centre plus a margin. A rotation by 90° or a reflection across an axis about
the origin, and a shift by a multiple of ``h``, move the centre to the transformed centre and
leave ``n`` unchanged, so they map the grid onto itself: the grid array is rotated/reflected
about its centre cell, which the group CNN commutes with exactly. Hence the model is exactly
equivariant (outputs are scalar fields: invariant) to ``D_4 ⋉ hZ²``
(:class:`~approxeq.groups.LatticeEuclidean`), or ``C_4 ⋉ hZ²`` for ``group="C4"``.
With ``group="D8"``/``"C8"`` the filters are rotated by 45° by interpolation; the model is
still exactly equivariant to the 90° subgroup (its ``symmetry``) and approximately to rotations
by odd multiples of 45° (see :func:`~approxeq.nn.group_conv.filter_interpolation_error`).

**Approximate version** (``approximate=True``): a learned fixed input ``t(x)``
(:class:`~approxeq.approximate.FixedInput`, ``B`` channels) is evaluated on the grid and
concatenated as ``B`` extra scalar (trivial) channels at the input of the group CNN, so it
goes through the lifting convolution like the data. Inside
:func:`~approxeq.approximate.equivariant_component` it is zero and the model is the exact
EquivCNP.

**Auxiliary fields** (``dim_aux = K``, e.g. elevation): embedded by an
:class:`~approxeq.approximate.auxiliary.AuxiliaryEmbedding` (``C`` channels); the context
embeddings are set-convolved onto the grid with the data and enter the group CNN as extra
scalar channels (where the fixed inputs go), the target embeddings are added to the decoder's
features at the targets. Silenced by ``equivariant_component`` too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from approxeq.approximate.auxiliary import AuxiliaryEmbedding
from approxeq.approximate.fixed_inputs import FixedInput
from approxeq.approximate.reach import fixed_inputs, model_dtype
from approxeq.groups.finite import Dihedral
from approxeq.groups.lattice import LatticeEuclidean
from approxeq.nn.group_conv import GroupCNN
from approxeq.nn.mlp import MLP
from approxeq.nn.setconv import (
    SetConvDecoder,
    SetConvEncoder,
    grid_points,
    rbf_support,
    rbf_weights,
)
from approxeq.np.base import NeuralProcess
from approxeq.np.models.common import (
    DEFAULT_MAX_GRID_MB,
    check_grid_budget,
)
from approxeq.np.models.convcnp import GridRepresentation

#: margin around the data, in grid cells (as the ConvCNP)
DEFAULT_MARGIN_CELLS = 8


def symmetric_grid_extent(points: Sequence[Tensor], points_per_unit: float,
                          margin: float) -> tuple[Tensor, int]:
    """The centre cell ``[2]`` (integer) and the half-width ``n`` in cells of the grid
    :func:`symmetric_lattice_grid` builds, without building it."""
    ref = points[0]
    flat = torch.cat([p.detach().reshape(-1, 2) for p in points], 0)
    if flat.shape[0] == 0:
        centre = torch.zeros(2, dtype=torch.long, device=ref.device)
        reach = torch.zeros((), dtype=ref.dtype, device=ref.device)
    else:
        # torch.round is odd-symmetric (ties to even), so it commutes with the signed
        # coordinate permutations of D_4, and with integer shifts away from ties.
        centre = torch.round(flat.mean(0) * points_per_unit).long()
        reach = (flat - centre.to(flat.dtype) / points_per_unit).abs().amax()
    return centre, int(math.ceil(float(reach + margin) * points_per_unit))


def symmetric_lattice_grid(points: Sequence[Tensor], points_per_unit: float,
                           margin: float) -> tuple[Tensor, Tensor]:
    """A square grid, shared by the batch, symmetric about a lattice point and covering
    ``points`` plus ``margin`` (see the module docstring for why it is equivariant).

    Args:
        points: tensors ``[batch, n, 2]`` (``n`` may be 0). points_per_unit: ``1 / h``.
        margin: room around the data (same units as the points).

    Returns:
        the two axes ``[2n + 1]`` each (multiples of ``h``), in the dtype and on the device of
        the first tensor.
    """
    ref = points[0]
    centre, n = symmetric_grid_extent(points, points_per_unit, margin)
    offsets = torch.arange(-n, n + 1, device=ref.device)
    return tuple((c + offsets).to(ref.dtype) / points_per_unit for c in centre.tolist())


class IsotropicRBFWeights(nn.Module):
    """RBF weights ``exp(-|x - g|² / (2 l²))`` with one learnable lengthscale for every input
    dimension, so a set convolution with them commutes with rotations. Separable per axis (the
    interface of the set convolutions' weights): ``per_axis(x [b, n, d], axes)`` returns one
    ``[b, n, n_i]`` tensor per axis."""

    def __init__(self, init_lengthscale: float, learn_lengthscale: bool = True) -> None:
        super().__init__()
        if not init_lengthscale > 0:
            raise ValueError(f"init_lengthscale: expected a positive number, got "
                             f"{init_lengthscale!r}")
        self.log_lengthscale = nn.Parameter(torch.tensor(math.log(init_lengthscale)),
                                            requires_grad=learn_lengthscale)

    @property
    def lengthscale(self) -> Tensor:
        return self.log_lengthscale.exp()

    def per_axis(self, x: Tensor, axes: Sequence[Tensor]) -> list[Tensor]:
        # rbf_weights: exactly 0 beyond rbf_support(dtype) lengthscales, so the decoder's
        # reach (and the fixed inputs') is bounded by construction
        ls = self.lengthscale.to(x.dtype)
        return [rbf_weights(x[..., d], a, ls) for d, a in enumerate(axes)]

    def support(self, dtype: torch.dtype) -> float:
        """The largest distance along an axis at which a weight in ``dtype`` is not 0."""
        return float(self.lengthscale.detach()) * rbf_support(dtype)


def isotropic_setconv_encoder(points_per_unit: float) -> SetConvEncoder:
    """A 2-D :class:`~approxeq.nn.setconv.SetConvEncoder` with an isotropic lengthscale
    (initially ``2 / points_per_unit``)."""
    return SetConvEncoder(2, weights=IsotropicRBFWeights(2.0 / points_per_unit))


def isotropic_setconv_decoder(points_per_unit: float) -> SetConvDecoder:
    """A 2-D :class:`~approxeq.nn.setconv.SetConvDecoder` with an isotropic lengthscale."""
    return SetConvDecoder(2, weights=IsotropicRBFWeights(2.0 / points_per_unit))


class EquivCNPEncoder(nn.Module):
    """Context set → invariant grid representation.

    Args:
        dim_y: output dimension. points_per_unit: grid density. channels: width ``C``.
        net: the group CNN, ``in_channels = C + B + A`` (fixed-input and auxiliary channels).
        margin: room around the data. fixed_input: optional ``t`` with ``B`` channels.
        aux_embedding: optional auxiliary embedding with ``A`` output channels.
        max_grid_mb: memory budget of the grid's activations; a larger grid is refused before
            it is allocated.

    Shapes: ``forward(xc [b, n, 2], yc [b, n, dim_y], xt [b, m, 2], aux_c [b, n, K] | None,
    aux_t [b, m, K] | None)`` returns a :class:`~approxeq.np.models.convcnp.GridRepresentation`
    with axes ``([N], [N])``, ``z [b, N, N, C]`` and the embedded ``aux_t``.
    """

    def __init__(self, dim_y: int, points_per_unit: float, channels: int, net: GroupCNN,
                 margin: float, *, fixed_input: FixedInput | None = None,
                 aux_embedding: AuxiliaryEmbedding | None = None,
                 max_grid_mb: float = DEFAULT_MAX_GRID_MB) -> None:
        super().__init__()
        self.max_grid_mb = max_grid_mb
        # activations per grid point and task: the lifting and group convolutions hold
        # `channels · |G|` values per layer, the set convolution and pooling a few `channels`
        self.values_per_point = (channels * net.group.size * (len(net.layers) + 1)
                                 + 3 * net.in_channels)
        self.dim_y, self.points_per_unit, self.margin = dim_y, points_per_unit, margin
        self.setconv = isotropic_setconv_encoder(points_per_unit)
        self.pointwise = MLP(dim_y + 1, channels, hidden=channels, num_layers=1)
        self.fixed_input = fixed_input
        self.aux_embedding = aux_embedding
        self.net = net

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> GridRepresentation:
        axes, h = self.setconv_grid(xc, yc, xt, aux_c)
        z = self.grid_channels(axes, h, h[..., :self.dim_y], self.dim_y)
        aux_t_embedded = None if self.aux_embedding is None else self.aux_embedding(aux_t)
        return GridRepresentation(axes, self.net(z), xt, aux_t_embedded)

    def setconv_grid(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None
                     ) -> tuple[tuple[Tensor, ...], Tensor]:
        """The symmetric grid's axes (refused beyond ``max_grid_mb``) and the context values,
        with their auxiliary embedding, set-convolved onto it: ``[b, N, N, dim_y (+ A) + 1]``,
        the density last."""
        centre, n = symmetric_grid_extent([xc, xt], self.points_per_unit, self.margin)
        lo = [(c - n) / self.points_per_unit for c in centre.tolist()]
        hi = [(c + n) / self.points_per_unit for c in centre.tolist()]
        check_grid_budget("equivcnp", lo, hi, self.points_per_unit, [2 * n + 1] * 2,
                          xc.shape[0], self.values_per_point, xc.element_size(),
                          self.max_grid_mb)
        axes = symmetric_lattice_grid([xc, xt], self.points_per_unit, self.margin)
        data = yc
        if self.aux_embedding is not None:
            data = torch.cat([yc, self.aux_embedding(aux_c)], -1)
        return axes, self.setconv(xc, data, axes)

    def grid_channels(self, axes: tuple[Tensor, ...], h: Tensor, invariants: Tensor,
                      dim_values: int) -> Tensor:
        """The invariant channels on the grid: the point-wise map of ``invariants`` (of the
        ``dim_values`` set-convolved values) with the density, then the auxiliary channels and
        the fixed input at the grid points, if any."""
        parts = [self.pointwise(torch.cat([invariants, h[..., -1:]], -1))]
        if self.aux_embedding is not None:
            parts.append(h[..., dim_values:-1])
        if self.fixed_input is not None:
            b, grid = h.shape[0], h.shape[1:-1]
            # one copy of the grid per task: the fixed input's dropout is drawn per task
            pts = grid_points(axes).reshape(1, -1, 2).expand(b, -1, -1)
            parts.append(self.fixed_input(pts).reshape(b, *grid, -1))
        return torch.cat(parts, -1)


class EquivCNPDecoder(nn.Module):
    """Invariant grid representation → decoder outputs at the targets (isotropic set
    convolution, plus the target auxiliary embedding if any, then an MLP).

    Shapes: ``forward(rep)`` with a :class:`~approxeq.np.models.convcnp.GridRepresentation`
    (``z [b, N, N, C]``, ``xt [b, m, 2]``, embedded ``aux_t [b, m, C] | None``) returns
    ``[b, m, 2 dim_y]``.
    """

    def __init__(self, dim_y: int, points_per_unit: float, channels: int) -> None:
        super().__init__()
        self.setconv = isotropic_setconv_decoder(points_per_unit)
        self.mlp = MLP(channels, 2 * dim_y, hidden=channels, num_layers=1)

    def forward(self, rep: GridRepresentation) -> Tensor:
        h = self.setconv(rep.axes, rep.z, rep.xt)
        if rep.aux_t is not None:
            h = h + rep.aux_t
        return self.mlp(h)


class EquivCNP(NeuralProcess):
    """The EquivCNP: an :class:`EquivCNPEncoder` (context → invariant grid fields), an
    :class:`EquivCNPDecoder` (grid → targets), ``likelihood``.

    Attributes: ``dim_x = 2``, ``dim_y``, ``symmetry`` (the lattice subgroup of E(2) the model
    is exactly equivariant to: ``D4⋉hZ²`` for ``D4`` and ``D8``, ``C4⋉hZ²`` for ``C4`` and
    ``C8``, ``h = 1 / points_per_unit``), ``group`` (the point group of the CNN, a
    :class:`~approxeq.groups.Dihedral` or :class:`~approxeq.groups.Cyclic`), ``points_per_unit``,
    ``dim_aux``.

    Shapes: ``forward(xc [b, n, 2], yc [b, n, dim_y], xt [b, m, 2], aux_c [b, n, K] | None,
    aux_t [b, m, K] | None)`` returns a factorised Gaussian with batch shape
    ``[b, m, dim_y]``; ``n = 0`` is valid.
    """

    def __init__(self, dim_y: int, encoder: EquivCNPEncoder, decoder: EquivCNPDecoder,
                 likelihood: nn.Module) -> None:
        group = encoder.net.group.point_group
        symmetry = LatticeEuclidean(math.gcd(group.order, 4), reflections=group.reflections,
                                    spacing=1.0 / encoder.points_per_unit)
        emb = encoder.aux_embedding
        super().__init__(encoder, decoder, likelihood, dim_x=2, dim_y=dim_y, symmetry=symmetry,
                         dim_aux=0 if emb is None else emb.dim_aux,
                         approximate=encoder.fixed_input is not None)
        self.group: Dihedral = group

    @property
    def points_per_unit(self) -> float:
        return self.encoder.points_per_unit

    def fixed_input_reach(self, dtype: torch.dtype | None = None) -> float:
        """The group CNN's receptive field plus the decoder's set-convolution support, as for
        the ConvCNP (:meth:`~approxeq.np.models.convcnp.ConvCNP.fixed_input_reach`): the fixed
        input is non-zero only at grid points inside its domain, the group CNN carries a change
        ``receptive_field`` cells, and the decoder's weights are exactly 0 beyond
        :func:`~approxeq.nn.setconv.rbf_support` lengthscales. 0 without fixed inputs."""
        if not fixed_inputs(self):
            return 0.0
        dtype = dtype or model_dtype(self)
        return (self.encoder.net.receptive_field / self.points_per_unit
                + self.decoder.setconv.weights.support(dtype))
