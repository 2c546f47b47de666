"""Any ``nn.Module`` made exactly equivariant: averaging, frames, canonicalisation and
probabilistic symmetrisation."""

from approxeq.symmetrize.base import (
    KINDS,
    FrameAveraging,
    GroupAveraging,
    GroupSample,
    Strategy,
    Symmetrized,
    SymmetrizedOutput,
    gram_schmidt,
    sinkhorn,
)
from approxeq.symmetrize.networks import GraphScoreNetwork, PointCloudFrameNetwork
from approxeq.symmetrize.probabilistic import Canonicalization, ProbabilisticSymmetrization

__all__ = [
    "KINDS", "Canonicalization", "FrameAveraging", "GroupAveraging", "GroupSample",
    "ProbabilisticSymmetrization", "Strategy", "Symmetrized", "SymmetrizedOutput",
    "gram_schmidt", "sinkhorn", "GraphScoreNetwork", "PointCloudFrameNetwork",
]
