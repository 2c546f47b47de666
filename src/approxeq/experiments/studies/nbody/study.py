"""The charged n-body experiment of Kim et al. (LPS, NeurIPS 2023, §3.2), at CPU or paper size.

From positions and velocities of 5 charged particles at frame 30, predict positions at frame 40
(1,000 integrator steps later; data from :mod:`approxeq.data.nbody`, simulated from a seed).
Two base models: the paper's transformer on an ``n × n`` token grid (:class:`NBodyTransformer`),
which sees particle order and coordinates, so it is neither S_n- nor E(3)-equivariant, and a
message-passing GNN over the fully connected particle graph (:class:`NBodyGNN`), S_n-equivariant
but fed raw coordinates, so not E(3)-equivariant. Each is made S_n × E(3)-equivariant by

* ``ps``: probabilistic symmetrisation, ``p(g | x)`` from a vector-neuron network
  (:class:`approxeq.symmetrize.PointCloudFrameNetwork`: centred positions and velocities as
  vector channels, charges as scalars) with outsourced Gaussian vector noise (``k`` samples);
* ``canonical``: the same network without noise, one element (Kaba et al., 2023);
* ``ga``: group averaging over Haar samples of S_n × O(3);

translations are always handled by centring. ``none`` (the bare base model) is a reference.
Model labels are ``Transformer-<strategy>`` and ``GNN-<strategy>``.
Metric: test MSE of the positions, at the best validation MSE.

Entry point: :func:`run_nbody_experiment` (writes ``metrics.json`` and ``results.md``).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from approxeq.data.nbody import NBodyConfig, NBodyData, make_nbody_splits
from approxeq.experiments.base import (
    SettingsExperiment,
    locked_settings_run,
    settings_fingerprint,
    settings_of,
)
from approxeq.experiments.registry import load_named_experiment, register_experiment
from approxeq.experiments.schema import ExperimentConfig
from approxeq.experiments.settings_check import check_settings, check_value
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.nn.graph_models import NBodyGNN, NBodyTransformer
from approxeq.symmetrize.factory import Unsymmetrized, symmetrize
from approxeq.train.config import ConfigError
from approxeq.train.config_checks import dataclass_from_mapping
from approxeq.train.distributed import resolve_device
from approxeq.train.rundir import EXPERIMENT, METRICS, RESULTS

__all__ = [
    "NBodyGNN",
    "NBodyTransformer",
    "build_nbody_model",
    "evaluate_mse",
    "train_nbody",
    "nbody_experiment_config",
    "run_nbody_experiment",
    "NBodyExperiment",
]


BASES = ("transformer", "gnn")

def _d_model(value: int, where: str) -> int:
    if value % 4:  # the transformer's 4 attention heads split the width
        raise ConfigError(f"{where}: expected a multiple of 4 (the transformer's attention "
                          f"heads), got {value}")
    return value


#: what each setting of the experiment must be (see :mod:`approxeq.experiments.settings_check`)
NBODY_SETTINGS: dict[str, Any] = {
    "n_train": "int>=1", "n_val": "int>=1", "n_test": "int>=1", "epochs": "int>=1",
    "batch_size": "int>=1", "lr": "num>0", "weight_decay": "num>=0", "num_layers": "int>=1",
    "d_model": lambda value, where: _d_model(check_value(value, "int>=1", where), where),
    "gnn_hidden": "int>=1", "gnn_layers": "int>=1", "k_train": "int>=1",
    "k_eval": "int>=1", "k_test": "int>=1", "test_trials": "int>=1",
    "entropy_weight": "num>=0", "eval_every_epochs": "int>=1", "seed": "int>=0",
    "simulation": lambda value, where: dataclass_from_mapping(NBodyConfig, value, where)}
_OPTIONAL = ("gnn_hidden", "gnn_layers", "seed", "simulation")


def build_nbody_model(strategy: str, *, base: str = "transformer", n_particles: int = 5,
                      d_model: int = 64, num_layers: int = 4, n_heads: int = 4, d_ff: int = 64,
                      vn_hidden: int = 21, gnn_hidden: int = 64, gnn_layers: int = 4,
                      k_train: int = 20, k_eval: int = 20, noise_scale: float = 1.0,
                      tau: float = 0.1) -> nn.Module:
    """The base model (``base``: ``"transformer"`` or ``"gnn"``), symmetrised over
    S_n × E(3) by ``strategy`` (``"ps"``, ``"canonical"``, ``"ga"``) or bare (``"none"``).
    Call as ``model(loc, vel, charges, generator=...)``."""
    if base == "transformer":
        base_model: nn.Module = NBodyTransformer(n_particles, 3, d_model, n_heads, d_ff,
                                                 num_layers)
    elif base == "gnn":
        base_model = NBodyGNN(3, gnn_hidden, gnn_layers)
    else:
        raise ValueError(f"base: expected one of {list(BASES)}, got {base!r}")
    from approxeq.groups import DirectProduct, Euclidean, Permutation
    from approxeq.symmetrize import PointCloudFrameNetwork

    kinds = ("points", "vectors", "nodes")
    return symmetrize(
        base_model, DirectProduct(Permutation(n_particles), Euclidean(3)), strategy,
        in_kinds=kinds, out_kinds="points",
        network=lambda: PointCloudFrameNetwork(kinds, scalar_dim=1, noise_dim=2,
                                               hidden=vn_hidden),
        canonical_options={"noise_dim": 2, "noise_kind": "vectors", "tau": tau},
        ps_options={"noise_scale": noise_scale, "noise_dim": 2, "noise_kind": "vectors",
                    "tau": tau},
        k_train=k_train, k_eval=k_eval, allowed=("none", "ps", "canonical", "ga"))


def _predict(model: nn.Module, data: NBodyData, generator: torch.Generator | None,
             n_samples: int | None = None) -> tuple[Tensor, Tensor]:
    kwargs = {} if n_samples is None else {"n_samples": n_samples}
    out = model(data.loc, data.vel, data.charges, generator=generator, **kwargs)
    if isinstance(out, Tensor):
        return out, data.loc.new_zeros(())
    return out.output, sum(out.regularizers.values(), data.loc.new_zeros(()))


@torch.no_grad()
def evaluate_mse(model: nn.Module, data: NBodyData, *, batch_size: int = 500,
                 generator: torch.Generator | None = None, n_samples: int | None = None) -> float:
    """Mean squared error of the predicted positions over ``data`` (model in eval mode)."""
    model.eval()
    total = 0.0
    for start in range(0, len(data), batch_size):
        part = data.subset(slice(start, start + batch_size))
        pred, _ = _predict(model, part, generator, n_samples)
        total += float(((pred - part.target) ** 2).mean()) * len(part)
    return total / len(data)


def nbody_experiment_config(quick: bool) -> dict[str, Any]:
    """The settings of the n-body experiment at the quick (CPU) or paper size: the task options
    of its shipped YAML, with ``models`` as ``[label, base, strategy]`` (base
    ``"transformer"`` or ``"gnn"``); a copy."""
    return settings_of(load_named_experiment("nbody", "quick" if quick else "paper"))


def train_nbody(model: nn.Module, splits: dict[str, NBodyData], cfg: dict[str, Any], *,
                seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Adam on the MSE of the (k-sample averaged) prediction plus ``entropy_weight`` times the
    strategy's regularisers; returns test MSE (mean ± std over ``test_trials`` Monte-Carlo
    trials with ``k_test`` samples) at the best validation MSE."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    device = train.loc.device
    shuffle = torch.Generator().manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    best_val, best_state, best_epoch = math.inf, copy.deepcopy(model.state_dict()), -1
    start_time = time.perf_counter()
    steps = 0
    for epoch in range(cfg["epochs"]):
        model.train()
        order = torch.randperm(len(train), generator=shuffle).to(device)
        for start in range(0, len(train), cfg["batch_size"]):
            part = train.subset(order[start:start + cfg["batch_size"]])
            pred, reg = _predict(model, part, gen)
            loss = ((pred - part.target) ** 2).mean() + cfg["entropy_weight"] * reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        if (epoch + 1) % cfg["eval_every_epochs"] == 0 or epoch == cfg["epochs"] - 1:
            val_mse = evaluate_mse(model, val, generator=gen)
            if val_mse < best_val:
                best_val, best_state, best_epoch = val_mse, copy.deepcopy(model.state_dict()), epoch
            log(f"  epoch {epoch}: train loss {loss.item():.5f}, val MSE {val_mse:.5f}")
    train_seconds = time.perf_counter() - start_time
    model.load_state_dict(best_state)
    k_test = None if isinstance(model, Unsymmetrized) else cfg["k_test"]
    trials = [evaluate_mse(model, test, n_samples=k_test,
                           generator=torch.Generator(device=device).manual_seed(100 + t))
              for t in range(cfg["test_trials"])]
    mse = torch.tensor(trials, dtype=torch.float64)
    return {"test_mse": float(mse.mean()), "test_mse_std": float(mse.std()) if len(trials) > 1
            else 0.0, "val_mse": best_val, "best_epoch": best_epoch, "train_steps": steps,
            "train_seconds": round(train_seconds, 1),
            "n_params": sum(p.numel() for p in model.parameters())}


def run_nbody_experiment(out_dir: str | Path, quick: bool = True,
                         overrides: dict[str, Any] | None = None,
                         log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the n-body experiment and write ``out_dir/metrics.json`` (one entry per model),
    ``out_dir/experiment.json`` (size, config, device, seconds) and ``out_dir/results.md``,
    each atomically.

    Args:
        quick: CPU size (minutes on two cores) instead of the paper's size.
        overrides: entries replacing those of :func:`nbody_experiment_config`; ``device``
            (default: CUDA if available) is one of them.
    Returns:
        what ``metrics.json`` holds: ``{"<Base>-<strategy>": {"test_mse": ..., ...}}``.
    """
    cfg = nbody_experiment_config(quick)
    cfg.update(overrides or {})
    size = "quick" if quick else "paper"
    return locked_settings_run(
        Path(out_dir), settings_fingerprint(NBODY_EXPERIMENT.name, size, cfg),
        lambda: _run_settings(cfg, out_dir, size, log), label="nbody",
        outputs=NBODY_EXPERIMENT.outputs)


