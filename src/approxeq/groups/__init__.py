"""Groups as small typed values; elements are batched tensors."""

from approxeq.groups.base import Group
from approxeq.groups.finite import Cyclic, Dihedral, GridShift, point_group
from approxeq.groups.orthogonal import (
    SE,
    SO,
    E,
    Euclidean,
    O,
    Orthogonal,
    SpecialEuclidean,
    SpecialOrthogonal,
    haar_orthogonal,
)
from approxeq.groups.permutation import Permutation
from approxeq.groups.product import DirectProduct
from approxeq.groups.translation import Translation

__all__ = ["Group", "Translation"]
__all__ += [
    "Cyclic", "Dihedral", "GridShift", "point_group", "E", "O", "SE", "SO", "Euclidean",
    "Orthogonal",
    "SpecialEuclidean", "SpecialOrthogonal", "haar_orthogonal", "Permutation", "DirectProduct",
]
from approxeq.groups.lattice import LatticeEuclidean, point_group_matrices  # noqa: E402

__all__ += ["LatticeEuclidean", "point_group_matrices"]
from approxeq.groups.representation import OutputRep, output_rep  # noqa: E402

__all__ += ["OutputRep", "output_rep"]
