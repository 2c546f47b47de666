"""The GP study's old import path, kept for :mod:`approxeq.plot.experiment` (which imports
``context_region`` and ``ood_shift`` from here); new code imports
:mod:`approxeq.experiments.studies.gp`."""

from approxeq.experiments.studies.gp import context_region, ood_shift

__all__ = ["context_region", "ood_shift"]
