"""One way to make a base model equivariant by a strategy named in a configuration.

:func:`symmetrize` turns a strategy name (``"none"``, ``"ga"``, ``"fa"``, ``"canonical"``,
``"ps"``) into a :class:`~approxeq.symmetrize.Symmetrized` model (or, for ``"none"``, the bare
base behind :class:`Unsymmetrized`, which takes the same call). The graph, n-body and
graph-image models all go through it::

    model = symmetrize(net, Permutation(n_max), "ps", in_kinds=("nodes", "adjacency", "mask"),
                       out_kinds="invariant", network=lambda: GraphScoreNetwork(...),
                       ps_options={"tau": 0.01}, k_train=1, k_eval=10)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from approxeq.groups import Group
from approxeq.symmetrize.base import FrameAveraging, GroupAveraging, Symmetrized
from approxeq.symmetrize.probabilistic import Canonicalization, ProbabilisticSymmetrization

#: every strategy name :func:`symmetrize` knows
STRATEGIES = ("none", "ga", "fa", "canonical", "ps")


class Unsymmetrized(nn.Module):
    """A base model with the call of a symmetrised one: ``model(*inputs, generator=...,
    n_samples=...)`` is ``base(*inputs)`` (the sampling arguments are ignored), so that plain
    and symmetrised models are trained and evaluated alike."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, *inputs: Any, generator: Any = None, n_samples: int | None = None) -> Any:
        return self.base(*inputs)


def _names(strategies: Sequence[str]) -> str:
    quoted = [repr(s) for s in strategies]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def symmetrize(base: nn.Module, group: Group, strategy: str, *, in_kinds: Sequence[str],
               out_kinds: str | Sequence[str], network: Callable[[], nn.Module] | None = None,
               canonical_options: Mapping[str, Any] | None = None,
               ps_options: Mapping[str, Any] | None = None, k_train: int = 1, k_eval: int = 1,
               allowed: Sequence[str] = STRATEGIES) -> nn.Module:
    """``base`` made equivariant to ``group`` by ``strategy``.

    Args:
        base: the model, called as ``base(*inputs)`` on inputs of ``in_kinds``.
        group: the group (e.g. ``Permutation(n)``, or a direct product with ``Euclidean(3)``).
        strategy: ``"none"`` (:class:`Unsymmetrized`: no symmetry), ``"ga"`` (Monte-Carlo
            group averaging), ``"fa"`` (frame averaging), ``"canonical"`` (one element chosen
            by ``network()``: canonicalisation, ``k`` is 1) or ``"ps"`` (elements sampled by
            ``network()`` fed noise: probabilistic symmetrisation).
        in_kinds, out_kinds: how inputs and outputs transform (see
            :class:`~approxeq.symmetrize.Symmetrized`).
        network: builds the equivariant network of ``"canonical"`` and ``"ps"`` (called once,
            after ``base`` is built, so the initial weights follow in that order).
        canonical_options, ps_options: keyword arguments of
            :class:`~approxeq.symmetrize.Canonicalization` /
            :class:`~approxeq.symmetrize.ProbabilisticSymmetrization`.
        k_train, k_eval: samples per input in training / evaluation mode.
        allowed: the strategies the caller supports (others are refused naming these).

    Raises:
        ValueError: an unknown or unsupported ``strategy``, or ``"canonical"``/``"ps"`` without
            ``network``.
    """
    if strategy not in allowed or strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected {_names(allowed)}, got {strategy!r}")
    if strategy == "none":
        return Unsymmetrized(base)
    if strategy == "ga":
        strat: nn.Module = GroupAveraging(whole_group=False)
    elif strategy == "fa":
        strat = FrameAveraging()
    else:
        if network is None:
            raise ValueError(f"network: strategy {strategy!r} needs the network that chooses "
                             "the group elements")
        if strategy == "canonical":
            strat = Canonicalization(network(), **dict(canonical_options or {}))
            k_train = k_eval = 1
        else:
            strat = ProbabilisticSymmetrization(network(), **dict(ps_options or {}))
    return Symmetrized(base, group, strat, in_kinds=in_kinds, out_kinds=out_kinds,
                       n_samples_train=k_train, n_samples_eval=k_eval)


__all__ = ["STRATEGIES", "Unsymmetrized", "symmetrize"]
