"""The studies: one plug-in per subpackage (``gp``, ``era5``, ``terrain``, ``smoke``, ``graphs``,
``nbody``, ``pattern``). Each implements :class:`~approxeq.experiments.base.Experiment` (or one
of its two templates), registers itself on import with
:func:`~approxeq.experiments.base.register_experiment`, and never imports a sibling study; the
framework finds them here without naming them (:mod:`approxeq.experiments.registry`).
"""
