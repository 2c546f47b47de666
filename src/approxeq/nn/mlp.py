"""Multi-layer perceptrons acting on the last (channel) dimension."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(activation: str | Callable[[], nn.Module]) -> nn.Module:
    """An activation module from a name (``"relu"``, ``"gelu"``, ``"silu"``, ``"tanh"``,
    ``"elu"``, ``"leaky_relu"``) or from a zero-argument factory such as ``nn.ReLU``."""
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation: unknown name {activation!r}; "
                             f"expected one of {sorted(_ACTIVATIONS)}")
        return _ACTIVATIONS[activation]()
    if callable(activation):
        module = activation()
        if not isinstance(module, nn.Module):
            raise TypeError(f"activation: the factory returned {type(module).__name__}, "
                            "expected an nn.Module")
        return module
    raise TypeError(f"activation: expected a name or an nn.Module factory, got {activation!r}")


class MLP(nn.Module):
    """``num_layers`` hidden layers of width ``hidden`` (linear, then activation), then a linear
    output layer; ``num_layers = 0`` is a single linear map.

    Args:
        in_dim: input channels. out_dim: output channels.
        hidden: width of every hidden layer. num_layers: number of hidden layers.
        activation: a name (see :func:`make_activation`) or an ``nn.Module`` factory.

    Shapes: ``forward(x)`` maps ``[..., in_dim]`` to ``[..., out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, num_layers: int = 2,
                 activation: str | Callable[[], nn.Module] = "relu") -> None:
        super().__init__()
        for name, value, low in (("in_dim", in_dim, 1), ("out_dim", out_dim, 1),
                                 ("hidden", hidden, 1), ("num_layers", num_layers, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers: list[nn.Module] = []
        width_in = in_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width_in, hidden), make_activation(activation)]
            width_in = hidden
        layers.append(nn.Linear(width_in, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected [..., {self.in_dim}] channels, got {tuple(x.shape)}")
        return self.net(x)
