"""Groups as small typed values; elements are batched tensors."""

from approxeq.groups.base import Group
from approxeq.groups.translation import Translation

__all__ = ["Group", "Translation"]
