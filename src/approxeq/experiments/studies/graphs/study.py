"""Graph experiments of Kim et al. (LPS, NeurIPS 2023, §3.1) and the CSL benchmark.

* ``graph8c``, ``exp-iso``, ``sr25`` — *separation*: untrained models, many random
  initialisations; a pair of non-isomorphic graphs is *indistinguishable* if the L1 distance
  between its embeddings is ``<= 1e-3`` under **every** initialisation. We count such pairs,
  with controls (a graph against permuted copies of itself; see
  :mod:`~approxeq.experiments.studies.graphs.separation`): a model with random outputs
  separates its own permuted copies at 1e-3 and is judged at a threshold calibrated on them
  instead.
* ``exp-classify`` — SAT/UNSAT classification of EXP graphs (val ``[0:200]``, test ``[200:400]``,
  train ``[400:1200]``; BCE, Adam, warm-up, gradient clipping; test accuracy at the best
  validation loss).
* ``csl`` — 10-way classification of circular skip-link graphs (stratified folds).

Models: an MLP on the flattened (re-ordered) node features and adjacency, and a GIN with one-hot
position ids ("GIN-ID", relational pooling), each symmetrised over S_n by group averaging (GA),
canonicalisation (Canonical) or probabilistic symmetrisation (PS), and, as a reference on the
classification tasks, frame averaging with Laplacian frames (FA); and a plain GIN (1-WL bound).
The symmetrisation itself is :class:`approxeq.symmetrize.Symmetrized`.

PS and canonicalisation train in float64 by default (``dtype`` in the configuration): with
``tau = 0.01`` and ~70 nodes the Sinkhorn relaxation underflows to exact zeros in float32, and the
entropy regulariser's gradient is then NaN.

Entry point: :func:`run_graph_experiment` (writes ``metrics.json`` and ``results.md``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from approxeq.data.graphs import GraphData, load_exp, load_graph8c, load_sr25, make_csl, with_degree
from approxeq.experiments.base import (
    SettingsExperiment,
    locked_settings_run,
    settings_fingerprint,
    settings_of,
)
from approxeq.experiments.registry import load_named_experiment, register_experiment
from approxeq.experiments.schema import ExperimentConfig
from approxeq.experiments.settings_check import check_graph_settings
from approxeq.experiments.studies.graphs.separation import (
    SeparationEmbeddings,
    close_pairs,
    count_indistinguishable,
    judge_separation,
    permuted_copy,
    separation_table,
)
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.nn.graph_models import GraphGIN, GraphMLP
from approxeq.symmetrize.factory import Unsymmetrized, symmetrize
from approxeq.train.distributed import resolve_device
from approxeq.train.rundir import EXPERIMENT, METRICS, RESULTS

__all__ = [
    "GraphMLP",
    "GraphGIN",
    "build_graph_model",
    "close_pairs",
    "count_indistinguishable",
    "embed",
    "train_classifier",
    "GRAPH_EXPERIMENTS",
    "graph_experiment_config",
    "run_graph_experiment",
    "GraphExperiment",
    "settings_of",
]

GRAPH_EXPERIMENTS = ("graph8c", "exp-iso", "sr25", "exp-classify", "csl")


# --------------------------------------------------------------------------- models

def build_graph_model(base: str, strategy: str, *, n_max: int, in_channels: int, out_dim: int,
                      mlp_hidden: Sequence[int] = (128, 64), mlp_activation: str = "tanh",
                      gin_hidden: int = 64, gin_layers: int = 3, q_hidden: int = 64,
                      q_layers: int = 3, k_train: int = 1, k_eval: int = 10,
                      noise_scale: float = 1.0, tau: float = 0.01,
                      sinkhorn_iters: int = 20) -> nn.Module:
    """A graph model ``(x, adj, mask) → [b, out_dim]``.

    Args:
        base: ``"mlp"`` (:class:`GraphMLP`), ``"gin-id"`` (:class:`GraphGIN` with position ids)
            or ``"gin"`` (plain GIN; only with ``strategy="none"``).
        strategy: ``"none"``, ``"ga"`` (Haar samples of S_n), ``"fa"`` (Laplacian frames,
            ``k`` draws), ``"canonical"`` or ``"ps"``; the last two use
            :class:`approxeq.symmetrize.GraphScoreNetwork` (GIN + virtual node).
        k_train, k_eval: Monte-Carlo samples ``k`` in training / evaluation mode.
        noise_scale, tau, sinkhorn_iters: of the probabilistic strategy (paper: 1, 0.01, 20).
    """
    if base == "mlp":
        net = GraphMLP(n_max, in_channels, out_dim, mlp_hidden, mlp_activation)
    elif base == "gin-id":
        net = GraphGIN(in_channels, out_dim, gin_hidden, gin_layers, position_ids=n_max)
    elif base == "gin":
        net = GraphGIN(in_channels, out_dim, gin_hidden, gin_layers)
    else:
        raise ValueError(f"base: expected 'mlp', 'gin-id' or 'gin', got {base!r}")
    from approxeq.groups import Permutation
    from approxeq.symmetrize import GraphScoreNetwork

    kinds = ("nodes", "adjacency", "mask")
    return symmetrize(
        net, Permutation(n_max), strategy, in_kinds=kinds, out_kinds="invariant",
        network=lambda: GraphScoreNetwork(in_channels, kinds, hidden=q_hidden,
                                          num_layers=q_layers),
        canonical_options={"tau": tau, "sinkhorn_iters": sinkhorn_iters},
        ps_options={"noise_scale": noise_scale, "tau": tau, "sinkhorn_iters": sinkhorn_iters},
        k_train=k_train, k_eval=k_eval)


def _call(model: nn.Module, x: Tensor, adj: Tensor, mask: Tensor,
          generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``(output, regulariser)`` for plain and symmetrised models alike."""
    out = model(x, adj, mask, generator=generator)
    if isinstance(out, Tensor):
        return out, x.new_zeros(())
    reg = sum(out.regularizers.values(), x.new_zeros(()))
    return out.output, reg


