"""Training curves of one or more runs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from approxeq.plot._mpl import PALETTE, finish, pyplot

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


def plot_training_curves(
    runs: Mapping[str, History | str | os.PathLike] | History | str | os.PathLike, *,
    keys: Iterable[str] | None = None, title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Any:
    """One panel per logged quantity (e.g. training loss, validation log-likelihood), one line
    per run.

    Args:
        runs: ``{label: history}`` or a single history, where a history is a list of records
            ``{"step": int, "<key>": float, ...}``, the column-wise ``history.json`` of
            :func:`approxeq.train.train` (see :func:`history_records`) or the path of a log
            file (see :func:`load_history`).
        keys: the quantities to draw (default: every numeric key except ``step``, ``time``,
            ``epoch``, ``lr`` and standard errors ``*_se``).
        title: figure title. path: save as PNG here.

    Returns:
        The matplotlib ``Figure``.
    """
    plt = pyplot()
    if isinstance(runs, (str, os.PathLike)) or not isinstance(runs, Mapping):
        runs = {"run": runs}
    if isinstance(runs, Mapping) and ("train" in runs or "val" in runs) and \
            isinstance(runs.get("train", runs.get("val")), Mapping):
        runs = {"run": runs}  # a single history.json given directly
    histories = {label: history_records(load_history(h) if isinstance(h, (str, os.PathLike))
                                        else h) for label, h in runs.items()}
    if keys is None:
        skip = {"step", "time", "epoch", "lr", "elapsed", "wall_time", "val_n_tasks"}
        found: list[str] = []
        for h in histories.values():
            for rec in h:
                for k, v in rec.items():
                    if (k not in skip and not k.endswith("_se") and k not in found
                            and isinstance(v, (int, float))
                            and not isinstance(v, bool)):
                        found.append(k)
        keys = found
    keys = list(keys)
    if not keys:
        raise ValueError("runs: no numeric quantities to plot (expected records like "
                         "{'step': 10, 'train_loss': 1.2})")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (label, h) in enumerate(histories.items()):
            steps, values = _series(h, key)
            if steps:
                ax.plot(steps, values, color=PALETTE[i % len(PALETTE)], lw=1.3,
                        marker="o" if len(steps) < 30 else None, ms=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, path)
