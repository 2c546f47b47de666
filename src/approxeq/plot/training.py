"""Training curves of one or more runs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from approxeq.plot._mpl import PALETTE, add_caption, finish, pyplot

History = Sequence[Mapping[str, Any]]


def load_history(path: str | os.PathLike) -> list[dict]:
    """Records of a training log: a JSON-lines file (one ``{"step": .., key: value}`` object per
    line) or a JSON file holding such a list (or ``{"history": [...]}``)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, Mapping):
        if "train" in data or "val" in data:
            return history_records(data)
        data = data.get("history", data.get("log", []))
    return list(data)


def history_records(history: Mapping[str, Any] | History) -> list[dict]:
    """Records from a training history: a list of records is returned as is; the column-wise
    ``history.json`` of :func:`approxeq.train.train` (``{"train": {"step": [..], "loss": [..]},
    "val": {"step": [..], "loglik": [..], ...}}``) becomes records with keys ``train_loss``,
    ``val_loglik``, ... ."""
    if not isinstance(history, Mapping):
        return list(history)
    records: list[dict] = []
    for part in ("train", "val"):
        cols = history.get(part) or {}
        steps = cols.get("step") or []
        for key, values in cols.items():
            if key in ("step", "seconds") or not isinstance(values, list):
                continue
            for s, v in zip(steps, values):
                records.append({"step": s, f"{part}_{key}": v})
    return records


def _series(history: History, key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for i, rec in enumerate(history):
        v = rec.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            steps.append(float(rec.get("step", i)))
            values.append(float(v))
    return steps, values


_NAMES = {
    "train_loss": "training loss (neg. log-lik per target)",
    "val_loglik": "validation log-likelihood per target",
    "val_rmse": "validation RMSE",
    "val_coverage95": "validation 95% coverage",
}
_BEST_KEY = "val_loglik"


def _best_step(history: Mapping[str, Any] | History, records: History) -> int | None:
    """The step of the checkpoint a run's evaluation uses: ``best_step`` of a ``history.json``,
    else the first step of the highest validation log-likelihood (``train`` keeps a new best
    only when it is strictly better)."""
    if isinstance(history, Mapping) and isinstance(history.get("best_step"), int):
        return int(history["best_step"])
    steps, values = _series(records, _BEST_KEY)
    if not values:
        return None
    return int(steps[max(range(len(values)), key=lambda j: (values[j], -j))])


def plot_training_curves(
    runs: Mapping[str, History | str | os.PathLike] | History | str | os.PathLike, *,
    keys: Iterable[str] | None = None, title: str | None = None,
    path: str | os.PathLike | None = None, best_steps: Mapping[str, int | None] | None = None,
    caption: str | None = None,
) -> Any:
    """One panel per logged quantity (e.g. training loss, validation log-likelihood), one line
    per run, with a star on each run's curves at the checkpoint its evaluation uses (the best
    validation step).

    Args:
        runs: ``{label: history}`` or a single history, where a history is a list of records
            ``{"step": int, "<key>": float, ...}``, the column-wise ``history.json`` of
            :func:`approxeq.train.train` (see :func:`history_records`) or the path of a log
            file (see :func:`load_history`).
        keys: the quantities to draw (default: every numeric key except ``step``, ``time``,
            ``epoch``, ``lr`` and standard errors ``*_se``).
        title: figure title. path: save as PNG here.
        best_steps: ``{label: step}`` of the checkpoint used per run (default: ``best_step``
            of a ``history.json``, else the step of the highest ``val_loglik``; ``None``: no
            mark for that run).
        caption: text under the figure (default: what the lines and stars are; ``""``: none).

    Returns:
        The matplotlib ``Figure``.
    """
    plt = pyplot()
    raw = _raw_histories(runs)
    histories = {label: history_records(h) for label, h in raw.items()}
    best = {label: _best_step(raw[label], h) for label, h in histories.items()}
    if best_steps is not None:
        best.update(best_steps)
    keys = list(_numeric_keys(histories) if keys is None else keys)
    if not keys:
        raise ValueError("runs: no numeric quantities to plot (expected records like "
                         "{'step': 10, 'train_loss': 1.2})")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.4 * len(keys), 3.2), squeeze=False)
    marked = False
    for ax, key in zip(axes[0], keys):
        marked = _draw_curves(ax, key, histories, best) or marked
        if marked:
            ax.scatter([], [], marker="*", s=120, facecolors="white", edgecolors="black",
                       label="checkpoint used\n(best validation)")
        ax.set_xlabel("step")
        ax.set_ylabel(_NAMES.get(key, key.replace("_", " ")), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if caption is None:
        used = ", ".join(f"{label} step {best[label]}" for label in histories
                         if best.get(label) is not None)
        caption = ("Training loss (mean over each logging window) and validation scores on a "
                   "fixed set of tasks, one line per model.")
        if used:
            caption += (" Stars: the checkpoint each model is evaluated with, its best "
                        f"validation log-likelihood ({used}).")
    add_caption(fig, caption)
    return finish(fig, path)


def _raw_histories(runs: Any) -> dict[str, Any]:
    """``{label: history}`` of :func:`plot_training_curves`'s ``runs``, log files read."""
    if isinstance(runs, (str, os.PathLike)) or not isinstance(runs, Mapping):
        runs = {"run": runs}
    if isinstance(runs, Mapping) and ("train" in runs or "val" in runs) and \
            isinstance(runs.get("train", runs.get("val")), Mapping):
        runs = {"run": runs}  # a single history.json given directly
    return {label: load_history(h) if isinstance(h, (str, os.PathLike)) else h
            for label, h in runs.items()}


def _numeric_keys(histories: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """Every numeric quantity the records hold, in order of appearance (no steps, times,
    learning rates or standard errors)."""
    skip = {"step", "time", "epoch", "lr", "elapsed", "wall_time", "val_n_tasks"}
    found: list[str] = []
    for h in histories.values():
        for rec in h:
            for k, v in rec.items():
                if (k not in skip and not k.endswith("_se") and k not in found
                        and isinstance(v, (int, float))
                        and not isinstance(v, bool)):
                    found.append(k)
    return found


def _draw_curves(ax: Any, key: str, histories: Mapping[str, list[dict[str, Any]]],
                 best: Mapping[str, int | None]) -> bool:
    """One line per run of ``key``, with a star at each run's chosen step; whether any star
    was drawn."""
    marked = False
    for i, (label, h) in enumerate(histories.items()):
        steps, values = _series(h, key)
        if not steps:
            continue
        color = PALETTE[i % len(PALETTE)]
        ax.plot(steps, values, color=color, lw=1.3,
                marker="o" if len(steps) < 30 else None, ms=3, label=label)
        at = best.get(label)
        if at is not None:
            # the value logged at (or, for a coarser log, nearest to) the chosen step
            j = min(range(len(steps)), key=lambda j: abs(steps[j] - at))
            star = ax.scatter([steps[j]], [values[j]], marker="*", s=170, color=color,
                              edgecolors="black", linewidths=0.8, zorder=5)
            star.set_gid(f"checkpoint:{label}")
            marked = True
    return marked
