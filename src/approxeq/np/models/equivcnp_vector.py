"""The EquivCNP for vector fields (``y_rep`` with vectors): steerable in the group CNN.

The context values are set-convolved onto the symmetric lattice grid as before (isotropic
weights commute with rotations, so a vector field on the grid still turns with the scene).
Then:

* the invariant part (each scalar, each vector's length, the density) goes through the
  point-wise MLP and the lifting convolution as the scalar EquivCNP's channels do (fixed inputs
  and auxiliary channels join it there, as invariant channels at absolute locations);
* each vector field is lifted into two regular fields of ``D_N``/``C_N``
  (:func:`~approxeq.np.models.vector_readout.lift_vectors`) and enters the first regular layer
  through a group convolution;
* after the group convolutions, pooling over the group gives the invariant features and a
  ``1 × 1`` group convolution followed by the standard read-out
  (:func:`~approxeq.np.models.vector_readout.read_vectors`) gives vector fields on the grid;
* both are set-convolved to the targets: vectors are the means (and, with a full covariance,
  the factors ``u``); invariants give the scalars and every raw spread.

Exactly equivariant to the model's ``symmetry`` (``D4⋉hZ²`` or ``C4⋉hZ²``) with ``ρ(g)``
turning the vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from approxeq.groups.representation import OutputRep
from approxeq.nn.group_conv import GroupCNN, GroupConv2d
from approxeq.nn.mlp import MLP
from approxeq.np.models.convcnp import GridRepresentation
from approxeq.np.models.equivcnp import (
    EquivCNPDecoder,
    EquivCNPEncoder,
)
from approxeq.np.models.vector_readout import lift_vectors, read_vectors


class VectorEquivCNPEncoder(EquivCNPEncoder):
    """Context set with vector values → invariant and vector fields on the grid (see the
    module docstring). Arguments as :class:`~approxeq.np.models.equivcnp.EquivCNPEncoder`,
    with ``rep`` in place of ``dim_y`` and ``full`` (read out two vectors per vector field:
    the mean and the covariance factor).

    Shapes: ``forward(xc [b, n, 2], yc [b, n, dim_y], xt [b, m, 2], aux_c=None, aux_t=None)``
    returns a :class:`~approxeq.np.models.convcnp.GridRepresentation` with
    ``z [b, N, N, C + 2 J]`` (``C`` invariant channels, then ``J`` vectors).
    """

    def __init__(self, rep: OutputRep, points_per_unit: float, channels: int, net: GroupCNN,
                 margin: float, *, full: bool = False, **kwargs) -> None:
        super().__init__(rep.num_invariants, points_per_unit, channels, net, margin, **kwargs)
        self.rep = rep
        self.num_out = rep.num_vectors * (2 if full else 1)
        group = net.group.point_group
        self.vector_conv = GroupConv2d(2 * rep.num_vectors, channels, net.lift.kernel_size,
                                       group, bias=False)
        self.readout = GroupConv2d(channels, 2 * self.num_out, 1, group)

    def _grid_inputs(self, xc: Tensor, yc: Tensor, xt: Tensor,
                     aux_c: Tensor | None) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        """The grid axes, the invariant channels ``[b, N, N, C_in]`` and the vector fields
        ``[b, K, 2, N, N]``."""
        axes, h = self.setconv_grid(xc, yc, xt, aux_c)
        dy = self.rep.dim
        vectors, _ = self.rep.split(h[..., :dy])
        z = self.grid_channels(axes, h, self.rep.invariants(h[..., :dy]), dy)
        v = torch.stack(vectors, 1).movedim(-1, 2)  # [b, K, 2, N, N]
        return axes, z, v

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> GridRepresentation:
        axes, z, v = self._grid_inputs(xc, yc, xt, aux_c)
        matrices = self.net.group.matrices
        h = self.net.lift(z.movedim(-1, 1)) + self.vector_conv(lift_vectors(v, matrices))
        for layer in self.net.layers:
            h = layer(torch.relu(h))
        h = torch.relu(h)
        invariant = self.net.pool(h)  # [b, C, N, N]
        out = read_vectors(self.readout(h), matrices).flatten(1, 2)  # [b, 2 J, N, N]
        grid = torch.cat([invariant, out], 1).movedim(1, -1)
        aux_t_embedded = None if self.aux_embedding is None else self.aux_embedding(aux_t)
        return GridRepresentation(axes, grid, xt, aux_t_embedded)


class VectorEquivCNPDecoder(EquivCNPDecoder):
    """Invariant and vector grid fields → the decoder output of a
    :class:`~approxeq.np.likelihood.RepresentationGaussian` at the targets: the isotropic set
    convolution carries both (a vector field stays one; vectors are interpolated, i.e. divided
    by the total weight at the target); the invariant features (plus the target auxiliary
    embedding) give the scalar means and raw spreads through an MLP.

    Shapes: ``forward(rep)`` with ``z [b, N, N, C + 2 J]`` returns
    ``[b, m, 2 dim_y (+ 2 num_vectors)]``.
    """

    def __init__(self, rep: OutputRep, points_per_unit: float, channels: int,
                 full: bool = False) -> None:
        super().__init__(rep.dim, points_per_unit, channels)
        self.rep, self.channels = rep, channels
        self.mlp = MLP(channels, rep.num_scalars + rep.dim, hidden=channels, num_layers=1)

    def forward(self, rep: GridRepresentation) -> Tensor:
        grid = rep
        ones = torch.ones_like(grid.z[..., :1])
        h = self.setconv(grid.axes, torch.cat([grid.z, ones], -1), grid.xt)
        # the vectors are interpolated (divided by the weights' total, an invariant), so their
        # scale does not grow with the grid density
        weight = h[..., -1:].unsqueeze(-1)
        inv = h[..., :self.channels]
        vec = h[..., self.channels:-1].unflatten(-1, (-1, 2)) / weight
        if grid.aux_t is not None:
            inv = inv + grid.aux_t
        out = self.mlp(inv)
        k = self.rep.num_vectors
        scalars, raw = out[..., :self.rep.num_scalars], out[..., self.rep.num_scalars:]
        means = self.rep.merge([vec[..., j, :] for j in range(k)], scalars)
        return torch.cat([means, raw, vec[..., k:, :].flatten(-2)], -1)


def vector_parts(rep: OutputRep, points_per_unit: float, channels: int, net: GroupCNN,
                 margin: float, *, full: bool, **encoder_options
                 ) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of a vector EquivCNP (the builder's branch for ``y_rep`` with
    vectors)."""
    encoder = VectorEquivCNPEncoder(rep, points_per_unit, channels, net, margin, full=full,
                                    **encoder_options)
    return encoder, VectorEquivCNPDecoder(rep, points_per_unit, channels, full)
