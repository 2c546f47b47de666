"""The spread over training seeds: one ``metrics.json`` from the ``metrics.json`` of each seed's
run (see :mod:`approxeq.experiments.seeds` for the fields), used by multi-seed runs and by their
re-evaluation."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

#: the metrics averaged over seeds (wherever they appear in an entry)
SEED_METRICS = ("loglik", "rmse", "rmse_K", "coverage95", "component_loglik", "delta_equiv",
                "delta_equiv_K", "correction_lapse_corr", "correction_oracle_corr",
                "correction_elevation_corr", "correction_land_height_corr",
                "correction_land_corr",
                "gain_over_component", "gain_over_exact")


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean of ``values`` and its standard error (NaN for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def aggregate_block(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One block (dict) of an entry from the same block of every seed's entry (see the module
    docstring); nested blocks are aggregated recursively, other values taken from seed 0. A
    metric or nested block that some seed lacks is left out (with its ``_se``): a mean over
    fewer seeds than the entry's ``seeds`` would misreport."""
    out = copy.deepcopy(dict(blocks[0]))
    for key, first in blocks[0].items():
        if isinstance(first, dict):
            if all(isinstance(b.get(key), dict) for b in blocks):
                out[key] = aggregate_block([b[key] for b in blocks])
            else:
                del out[key]
        elif key in SEED_METRICS and all(_number(b.get(key)) for b in blocks):
            values = [float(b[key]) for b in blocks]
            mean, se = mean_and_se(values)
            out[key] = mean
            out[f"{key}_seeds"] = values
            out[f"{key}_seeds_mean"], out[f"{key}_seeds_se"] = mean, se
            if all(_number(b.get(f"{key}_se")) for b in blocks):
                out[f"{key}_se"] = sum(float(b[f"{key}_se"]) for b in blocks) / len(blocks)
            else:
                out.pop(f"{key}_se", None)
        elif key in SEED_METRICS and any(_number(b.get(key)) for b in blocks):
            del out[key]
            out.pop(f"{key}_se", None)
    return out


def failed_entry(entries: Sequence[Mapping[str, Any]], names: Sequence[str]
                 ) -> dict[str, Any] | None:
    """The aggregate entry of a model that some seed could not evaluate (its entry there is
    ``{"failed": reason}``): ``failed`` names each such seed and why, and ``failed_seeds``
    lists them; ``None`` when every seed evaluated it."""
    bad = [(name, e["failed"]) for name, e in zip(names, entries) if "failed" in e]
    if not bad:
        return None
    entry = {k: entries[0][k] for k in ("name", "options") if k in entries[0]}
    entry["failed"] = "; ".join(f"{name}: {why}" for name, why in bad)
    entry["failed_seeds"] = [name for name, _ in bad]
    return entry


def aggregate_seeds(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                    names: Sequence[str] | None = None) -> dict[str, Any]:
    """``metrics.json`` over seeds from the ``metrics.json`` of each seed's run; each entry
    gets ``seeds``. A model that a seed could not evaluate (``{"failed": ...}`` there, e.g.
    under ``eval --skip-missing``) is reported as failed, naming the seed (``names``: the
    runs' folders, default ``seed-<i>``), never as a mean over the other seeds; a model
    missing from some run's metrics (``only``) is left out."""
    if not runs or len(runs) != len(seeds):
        raise ValueError(f"runs, seeds: expected one metrics dict per seed, got {len(runs)} "
                         f"runs and {len(seeds)} seeds")
    names = list(names) if names is not None else [f"seed-{i}" for i in range(len(runs))]
    out: dict[str, Any] = {}
    for label in runs[0]:
        entries = [r.get(label) for r in runs]
        if not all(isinstance(e, dict) for e in entries):
            continue  # not evaluated in some run at all (``only``): left out
        out[label] = failed_entry(entries, names) or aggregate_block(entries)
        out[label]["seeds"] = list(seeds)
    return out


__all__ = ["SEED_METRICS", "aggregate_block", "aggregate_seeds", "failed_entry", "mean_and_se"]
