"""Kept for older test imports: the helpers live in :mod:`approxeq.testing`."""
from approxeq.testing import *
