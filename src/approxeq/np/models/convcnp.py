"""The convolutional conditional neural process (ConvCNP), exact and approximately equivariant.

Pipeline: set convolution of ``[y, 1]`` onto a grid built around the data → point-wise MLP
(``dim_y + 1 -> C``) → CNN or UNet → set convolution back to the targets → MLP
(``C -> 2 dim_y``) → heteroscedastic Gaussian. Because the grid is snapped to multiples of
``1 / points_per_unit`` and moves with the data, the model is exactly equivariant to
``Translation(dim_x, spacing=1 / points_per_unit)``.

With ``approximate=True`` a learned fixed input ``t(x)`` (Ashman et al., 2024) is evaluated on
the grid and summed into (or concatenated with) the channels after the point-wise MLP; inside
:func:`~approxeq.approximate.equivariant_component` it is zero and the model is the exact
ConvCNP.

With ``dim_aux > 0`` known auxiliary fields (elevation, land mask) are read at the context and
target locations: the embedded context values are set-convolved onto the grid and added to its
channels, the embedded target values are added to the decoder's input. Their embeddings are
:class:`~approxeq.approximate.AuxiliaryEmbedding` modules, zero inside the equivariant component.

Defaults (by grid dimension and CNN type):

=========  =====  ==================  ===========  ==========================================
cnn        dim_x  points_per_unit     kernel_size  why
=========  =====  ==================  ===========  ==========================================
``conv``   1      16                  9            AE-NP paper: 128 points over [-4, 4]
``conv``   2      8                   5            receptive field ~2.6 units with 5 layers
``unet``   1      64                  9            neuralprocesses' 1-D setting
``unet``   2      16                  5
=========  =====  ==================  ===========  ==========================================

``margin`` defaults to 8 grid cells (``8 / points_per_unit``), room for the set-convolution
kernels (initial lengthscale ``2 / points_per_unit``) at the edge of the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from approxeq.approximate.auxiliary import AuxiliaryEmbedding
from approxeq.approximate.fixed_inputs import FixedInput
from approxeq.approximate.reach import fixed_inputs, model_dtype
from approxeq.groups.translation import Translation
from approxeq.nn.cnn import build_cnn
from approxeq.nn.mlp import MLP
from approxeq.nn.setconv import SetConvDecoder, SetConvEncoder, grid_points, lattice_grid
from approxeq.np.base import NeuralProcess
from approxeq.np.likelihood import HeteroscedasticGaussian
from approxeq.np.models.common import (
    DEFAULT_MAX_GRID_MB,
    FixedInputKind,
    YRep,
    check_grid_budget,
    fixed_input_options,
    grid_fixed_input,
    with_output_rep,
)
from approxeq.np.registry import register_model

#: (cnn, dim_x) -> default points_per_unit
DEFAULT_POINTS_PER_UNIT = {("conv", 1): 16, ("conv", 2): 8, ("unet", 1): 64, ("unet", 2): 16}
#: dim_x -> default kernel size
DEFAULT_KERNEL_SIZE = {1: 9, 2: 5}
#: margin around the data, in grid cells
DEFAULT_MARGIN_CELLS = 8

#: ``f(kind, dim, in_channels, channels, num_layers, kernel_size) -> network`` on the grid,
#: channels-last, ``forward(z, coords)``, with attribute ``grid_multiple``
NetFactory = Callable[[str, int, int, int, int, int], nn.Module]


@dataclass
class GridRepresentation:
    """What a grid encoder hands its decoder: the grid ``axes`` (``dim_x`` tensors ``[n_i]``),
    the representation on it ``z [b, n_1, ..., n_d, C]``, the targets ``xt [b, m, dim_x]`` and
    their auxiliary values ``aux_t [b, m, dim_aux]`` (or their embedding; ``None`` without)."""

    axes: tuple[Tensor, ...]
    z: Tensor
    xt: Tensor
    aux_t: Tensor | None = None


def grid_cells(points: Sequence[Tensor], points_per_unit: float, margin: float,
               multiple: int = 1) -> tuple[list[float], list[float], list[int]]:
    """The box ``lo, hi`` (with the margin) and the points per axis of the grid
    :func:`~approxeq.nn.setconv.lattice_grid` would build, computed without building it."""
    dim_x = points[0].shape[-1]
    flat = torch.cat([p.detach().reshape(-1, dim_x) for p in points], 0)
    if flat.shape[0] == 0:
        lo = hi = [0.0] * dim_x
    else:
        lo, hi = flat.min(0).values.tolist(), flat.max(0).values.tolist()
    cells = []
    for a, b in zip(lo, hi):
        n = math.ceil((b + margin) * points_per_unit) - math.floor((a - margin) * points_per_unit)
        cells.append(math.ceil((n + 1) / multiple) * multiple)
    return [a - margin for a in lo], [b + margin for b in hi], cells


class ConvCNPEncoder(nn.Module):
    """Context set → grid representation.

    Args:
        dim_x, dim_y: data dimensions. points_per_unit: grid density. channels: width C.
        net: network on the grid (``forward(z, coords)``, attribute ``grid_multiple``) taking
            ``C`` channels, or ``C + B`` with a concatenated fixed input.
        margin: room around the data. fixed_input: optional fixed input ``t`` with ``B``
            channels. fixed_input_mode: ``"sum"`` (``t`` projected to ``C`` channels if
            ``B != C``, then added) or ``"concat"``.
        dim_aux: auxiliary channels at the context points (0 = none); aux_dropout: per-task
            dropout probability of their embedding in training.
        name: the model's name (for errors). num_layers: layers of ``net`` (for the memory
            estimate). max_grid_mb: memory budget of the grid's activations; a larger grid is
            refused before it is allocated.

    Shapes: ``forward(xc, yc, xt, aux_c=None, aux_t=None)`` with ``aux_c [b, n, dim_aux]``
    returns a :class:`GridRepresentation` (``aux_t`` is passed through to the decoder).
    """

    def __init__(self, dim_x: int, dim_y: int, points_per_unit: float, channels: int,
                 net: nn.Module, margin: float, *, fixed_input: FixedInput | None = None,
                 fixed_input_mode: str = "sum", dim_aux: int = 0,
                 aux_dropout: float = 0.0, name: str = "convcnp", num_layers: int = 5,
                 max_grid_mb: float = DEFAULT_MAX_GRID_MB, setconv: nn.Module | None = None,
                 pointwise: nn.Module | None = None) -> None:
        super().__init__()
        self.name, self.max_grid_mb = name, max_grid_mb
        # activations per grid point and task: the CNN's layers, its input and the set
        # convolution's output, each about `channels` wide (plus a concatenated fixed input)
        self.values_per_point = (channels + (fixed_input.num_channels if fixed_input is not None
                                             else 0)) * (num_layers + 3)
        if fixed_input_mode not in ("sum", "concat"):
            raise ValueError(
                f"fixed_input_mode: expected 'sum' or 'concat', got {fixed_input_mode!r}")
        self.dim_x, self.points_per_unit, self.margin = dim_x, points_per_unit, margin
        self.setconv = setconv or SetConvEncoder(dim_x, 2.0 / points_per_unit)
        self.pointwise = pointwise or MLP(dim_y + 1, channels, hidden=channels, num_layers=1)
        self.fixed_input = fixed_input
        self.fixed_input_mode = fixed_input_mode
        self.fixed_input_proj: nn.Module | None = None
        if (fixed_input is not None and fixed_input_mode == "sum"
                and fixed_input.num_channels != channels):
            # A linear map without bias keeps t = 0 ⇒ no contribution.
            self.fixed_input_proj = nn.Linear(fixed_input.num_channels, channels, bias=False)
        self.net = net
        self.aux_embedding: AuxiliaryEmbedding | None = None
        if dim_aux > 0:
            self.aux_embedding = AuxiliaryEmbedding(dim_aux, channels, hidden=channels,
                                                    p=aux_dropout)
            self.aux_setconv = SetConvEncoder(dim_x, 2.0 / points_per_unit)

    def forward(self, xc: Tensor, yc: Tensor, xt: Tensor, aux_c: Tensor | None = None,
                aux_t: Tensor | None = None) -> GridRepresentation:
        lo, hi, cells = grid_cells([xc, xt], self.points_per_unit, self.margin,
                                   self.net.grid_multiple)
        check_grid_budget(self.name, lo, hi, self.points_per_unit, cells, xc.shape[0],
                          self.values_per_point, xc.element_size(), self.max_grid_mb)
        axes = lattice_grid([xc, xt], self.points_per_unit, self.margin,
                            multiple=self.net.grid_multiple)
        coords = grid_points(axes)  # [*grid, dim_x]
        z = self.pointwise(self.setconv(xc, yc, axes))
        if self.aux_embedding is not None:
            # The embedding is set-convolved (not the raw values), so a zeroed embedding adds
            # exactly nothing; the density channel is already in z.
            z = z + self.aux_setconv(xc, self.aux_embedding(aux_c), axes)[..., :-1]
        if self.fixed_input is not None:
            b, grid = z.shape[0], z.shape[1:-1]
            # One copy of the grid per task: the fixed input's dropout is drawn per task.
            pts = coords.reshape(1, -1, self.dim_x).expand(b, -1, -1)
            t = self.fixed_input(pts).reshape(b, *grid, -1)
            if self.fixed_input_mode == "sum":
                z = z + (t if self.fixed_input_proj is None else self.fixed_input_proj(t))
            else:
                z = torch.cat([z, t], -1)
        return GridRepresentation(axes, self.net(z, coords), xt, aux_t)


class ConvCNPDecoder(nn.Module):
    """Grid representation → decoder outputs at the targets.

    With ``dim_aux > 0`` the embedded auxiliary values at the targets are added to the
    set-convolution output before the MLP. ``setconv`` and ``mlp`` replace the defaults.

    Shapes: ``forward(rep)`` with a :class:`GridRepresentation` (``z [b, *grid, C]``,
    ``xt [b, m, dim_x]``, ``aux_t [b, m, dim_aux]``) returns ``[b, m, 2 dim_y]``.
    """

    def __init__(self, dim_x: int, dim_y: int, points_per_unit: float, channels: int,
                 dim_aux: int = 0, aux_dropout: float = 0.0, *,
                 setconv: nn.Module | None = None, mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.setconv = setconv or SetConvDecoder(dim_x, 2.0 / points_per_unit)
        self.mlp = mlp or MLP(channels, 2 * dim_y, hidden=channels, num_layers=1)
        self.aux_embedding = (AuxiliaryEmbedding(dim_aux, channels, hidden=channels, p=aux_dropout)
                              if dim_aux > 0 else None)

    def forward(self, rep: GridRepresentation) -> Tensor:
        h = self.setconv(rep.axes, rep.z, rep.xt)
        if self.aux_embedding is not None:
            h = h + self.aux_embedding(rep.aux_t)
        return self.mlp(h)


class ConvCNP(NeuralProcess):
    """A ConvCNP: a :class:`ConvCNPEncoder` (context → grid), a :class:`ConvCNPDecoder` (grid →
    targets), ``likelihood``.

    Attributes: ``dim_x``, ``dim_y``, ``symmetry`` (``Translation(dim_x, spacing=1 /
    points_per_unit)``), ``points_per_unit``, ``dim_aux``.

    Shapes: ``forward(xc [b, n, dim_x], yc [b, n, dim_y], xt [b, m, dim_x], aux_c=None
    [b, n, dim_aux], aux_t=None [b, m, dim_aux])`` returns a factorised Gaussian with batch
    shape ``[b, m, dim_y]``; ``n = 0`` is valid.
    """

    def __init__(self, dim_x: int, dim_y: int, encoder: ConvCNPEncoder, decoder: ConvCNPDecoder,
                 likelihood: nn.Module, *, name: str = "convcnp",
                 approximate: bool = False) -> None:
        emb = getattr(encoder, "aux_embedding", None)
        super().__init__(encoder, decoder, likelihood, dim_x=dim_x, dim_y=dim_y,
                         symmetry=Translation(dim_x, spacing=1.0 / encoder.points_per_unit),
                         dim_aux=0 if emb is None else emb.dim_aux, approximate=approximate,
                         name=name)

    @property
    def points_per_unit(self) -> float:
        return self.encoder.points_per_unit

    def fixed_input_reach(self, dtype: torch.dtype | None = None) -> float:
        """The grid network's receptive field plus the decoder's set-convolution support.

        A fixed input is non-zero only at grid points inside its domain (or, in a relaxed
        convolution, changes the outputs there only); the grid network carries a change at
        most ``receptive_field`` cells, and the decoder's weights are exactly 0 beyond
        :func:`~approxeq.nn.setconv.rbf_support` lengthscales in ``dtype``. So a target farther
        than ``receptive_field / points_per_unit + rbf_support(dtype) * lengthscale`` from the
        domain (along some axis) is predicted from unchanged grid values. The grid's margin does
        not enter: it sets how far the grid extends beyond the data, not how far a change on it
        travels. 0 without fixed inputs."""
        if not fixed_inputs(self):
            return 0.0
        dtype = dtype or model_dtype(self)
        return (self.encoder.net.receptive_field / self.points_per_unit
                + self.decoder.setconv.weights.support(dtype))


def check_grid_dim_x(name: str, dim_x: int) -> None:
    """Conv models run a CNN on a ``dim_x``-dimensional grid: only 1-D and 2-D are supported."""
    if dim_x not in (1, 2):
        raise ValueError(f"dim_x: {name} supports dim_x = 1 or 2 (its CNN runs on a "
                         f"dim_x-dimensional grid), got dim_x = {dim_x}; for higher-dimensional "
                         "inputs use an attention model such as 'te-tnp'")


def assemble_convcnp(dim_x: int, dim_y: int, *, name: str, net_factory: NetFactory,
                     cnn: str = "conv", points_per_unit: float | None = None,
                     channels: int = 32, num_layers: int = 5, kernel_size: int | None = None,
                     margin: float | None = None, min_std: float = 1e-3,
                     fixed_input: FixedInput | None = None, fixed_input_mode: str = "sum",
                     fixed_input_channels: int = 0, dim_aux: int = 0,
                     aux_dropout: float = 0.0, approximate: bool = False,
                     max_grid_mb: float = DEFAULT_MAX_GRID_MB,
                     layout: str = "approxeq", banded_setconv: bool = False) -> ConvCNP:
    """Build a ConvCNP around the grid network made by ``net_factory`` (shared by ``convcnp``
    and ``relaxed-convcnp``). ``fixed_input_channels`` is the number of channels a
    concatenated fixed input adds to the network's input; ``dim_aux`` the auxiliary channels
    read at the context and target points; ``max_grid_mb`` the memory budget of the grid;
    ``layout="neuralprocesses"`` the network of neuralprocesses' ``construct_convgnp`` (see
    :func:`convcnp`); ``banded_setconv`` the banded set convolutions (1-D)."""
    check_grid_dim_x(name, dim_x)
    if banded_setconv and dim_x != 1:
        raise ValueError(f"banded_setconv: supported for dim_x = 1 only, got dim_x = {dim_x}")
    if cnn not in ("conv", "unet"):
        raise ValueError(f"cnn: expected 'conv' or 'unet', got {cnn!r}")
    if points_per_unit is None:
        points_per_unit = DEFAULT_POINTS_PER_UNIT[cnn, dim_x]
    if not points_per_unit > 0:
        raise ValueError(f"points_per_unit: expected a positive number, got {points_per_unit!r}")
    if kernel_size is None:
        kernel_size = DEFAULT_KERNEL_SIZE[dim_x]
    if margin is None:
        margin = DEFAULT_MARGIN_CELLS / points_per_unit
    parts: dict[str, dict[str, nn.Module]] = {"encoder": {}, "decoder": {}}
    if layout == "neuralprocesses":
        # set convolutions with one lengthscale straight into a UNet without input and output
        # blocks, whose last layer maps to the likelihood's 2 dim_y channels on the grid
        net = build_cnn("unet", dim_x, dim_y + 1, channels, num_layers, kernel_size,
                        io_blocks=False, out_channels=2 * dim_y)
        parts["encoder"] = {"setconv": SetConvEncoder(dim_x, 1.0 / points_per_unit,
                                                      shared_lengthscale=True,
                                                      banded=banded_setconv),
                            "pointwise": nn.Identity()}
        parts["decoder"] = {"setconv": SetConvDecoder(dim_x, 1.0 / points_per_unit,
                                                      shared_lengthscale=True,
                                                      banded=banded_setconv),
                            "mlp": nn.Identity()}
    else:
        net = net_factory(cnn, dim_x, channels + fixed_input_channels, channels, num_layers,
                          kernel_size)
        if banded_setconv:
            parts["encoder"] = {"setconv": SetConvEncoder(dim_x, 2.0 / points_per_unit,
                                                          banded=True)}
            parts["decoder"] = {"setconv": SetConvDecoder(dim_x, 2.0 / points_per_unit,
                                                          banded=True)}
    encoder = ConvCNPEncoder(dim_x, dim_y, points_per_unit, channels, net, margin,
                             fixed_input=fixed_input, fixed_input_mode=fixed_input_mode,
                             dim_aux=dim_aux, aux_dropout=aux_dropout, name=name,
                             num_layers=num_layers, max_grid_mb=max_grid_mb,
                             **parts["encoder"])
    decoder = ConvCNPDecoder(dim_x, dim_y, points_per_unit, channels, dim_aux, aux_dropout,
                             **parts["decoder"])
    return ConvCNP(dim_x, dim_y, encoder, decoder, HeteroscedasticGaussian(min_std), name=name,
                   approximate=approximate)


@register_model("convcnp")
def convcnp(dim_x: int, dim_y: int, *, approximate: bool = False,
            cnn: Literal["conv", "unet"] = "conv",
            points_per_unit: float | None = None, channels: int = 32, num_layers: int = 5,
            kernel_size: int | None = None, margin: float | None = None, min_std: float = 1e-3,
            num_fixed_inputs: int | None = None,
            fixed_input_domain: Sequence[Sequence[float]] | None = None,
            fixed_input_dropout: float = 0.5,
            fixed_input_mode: Literal["sum", "concat"] = "sum",
            fixed_input_hidden: int | None = None, fourier_features: int = 0,
            fixed_input_kind: FixedInputKind = "mlp", grid_levels: int = 6,
            grid_coarsest: int = 4, grid_finest: int = 128, grid_features: int = 4,
            grid_smoothness: float = 0.0, fixed_input_lr: float = 1.0,
            dim_aux: int = 0, aux_dropout: float = 0.0,
            max_grid_mb: float = DEFAULT_MAX_GRID_MB,
            layout: Literal["approxeq", "neuralprocesses"] = "approxeq",
            banded_setconv: bool = False, y_rep: YRep = "scalar") -> ConvCNP:
    """ConvCNP (translation equivariant on the grid lattice); approximate=True adds fixed inputs.

    Args:
        dim_x: 1 or 2. dim_y: >= 1.
        approximate: add a learned fixed input on the grid (ATE-ConvCNP).
        cnn: ``"conv"`` (``num_layers`` ReLU-conv blocks) or ``"unet"`` (``num_layers``
            down-sampling levels). points_per_unit, kernel_size, margin: see the module
            docstring for defaults. channels: width C. min_std: floor of the predictive std.
        num_fixed_inputs: fixed-input channels B (default C). fixed_input_domain: box outside
            which the fixed input is zero (default ``[(-2, 2)] * dim_x``).
        fixed_input_dropout: per-task dropout probability of the fixed input in training.
        fixed_input_mode: ``"sum"`` into the channels or ``"concat"`` as extra channels.
        fixed_input_hidden: MLP width of the fixed input (default C).
        fourier_features: Fourier features of the location for the fixed input (0 = none).
        fixed_input_kind: the fixed input's parameterisation, ``"mlp"`` (default),
            ``"grid"`` or ``"grid-linear"``; grid_levels, grid_coarsest, grid_finest,
            grid_features, grid_smoothness: its grid; fixed_input_lr: its learning-rate
            multiplier (see :class:`~approxeq.approximate.FixedInput`).
        dim_aux: channels of known auxiliary fields read at the context and target points
            (``forward(..., aux_c=, aux_t=)``; 0 = none). aux_dropout: per-task dropout
            probability of their embedding in training.
        max_grid_mb: memory budget (MiB) of the activations on the grid; a task whose inputs
            span a grid larger than that is refused before anything is allocated.
        layout: ``"approxeq"``, or ``"neuralprocesses"`` for the network of neuralprocesses'
            ``construct_convgnp`` (``cnn="unet"`` only, no fixed inputs or auxiliary data): set
            convolutions with one lengthscale for all dimensions (initially
            ``1 / points_per_unit``), whose channels go straight into a UNet without input and
            output blocks and with a final linear map ``C -> 2 dim_y`` on the grid
            (:class:`~approxeq.nn.cnn.UNet` with ``io_blocks=False, out_channels=2 dim_y``),
            and a decoder that is the set convolution alone.
        banded_setconv: 1-D only: set convolutions that weigh each point against only the
            grid cells where its RBF weight is not flushed to 0
            (:mod:`approxeq.nn.setconv_banded`); the same model up to float rounding, cheaper
            on a wide grid. Off by default: the published tables were made with the dense ones.
        y_rep: the outputs' representation (``"scalar"``); translations leave vectors
            unchanged, so the model is the same for every ``y_rep``.

    Returns:
        A :class:`ConvCNP` with ``symmetry = Translation(dim_x, spacing=1 / points_per_unit)``.
    """
    check_grid_dim_x("convcnp", dim_x)
    if layout == "neuralprocesses" and (cnn != "unet" or approximate or dim_aux):
        raise ValueError("layout: 'neuralprocesses' needs cnn='unet', approximate=False and "
                         f"dim_aux=0, got cnn={cnn!r}, approximate={approximate}, "
                         f"dim_aux={dim_aux}")
    fixed_input = grid_fixed_input(
        dim_x, approximate=approximate, num_fixed_inputs=num_fixed_inputs,
        default_channels=channels, domain=fixed_input_domain,
        hidden=fixed_input_hidden or channels, p=fixed_input_dropout,
        fourier_features=fourier_features,
        **fixed_input_options(fixed_input_kind, grid_levels, grid_coarsest, grid_finest,
                              grid_features, grid_smoothness, fixed_input_lr))
    extra_channels = (fixed_input.num_channels if fixed_input is not None
                      and fixed_input_mode == "concat" else 0)
    model = assemble_convcnp(dim_x, dim_y, name="convcnp", net_factory=build_cnn, cnn=cnn,
                             points_per_unit=points_per_unit, channels=channels,
                             num_layers=num_layers, kernel_size=kernel_size, margin=margin,
                             min_std=min_std, fixed_input=fixed_input,
                             fixed_input_mode=fixed_input_mode,
                             fixed_input_channels=extra_channels, dim_aux=dim_aux,
                             aux_dropout=aux_dropout, approximate=approximate,
                             max_grid_mb=max_grid_mb, layout=layout,
                             banded_setconv=banded_setconv)
    # translations leave vectors unchanged: the model is the same for every y_rep
    return with_output_rep(model, y_rep, dim_x, dim_y)