@torch.no_grad()
def embed(model: nn.Module, data: GraphData, batch_size: int,
          generator: torch.Generator | None = None) -> Tensor:
    """Embeddings ``[N, out_dim]`` of every graph of ``data`` (model in eval mode)."""
    model.eval()
    outs = []
    for start in range(0, len(data), batch_size):
        part = slice(start, start + batch_size)
        outs.append(_call(model, data.x[part], data.adj[part], data.mask[part], generator)[0])
    return torch.cat(outs)


# --------------------------------------------------------------------------- configurations

def graph_experiment_config(name: str, quick: bool) -> dict[str, Any]:
    """The settings of experiment ``name`` at the quick (CPU) or paper size: the task options
    of its shipped YAML, with ``models`` set to its ``[label, base, strategy]`` list; a copy."""
    if name not in GRAPH_EXPERIMENTS:
        raise ValueError(f"name: unknown graph experiment {name!r}; expected one of "
                         f"{list(GRAPH_EXPERIMENTS)}")
    return settings_of(load_named_experiment(name, "quick" if quick else "paper"))


def _model_list(cfg: dict[str, Any], default_base: str, prefix: str) -> list[tuple[str, str, str]]:
    """``(result key, base, strategy)`` per model, from ``models`` (``[label, base, strategy]``;
    a label that already ends in its strategy is kept as the key)."""
    out = []
    for label, base, strategy in cfg["models"]:
        key = label if strategy == "none" or label.endswith(f"-{strategy}") else \
            f"{label}-{strategy}"
        out.append((key, base, strategy))
    return out


# --------------------------------------------------------------------------- runners

