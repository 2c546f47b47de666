"""Result tables of the neural-process experiments: per model and setting the log-likelihood
± s.e., the equivariant component's, Δequiv and the orbit equivariance error."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _settings(metrics: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for entry in metrics.values():
        for k, v in entry.items():
            if isinstance(v, dict) and "loglik" in v and k != "component" and k not in found:
                found.append(k)
    return found


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_se(value: Any, se: Any = None, digits: int = 3, *, sign: bool = False,
            seeds_se: Any = None) -> str:
    """The one ``mean ± s.e.`` formatter of every results table: ``"–"`` when ``value`` is
    absent (``None`` or NaN), else ``value`` with ``digits`` decimals (and its sign with
    ``sign``), ``± se`` when ``se`` is given and ``(seeds ± seeds_se)`` when the standard error
    over training seeds is."""
    if _missing(value):
        return "–"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    if not _missing(se):
        text += f" ± {se:.{digits}f}"
    if not _missing(seeds_se):
        text += f" (seeds ± {seeds_se:.{digits}f})"
    return text


def cell(block: Mapping[str, Any] | None, key: str, digits: int = 3, *, task_se: bool = True,
         sign: bool = False) -> str:
    """``block[key]`` as a table cell (:func:`mean_se`): ``"–"`` when absent, ``± <key>_se``
    (the per-task standard error, with ``task_se``) and, after a run of several seeds,
    ``(seeds ± <key>_seeds_se)``: the standard error over seeds that the seeds footnote
    promises."""
    block = block or {}
    return mean_se(block.get(key), block.get(f"{key}_se") if task_se else None, digits,
                   sign=sign, seeds_se=block.get(f"{key}_seeds_se"))


def results_table(metrics: Mapping[str, Any]) -> list[list[str]]:
    """Rows (header first) of the results table: per model and setting the mean
    log-likelihood ± s.e., for approximate models the equivariant component's log-likelihood
    and Δequiv, and the orbit equivariance error."""
    settings = _settings(metrics)
    header = ["model"] + [f"log-lik {s.upper()}" for s in settings]
    header += [f"component {s.upper()}" for s in settings]
    header += [f"Δequiv {s.upper()}" for s in settings]
    header += ["equiv. error (max)"]
    rows = [header]
    for label, entry in metrics.items():
        row = [label]
        row += [cell(entry.get(s), "loglik") for s in settings]
        row += [cell(entry.get(s), "component_loglik") for s in settings]
        row += [cell(entry.get(s), "delta_equiv", 4) for s in settings]
        eq = entry.get(settings[0], {}).get("equivariance") if settings else None
        if eq:
            text = f"{eq['equiv_err_max']:.2e}"
            if "component_equiv_err_max" in eq:
                text += f" (component {eq['component_equiv_err_max']:.1e})"
            row.append(text)
        else:
            row.append("–")
        rows.append(row)
    return rows


def format_table(rows: list[list[str]], markdown: bool = True) -> str:
    """``rows`` as a markdown table (or aligned plain text with ``markdown=False``)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(r, widths)]
        lines.append(("| " + " | ".join(cells) + " |") if markdown else "  ".join(cells))
        if j == 0:
            lines.append(("|" + "|".join("-" * (w + 2) for w in widths) + "|") if markdown
                         else "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_markdown(metrics: Mapping[str, Any], *, title: str = "results",
                     description: str = "") -> str:
    """``results.md``: the results table with a short legend."""
    parts = [f"# {title}", ""]
    if description:
        parts += [description.strip(), ""]
    parts += [format_table(results_table(metrics)), "",
              "Mean log-likelihood per target point ± standard error over test tasks (higher is "
              "better). *component*: the approximately equivariant model with every fixed input "
              "set to zero (its exactly equivariant part); *Δequiv*: mean absolute difference "
              "between the predictive means of the model and of its component; *equiv. error*: "
              "largest |Φ(g·D) − g·Φ(D)| of the predictive mean and std over random elements of "
              "the model's symmetry group.", ""]
    return "\n".join(parts)



__all__ = ["cell", "format_table", "mean_se", "results_markdown", "results_table"]