def _models(cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(label, base, strategy)`` per model."""
    models = [(label, base, strategy) for label, base, strategy in cfg["models"]]
    unknown = sorted({base for _, base, _ in models} - set(BASES))
    if unknown:
        raise ValueError(f"models: base must be one of {list(BASES)}, got {unknown}")
    return models


def _run_settings(cfg: dict[str, Any], out_dir: str | Path, size: str,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    quick = size == "quick"
    log = log or (lambda _msg: None)
    check_settings(cfg, NBODY_SETTINGS, "nbody",
                   required=[k for k in NBODY_SETTINGS if k not in _OPTIONAL])
    device = resolve_device(cfg.get("device") or "auto")
    start = time.perf_counter()
    # "simulation" overrides fields of NBodyConfig (e.g. a coarser save_every for tests)
    sim = NBodyConfig(**cfg.get("simulation", {}))
    splits = make_nbody_splits(cfg["n_train"], cfg["n_val"], cfg["n_test"], seed=cfg.get("seed", 0),
                               config=sim)
    splits = {k: v.to(torch.get_default_dtype(), device) for k, v in splits.items()}
    data_seconds = time.perf_counter() - start
    log(f"nbody: simulated {sum(len(v) for v in splits.values())} systems in {data_seconds:.1f} s")
    results = {}
    for label, base, strategy in _models(cfg):
        torch.manual_seed(0)
        model = build_nbody_model(strategy, base=base, d_model=cfg["d_model"],
                                  num_layers=cfg["num_layers"],
                                  gnn_hidden=cfg.get("gnn_hidden", 64),
                                  gnn_layers=cfg.get("gnn_layers", 4),
                                  k_train=cfg["k_train"], k_eval=cfg["k_eval"]).to(device)
        log(f"nbody {label}")
        results[label] = train_nbody(model, splits, cfg, log=log)
    seconds = time.perf_counter() - start
    run = {"experiment": "nbody", "size": size, "config": cfg,
           "device": str(device), "seconds": round(seconds, 1),
           "data_seconds": round(data_seconds, 1)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / EXPERIMENT, run)
    write_json_atomic(out / METRICS, results)
    write_text_atomic(out / RESULTS, _results_table(quick, cfg, results, seconds))
    return results


def _results_table(quick: bool, cfg: dict[str, Any], results: dict[str, Any],
                   seconds: float) -> str:
    size = "quick (CPU)" if quick else "paper"
    lines = [f"# n-body, charged 5 particles ({size} size)", "",
             f"Settings: `{json.dumps(cfg)}`", "", f"Wall time: {seconds:.1f} s", "",
             "| model | test MSE | val MSE | best epoch | steps | train s | params |",
             "|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        lines.append(f"| {key} | {r['test_mse']:.5f} ± {r['test_mse_std']:.5f} | "
                     f"{r['val_mse']:.5f} | {r['best_epoch']} | {r['train_steps']} | "
                     f"{r['train_seconds']} | {r['n_params']} |")
    lines += ["", "Paper (3,000 simulations, 10,000 epochs): Transformer-PS 0.00417, "
              "Transformer-Canonical 0.00779."]
    return "\n".join(lines) + "\n"


class NBodyExperiment(SettingsExperiment):
    """The charged n-body experiment; ``--steps`` sets the training epochs."""

    name = "nbody"
    task_names = ("nbody",)

    def run_settings(self, config: ExperimentConfig, settings: dict[str, Any], out_dir: Path,
                     log: Callable[[str], None]) -> dict[str, Any]:
        return _run_settings(settings, out_dir, config.size, log)


NBODY_EXPERIMENT = register_experiment(NBodyExperiment())