def _controls(data: GraphData, n_controls: int) -> tuple[Tensor, GraphData, GraphData, Tensor]:
    """``(control_index, calibration copies, held-out copies, held-out copy identical)``:
    ``n_controls`` control graphs, each permuted twice: every graph, cycled as often as needed,
    if there are at most ``n_controls``; else a fixed random subset."""
    gen = torch.Generator().manual_seed(0)
    n = len(data)
    index = torch.arange(n).repeat(-(-n_controls // n))[:n_controls] if n <= n_controls else \
        torch.randperm(n, generator=gen)[:n_controls].sort().values
    chosen = data.subset(index.to(data.x.device))
    calibration, _ = permuted_copy(chosen, gen)
    check, identical = permuted_copy(chosen, gen)
    return index, calibration, check, identical


def _run_separation(name: str, cfg: dict[str, Any], log: Callable[[str], None],
                    device: torch.device) -> dict[str, Any]:
    if name == "graph8c":
        data, pairs = load_graph8c(), None
    elif name == "sr25":
        data, pairs = load_sr25(), None
    else:
        data = with_degree(load_exp())
        pairs = data.pairs
    data = data.to(device=device)
    # as many controls as judged pairs, at most ``n_controls``
    n_pairs = len(pairs) if pairs is not None else len(data) * (len(data) - 1) // 2
    n_controls = min(cfg.get("n_controls", 1200), n_pairs)
    index, calibration, check, identical = _controls(data, n_controls)
    controls = data.subset(index.to(device))
    results = {}
    for key, base, strategy in _model_list(cfg, "mlp", "MLP"):

        def embed_fn(seed: int, base: str = base, strategy: str = strategy) -> SeparationEmbeddings:
            torch.manual_seed(seed)
            model = build_graph_model(base, strategy, n_max=data.n_max,
                                      in_channels=data.x.shape[-1], out_dim=10,
                                      mlp_hidden=cfg["mlp_hidden"], mlp_activation="tanh",
                                      k_eval=cfg["k_eval"]).to(device)
            gen = torch.Generator(device=device).manual_seed(10_000 + seed)
            size = cfg["batch_size"]
            out = SeparationEmbeddings(embed(model, data, size, gen),
                                       embed(model, calibration, size, gen),
                                       embed(model, check, size, gen))
            if strategy != "none":  # the unsymmetrised base, same weights
                plain = Unsymmetrized(model.base)
                out.base, out.base_check = embed(plain, controls, size), embed(plain, check, size)
            return out

        start = time.perf_counter()
        r = judge_separation(embed_fn, cfg["n_inits"], n_graphs=len(data), control_index=index,
                             identical=identical, pairs=pairs)
        r["seconds"] = round(time.perf_counter() - start, 2)
        results[key] = r
        log(f"{name} {key}: {r['indistinguishable']} / {r['pairs']} indistinguishable "
            f"({r['inits_used']} inits, {r['seconds']:.1f} s); {r['verdict']}")
    return results


def _warmup_lr(epoch: int, warmup: int) -> float:
    return min(1.0, (epoch + 1) / max(1, warmup))


def train_classifier(model: nn.Module, train: GraphData, val: GraphData, test: GraphData, *,
                     n_classes: int, epochs: int, lr: float, batch_size: int, clip: float,
                     warmup_epochs: int, entropy_weight: float, seed: int = 0,
                     eval_every: int = 1, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Adam with linear warm-up and gradient clipping; binary (BCE on one logit) or multi-class
    cross-entropy. Validation every ``eval_every`` epochs. Returns the test accuracy at the best
    validation loss, among others. With ``entropy_weight = 0`` the regularisers are left out of
    the graph entirely (not multiplied by 0), so a non-finite regulariser gradient cannot leak."""
    device = train.x.device
    shuffle = torch.Generator().manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: _warmup_lr(e, warmup_epochs))

    def loss_and_correct(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if n_classes == 2:
            logit = logits.squeeze(-1)
            return (F.binary_cross_entropy_with_logits(logit, y.to(logit.dtype)),
                    ((logit > 0).long() == y).sum())
        return F.cross_entropy(logits, y), (logits.argmax(-1) == y).sum()

    @torch.no_grad()
    def evaluate(data: GraphData) -> tuple[float, float]:
        model.eval()
        total, correct = 0.0, 0
        for start in range(0, len(data), batch_size):
            part = slice(start, start + batch_size)
            logits, _ = _call(model, data.x[part], data.adj[part], data.mask[part], gen)
            loss, right = loss_and_correct(logits, data.y[part])
            total += loss.item() * logits.shape[0]
            correct += int(right)
        return total / len(data), correct / len(data)

    best = {"val_loss": math.inf}
    # every evaluation, so that a long run also shows what a shorter one would have reported
    # (the schedule is constant after warm-up, so the first E epochs of a run are an E-epoch run)
    history: list[dict[str, float]] = []
    start_time = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=shuffle).to(device)
        for start in range(0, len(train), batch_size):
            idx = order[start:start + batch_size]
            logits, reg = _call(model, train.x[idx], train.adj[idx], train.mask[idx], gen)
            loss, _ = loss_and_correct(logits, train.y[idx])
            opt.zero_grad()
            (loss + entropy_weight * reg if entropy_weight else loss).backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        sched.step()
        if (epoch + 1) % eval_every and epoch != epochs - 1:
            continue
        val_loss, val_acc = evaluate(val)
        if val_loss < best["val_loss"]:
            test_loss, test_acc = evaluate(test)
            best = {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss,
                    "test_acc": test_acc, "best_epoch": epoch}
        history.append({"epoch": epoch, "val_loss": val_loss, "val_acc": val_acc,
                        "test_acc_at_best": best["test_acc"], "best_epoch": best["best_epoch"]})
        log_every = max(eval_every, (epochs // 10) // eval_every * eval_every)
        if (epoch + 1) % log_every == 0 or epoch == epochs - 1:
            log(f"  epoch {epoch}: train loss {loss.item():.4f}, val loss {val_loss:.4f}, "
                f"val acc {val_acc:.3f}, best test acc {best.get('test_acc', float('nan')):.3f}")
    best["train_seconds"] = round(time.perf_counter() - start_time, 1)
    best["n_params"] = sum(p.numel() for p in model.parameters())
    best["history"] = history
    return best


def _run_exp_classify(cfg: dict[str, Any], log: Callable[[str], None],
                      device: torch.device) -> dict[str, Any]:
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    data = with_degree(load_exp()).to(dtype=dtype, device=device)
    # the paper's split, by index
    val, test = data.subset(slice(0, 200)), data.subset(slice(200, 400))
    train = data.subset(slice(400, 1200))
    results = {}
    for key, base, strategy in _model_list(cfg, "mlp", "MLP"):
        torch.manual_seed(0)
        model = build_graph_model(base, strategy, n_max=data.n_max, in_channels=data.x.shape[-1],
                                  out_dim=1, mlp_hidden=cfg["mlp_hidden"], mlp_activation="relu",
                                  k_train=cfg["k_train"], k_eval=cfg["k_eval"], tau=cfg["tau"],
                                  sinkhorn_iters=cfg["sinkhorn_iters"])
        model = model.to(dtype=dtype, device=device)
        log(f"exp-classify {key}")
        results[key] = train_classifier(
            model, train, val, test, n_classes=2, epochs=cfg["epochs"], lr=cfg["lr"],
            batch_size=cfg["batch_size"], clip=cfg["clip"], warmup_epochs=cfg["warmup_epochs"],
            entropy_weight=cfg["entropy_weight"], eval_every=cfg.get("eval_every", 1), log=log)
    return results


def _stratified_folds(y: Tensor, folds: int, seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[] for _ in range(folds)]
    for label in y.unique():
        idx = torch.nonzero(y == label).squeeze(-1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        for f, chunk in enumerate(idx.tensor_split(folds)):
            parts[f].append(chunk)
    return [torch.cat(p) for p in parts]


def _run_csl(cfg: dict[str, Any], log: Callable[[str], None],
            device: torch.device) -> dict[str, Any]:
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    data = make_csl(seed=0).to(dtype=dtype, device=device)
    n_folds = max(cfg["folds"], 1)
    folds = [f.to(device) for f in _stratified_folds(data.y.cpu(), 5)]
    results: dict[str, Any] = {}
    for key, base, strategy in _model_list(cfg, "mlp", "MLP"):
        accs, histories = [], []
        for f in range(n_folds):
            test_idx = folds[f]
            val_idx = folds[(f + 1) % 5]
            train_idx = torch.cat([folds[j] for j in range(5) if j not in (f, (f + 1) % 5)])
            torch.manual_seed(f)
            model = build_graph_model(base, strategy, n_max=data.n_max,
                                      in_channels=data.x.shape[-1], out_dim=10,
                                      mlp_hidden=cfg["mlp_hidden"], mlp_activation="relu",
                                      k_train=cfg["k_train"], k_eval=cfg["k_eval"],
                                      tau=cfg["tau"], sinkhorn_iters=cfg["sinkhorn_iters"]
                                      ).to(dtype=dtype, device=device)
            log(f"csl {key} fold {f}")
            out = train_classifier(model, data.subset(train_idx), data.subset(val_idx),
                                   data.subset(test_idx), n_classes=10, epochs=cfg["epochs"],
                                   lr=cfg["lr"], batch_size=cfg["batch_size"], clip=cfg["clip"],
                                   warmup_epochs=cfg["warmup_epochs"],
                                   entropy_weight=cfg["entropy_weight"], seed=f,
                                   eval_every=cfg.get("eval_every", 1), log=log)
            accs.append(out["test_acc"])
            histories.append(out["history"])
        acc = torch.tensor(accs, dtype=torch.float64)
        results[key] = {"test_acc": float(acc.mean()),
                        "test_acc_std": float(acc.std()) if len(accs) > 1 else 0.0,
                        "folds": n_folds, "fold_histories": histories}
    return results


_PAPER_NOTES = {
    "graph8c": "Reported (Kim et al. 2023; FA and GNNML tables, unconfirmed): MLP-GA, -FA, "
               "-Canonical and -PS 0 pairs; GIN 386; GCN 4755.",
    "exp-iso": "Reported (Kim et al. 2023; FA and GNNML tables, unconfirmed): MLP-GA, -FA, "
               "-Canonical and -PS 0 pairs; GIN 600 of 600.",
    "sr25": "SR25 graphs are all 12-regular, so any 1-WL-bounded model (the plain GIN) confuses "
            "all 105 pairs.",
    "exp-classify": "Reported (Kim et al. 2023, rebuttal): MLP-GA 50%, MLP-FA 100%, "
                    "MLP-Canonical 50%, MLP-PS 100% (2,000 epochs, k = 10, 25M-parameter MLP).",
    "csl": "CSL graphs are 4-regular, so a plain GIN (1-WL) is at chance (10%).",
}


def _results_table(name: str, size: str, cfg: dict[str, Any], results: dict[str, Any],
                   seconds: float) -> str:
    size = "quick (CPU)" if size == "quick" else size
    lines = [f"# {name} ({size} size)", "", f"Settings: `{json.dumps(cfg)}`", "",
             f"Wall time: {seconds:.1f} s", ""]
    if name in ("graph8c", "exp-iso", "sr25"):
        lines += separation_table(results)
    else:
        lines += ["| model | test accuracy | details |", "|---|---|---|"]
        for key, r in results.items():
            detail = (f"best epoch {r['best_epoch']}, val acc {r['val_acc']:.3f}, "
                      f"{r['train_seconds']} s" if "best_epoch" in r
                      else f"± {r['test_acc_std']:.3f} over {r['folds']} fold(s)")
            lines.append(f"| {key} | {100 * r['test_acc']:.1f}% | {detail} |")
    lines += ["", _PAPER_NOTES[name]]
    return "\n".join(lines) + "\n"


def run_graph_experiment(name: str, out_dir: str | Path, quick: bool = True,
                         overrides: dict[str, Any] | None = None,
                         log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run graph experiment ``name`` (one of :data:`GRAPH_EXPERIMENTS`) and write
    ``out_dir/metrics.json`` (one entry per model label), ``out_dir/experiment.json`` (size,
    config, device, seconds) and ``out_dir/results.md``, each atomically.

    Args:
        quick: CPU size (minutes on two cores) instead of the paper's size.
        overrides: entries replacing those of :func:`graph_experiment_config` (e.g. for tests);
            ``device`` (default: CUDA if available) is one of them.
    Returns:
        what ``metrics.json`` holds: ``{model label: {metric: value}}``.
    """
    cfg = graph_experiment_config(name, quick)
    cfg.update(overrides or {})
    size = "quick" if quick else "paper"
    return locked_settings_run(
        Path(out_dir), settings_fingerprint(name, size, cfg),
        lambda: _run_settings(name, cfg, out_dir, size, log), label=name,
        outputs=GRAPH_EXPERIMENT.outputs)


def _run_settings(name: str, cfg: dict[str, Any], out_dir: str | Path, size: str,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    log = log or (lambda _msg: None)
    check_graph_settings(name, cfg)
    device = resolve_device(cfg.get("device") or "auto")
    start = time.perf_counter()
    if name in ("graph8c", "exp-iso", "sr25"):
        results = _run_separation(name, cfg, log, device)
    elif name == "exp-classify":
        results = _run_exp_classify(cfg, log, device)
    else:
        results = _run_csl(cfg, log, device)
    seconds = time.perf_counter() - start
    run = {"experiment": name, "size": size, "config": cfg,
           "device": str(device), "seconds": round(seconds, 1)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / EXPERIMENT, run)
    write_json_atomic(out / METRICS, results)
    write_text_atomic(out / RESULTS, _results_table(name, size, cfg, results, seconds))
    return results


class GraphExperiment(SettingsExperiment):
    """The graph experiments (:data:`GRAPH_EXPERIMENTS`): separation counts of untrained
    models, and EXP/CSL classification. ``--steps`` sets the training epochs."""

    name = "graphs"
    task_names = GRAPH_EXPERIMENTS

    def run_settings(self, config: ExperimentConfig, settings: dict[str, Any], out_dir: Path,
                     log: Callable[[str], None]) -> dict[str, Any]:
        return _run_settings(config.task.name, settings, out_dir, config.size, log)


GRAPH_EXPERIMENT = register_experiment(GraphExperiment())
