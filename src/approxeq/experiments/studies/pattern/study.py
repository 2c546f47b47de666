"""PATTERN with symmetrised vision transformers: graphs as images (Kim et al., LPS, §3.3).

Each graph is an ``N × N`` image (:func:`approxeq.symmetrize.graph_image.graph_to_image`)
read by a patch ViT; the ViT is made S_n-equivariant by group averaging (``ga``: Monte-Carlo
Haar samples; averaging over all ``n!`` orderings is out of reach beyond ~8 nodes), frame
averaging (``fa``: Laplacian-eigenvector frames), canonicalisation (``canonical``) or
probabilistic symmetrisation (``ps``), and trained from scratch (backbone ``vit``) or from
pretrained image weights (``vit-pretrained``) with its own learning rate for them.

Pretrained weights come from the size's ``pretrained`` setting:

* ``"timm:NAME"``: timm model ``NAME`` (needs the ``vision`` extra and network access);
* a path: a local checkpoint (:func:`approxeq.nn.vit.load_vit`);
* ``"digits"``: a small-scale stand-in for ImageNet pretraining that works offline: the same
  tiny ViT is first trained to classify scikit-learn's bundled 8 × 8 handwritten digits
  (1,797 images, upsampled), saved to ``DIR/pretrained-digits.pt`` and loaded back from that
  file like any checkpoint. Without scikit-learn the pretrained rows are left out.

Metric: the class-balanced node accuracy (:func:`approxeq.data.pattern.weighted_accuracy`) on
the test graphs, at the epoch of the best validation accuracy, as mean ± standard error over
training seeds. Entry point: :func:`run_pattern_experiment`.
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
import torch.nn.functional as F
from torch import Tensor, nn

from approxeq.data.pattern import PatternConfig, PatternData, make_pattern, weighted_accuracy
from approxeq.experiments.base import (
    SettingsExperiment,
    locked_settings_run,
    settings_fingerprint,
    settings_of,
)
from approxeq.experiments.registry import load_named_experiment, register_experiment
from approxeq.experiments.schema import ExperimentConfig
from approxeq.experiments.settings_check import check_settings, check_value, require_extra
from approxeq.files import write_json_atomic, write_text_atomic
from approxeq.nn.vit import VisionTransformer, ViTConfig, load_vit, save_vit, vit_param_groups
from approxeq.symmetrize.graph_image import (
    GraphImageNet,
    graph_image_channels,
    symmetrized_graph_image_model,
)
from approxeq.train.config import ConfigError
from approxeq.train.config_checks import dataclass_from_mapping
from approxeq.train.distributed import resolve_device
from approxeq.train.rundir import (
    EXPERIMENT,
    METRICS,
    RESULTS,
    fingerprint_changes,
    make_fingerprint,
)

__all__ = ["PATTERN_SETTINGS", "PatternExperiment", "build_pattern_model",
           "check_pattern_settings", "digits_pretrained_vit",
           "pattern_experiment_config", "run_pattern_experiment", "train_pattern_model"]

BACKBONES = ("vit", "vit-pretrained")


def _vit_setting(value: Any, where: str) -> ViTConfig:
    return dataclass_from_mapping(ViTConfig, value, where, in_channels=1, grid_size=1)


def _generator_setting(value: Any, where: str) -> PatternConfig:
    return dataclass_from_mapping(PatternConfig, value, where, vocab_size=1)


def _per_pattern_setting(value: Any, where: str) -> Any:
    check_value(value, "ints>=1", where)
    if len(value) != 3:
        raise ConfigError(f"{where}: expected [train, val, test] graphs per pattern, got "
                          f"{value!r}")
    return value


#: what each setting of the experiment must be (see :mod:`approxeq.experiments.settings_check`)
PATTERN_SETTINGS: dict[str, Any] = {
    "vocab_size": "int>=1", "generator": _generator_setting, "n_patterns": "int>=1",
    "per_pattern": _per_pattern_setting, "vit": _vit_setting, "pretrained": "str?",
    "pretrain_epochs": "int>=0", "pretrain_lr": "num>=0", "seeds": "int>=1",
    "epochs": "int>=1", "batch_size": "int>=1", "lr": "num>0", "pretrained_lr": "num>=0",
    "weight_decay": "num>=0", "clip": "num>0", "k_train": "int>=1", "k_eval": "int>=1",
    "q_hidden": "int>=1", "q_layers": "int>=1", "tau": "num>0", "sinkhorn_iters": "int>=1",
    "entropy_weight": "num>=0", "eval_every": "int>=1", "data_seed": "int>=0"}
_OPTIONAL = ("generator", "pretrained", "data_seed", "pretrain_epochs", "pretrain_lr")


def check_pattern_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """Refuse settings the run would fail on, before any model trains: unknown keys (named
    with the closest valid one), wrong kinds and sizes, and pretrained weights that cannot be
    had (timm missing for ``timm:NAME``; a missing or unreadable checkpoint file)."""
    check_settings(cfg, PATTERN_SETTINGS, "pattern",
                   required=[k for k in PATTERN_SETTINGS if k not in _OPTIONAL])
    if any(len(m) == 3 and m[1] == "vit-pretrained" for m in cfg.get("models", [])):
        source = cfg.get("pretrained", "digits")
        if str(source).startswith("timm:"):
            require_extra("timm", "vision", f"task.options.pretrained: {source!r}")
        elif source not in (None, "digits"):
            load_vit(source)  # names the file if it is missing, empty or damaged
    return cfg


def pattern_experiment_config(quick: bool) -> dict[str, Any]:
    """The settings of the PATTERN experiment at the quick (CPU) or paper size: the task
    options of its shipped YAML, with ``models`` as ``[label, backbone, strategy]``; a copy."""
    return settings_of(load_named_experiment("pattern", "quick" if quick else "paper"))


def _vit_config(cfg: dict[str, Any], n_max: int) -> ViTConfig:
    vit = dict(cfg["vit"])
    p = vit["patch_size"]
    return ViTConfig(in_channels=graph_image_channels(cfg["vocab_size"]),
                     grid_size=-(-n_max // p), **vit)


def build_pattern_model(strategy: str, backbone: VisionTransformer, cfg: dict[str, Any],
                        n_max: int) -> nn.Module:
    """The node classifier: ``backbone`` on graph images, 2 logits per node, symmetrised by
    ``strategy``; called as ``model(x [b, n, 3], adj [b, n, n], mask [b, n])``."""
    base = GraphImageNet(backbone, node_channels=cfg["vocab_size"], out_channels=2,
                         level="node")
    return symmetrized_graph_image_model(base, n_max, strategy, k_train=cfg["k_train"],
                                         k_eval=cfg["k_eval"], q_hidden=cfg["q_hidden"],
                                         q_layers=cfg["q_layers"], tau=cfg["tau"],
                                         sinkhorn_iters=cfg["sinkhorn_iters"])


def _digit_images(size: int) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.permute(0, 2, 3, 1), torch.tensor(digits.target)


def digits_pretrained_vit(config: ViTConfig, path: Path, *, epochs: int, lr: float,
                          seed: int = 0, max_images: int | None = None,
                          log: Callable[[str], None] | None = print) -> Path:
    """Pretrain a ViT of ``config`` (one input channel) to classify scikit-learn's digits and
    save it to ``path`` (:func:`~approxeq.nn.vit.save_vit`), with what produced it (the ViT's
    settings, ``epochs``, ``lr``, ``seed``, ``max_images``, the torch thread count and the
    library version) in the fingerprint file beside it (``<path stem>.json``, written after
    the weights). A file already there is reused only when its fingerprint matches; otherwise
    (other settings, or no fingerprint) the ViT is pretrained again, with a log line naming
    what changed.

    A small-scale stand-in for ImageNet weights: it gives the blocks and positional
    embeddings an image prior, nothing more. The first 297 images are held out to report an
    accuracy; ``max_images`` caps the training images (for tests). Raises ``ImportError``
    without scikit-learn.
    """
    cfg = ViTConfig(**{**config.__dict__, "in_channels": 1})
    fingerprint = make_fingerprint(spec=None, task=None, train={
        "vit": cfg.__dict__, "epochs": epochs, "lr": lr, "seed": seed, "max_images": max_images,
        "num_threads": torch.get_num_threads()}, extra={"pretrained": "digits"})
    meta = path.with_suffix(".json")
    if path.is_file():
        stored = _stored_pretraining(meta)
        changes = fingerprint_changes(stored, fingerprint) if stored is not None else None
        if changes == []:
            return path
        (log or (lambda _msg: None))(
            f"pattern: {path.name} was pretrained with other settings "
            f"({'; '.join(changes[:4]) if changes else f'no {meta.name}'}): pretraining again")
    meta.unlink(missing_ok=True)  # weights being replaced never keep a matching fingerprint
    torch.manual_seed(seed)
    images, labels = _digit_images(cfg.grid_size * cfg.patch_size)
    vit = VisionTransformer(cfg)
    head = nn.Linear(cfg.embed_dim, 10)
    params = [*vit.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr)
    order_gen = torch.Generator().manual_seed(seed)
    n_test = 297
    train_x, train_y = images[n_test:][:max_images], labels[n_test:][:max_images]
    for _ in range(epochs):
        for idx in torch.randperm(len(train_x), generator=order_gen).split(64):
            loss = F.cross_entropy(head(vit(train_x[idx])[:, 0]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (head(vit(images[:n_test])[:, 0]).argmax(-1) == labels[:n_test]).double().mean()
    (log or (lambda _msg: None))(f"pattern: pretrained the ViT on digits for {epochs} "
                                 f"epochs, held-out accuracy {float(acc):.3f}")
    save_vit(vit, path)
    write_json_atomic(meta, {**fingerprint, "heldout_accuracy": float(acc)})
    return path


def _stored_pretraining(path: Path) -> dict[str, Any] | None:
    """The fingerprint stored in ``path`` (without its ``heldout_accuracy`` record), or
    ``None`` when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    value.pop("heldout_accuracy", None)
    return value


def _backbone(kind: str, cfg: dict[str, Any], n_max: int, weights: Path | str | None
              ) -> VisionTransformer:
    config = _vit_config(cfg, n_max)
    if kind == "vit":
        return VisionTransformer(config)
    if isinstance(weights, str) and weights.startswith("timm:"):
        from approxeq.nn.vit import vit_from_timm

        return vit_from_timm(weights.removeprefix("timm:"), in_channels=config.in_channels,
                             grid_size=config.grid_size)
    return load_vit(weights, in_channels=config.in_channels, grid_size=config.grid_size)


def _logits(model: nn.Module, data: PatternData, generator) -> tuple[Tensor, Tensor]:
    out = model(data.x, data.adj, data.mask, generator=generator)
    return out.output, sum(out.regularizers.values(), data.x.new_zeros(()))


@torch.no_grad()
def _accuracy(model: nn.Module, data: PatternData, batch_size: int, generator) -> float:
    model.eval()
    preds = []
    for start in range(0, len(data), batch_size):
        part = data.subset(slice(start, start + batch_size))
        preds.append(_logits(model, part, generator)[0].argmax(-1))
    return weighted_accuracy(torch.cat(preds), data.y, data.mask)


def train_pattern_model(model: nn.Module, splits: dict[str, PatternData], cfg: dict[str, Any],
                        *, seed: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """AdamW (pretrained parameters at ``pretrained_lr``, the rest at ``lr``) on the
    class-weighted cross-entropy of the nodes plus ``entropy_weight`` times the strategy's
    regularisers; returns the test weighted accuracy at the best validation accuracy."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    device = train.x.device
    counts = torch.bincount(train.y[train.mask], minlength=2).to(train.x.dtype)
    # the benchmark weighs each class by the share of the other class
    class_weight = (counts.sum() - counts) / counts.sum()
    groups = vit_param_groups(model, lr=cfg["lr"], pretrained_lr=cfg["pretrained_lr"],
                              weight_decay=cfg["weight_decay"])
    opt = torch.optim.AdamW(groups)
    shuffle = torch.Generator().manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    best = {"val_acc": -math.inf, "best_epoch": -1}
    best_state = copy.deepcopy(model.state_dict())
    start_time = time.perf_counter()
    for epoch in range(cfg["epochs"]):
        model.train()
        for idx in torch.randperm(len(train), generator=shuffle).split(cfg["batch_size"]):
            part = train.subset(idx.to(device))
            logits, reg = _logits(model, part, gen)
            loss = F.cross_entropy(logits[part.mask], part.y[part.mask], weight=class_weight)
            if cfg["entropy_weight"]:
                loss = loss + cfg["entropy_weight"] * reg
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
            opt.step()
        if (epoch + 1) % cfg["eval_every"] and epoch != cfg["epochs"] - 1:
            continue
        val_acc = _accuracy(model, val, cfg["batch_size"], gen)
        if val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "best_epoch": epoch}
            best_state = copy.deepcopy(model.state_dict())
        log(f"  epoch {epoch}: train loss {loss.item():.4f}, val weighted acc {val_acc:.3f}")
    train_seconds = time.perf_counter() - start_time
    model.load_state_dict(best_state)
    best["test_acc"] = _accuracy(model, test, cfg["batch_size"],
                                 torch.Generator(device=device).manual_seed(100 + seed))
    best["train_seconds"] = round(train_seconds, 1)
    best["n_params"] = sum(p.numel() for p in model.parameters())
    return best


def _pretrained_weights(cfg: dict[str, Any], n_max: int, out_dir: Path,
                        log: Callable[[str], None]) -> tuple[Path | str | None, str]:
    source = cfg.get("pretrained", "digits")
    if source is None:
        return None, "no pretrained weights configured"
    if str(source).startswith("timm:"):
        return str(source), f"timm weights {source}"
    if source != "digits":
        return Path(source), f"local checkpoint {source}"
    try:
        path = digits_pretrained_vit(_vit_config(cfg, n_max), out_dir / "pretrained-digits.pt",
                                     epochs=cfg["pretrain_epochs"], lr=cfg["pretrain_lr"],
                                     log=log)
    except ImportError:
        return None, "scikit-learn is not installed: no digits to pretrain on"
    return path, ("ViT pretrained on scikit-learn's 8x8 digits (a small-scale stand-in for "
                  "ImageNet weights)")


def run_pattern_experiment(out_dir: str | Path, quick: bool = True,
                           overrides: dict[str, Any] | None = None,
                           log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the PATTERN experiment and write ``out_dir/metrics.json`` (one entry per
    strategy × backbone, with ``test_acc`` and ``test_acc_se``), ``experiment.json`` and
    ``results.md``, each atomically.

    Args:
        quick: CPU size (minutes on two cores) instead of the paper's size.
        overrides: entries replacing those of :func:`pattern_experiment_config`.
    """
    cfg = pattern_experiment_config(quick)
    cfg.update(overrides or {})
    size = "quick" if quick else "paper"
    return locked_settings_run(
        Path(out_dir), settings_fingerprint(PATTERN_EXPERIMENT.name, size, cfg),
        lambda: _run_settings(cfg, out_dir, size, log), label="pattern",
        outputs=PATTERN_EXPERIMENT.outputs)


def _run_settings(cfg: dict[str, Any], out_dir: str | Path, size: str,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    log = log or (lambda _msg: None)
    check_pattern_settings(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.get("device") or "auto")
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    start = time.perf_counter()
    gen_cfg = PatternConfig(**cfg.get("generator", {}), vocab_size=cfg["vocab_size"])
    train, val, test = make_pattern(cfg["n_patterns"], tuple(cfg["per_pattern"]),
                                    seed=cfg.get("data_seed", 0), config=gen_cfg)
    splits = {k: v.to(dtype, device) for k, v in
              (("train", train), ("val", val), ("test", test))}
    n_max = train.n_max
    log(f"pattern: {len(train)}/{len(val)}/{len(test)} graphs, up to {n_max} nodes")
    models = [m for m in cfg["models"] if m[1] in BACKBONES]
    unknown = [m[1] for m in cfg["models"] if m[1] not in BACKBONES]
    if unknown:
        raise ValueError(f"models: backbone must be one of {list(BACKBONES)}, got {unknown}")
    weights, note = (None, "")
    if any(m[1] == "vit-pretrained" for m in models):
        weights, note = _pretrained_weights(cfg, n_max, out, log)
        log(f"pattern: pretrained backbone: {note}")
    results: dict[str, Any] = {}
    for label, kind, strategy in models:
        if kind == "vit-pretrained" and weights is None:
            continue
        accs, runs = [], []
        for seed in range(cfg["seeds"]):
            torch.manual_seed(seed)
            backbone = _backbone(kind, cfg, n_max, weights)
            model = build_pattern_model(strategy, backbone, cfg, n_max).to(dtype=dtype,
                                                                          device=device)
            log(f"pattern {label} seed {seed}")
            run = train_pattern_model(model, splits, cfg, seed=seed, log=log)
            accs.append(run["test_acc"])
            runs.append(run)
        acc = torch.tensor(accs, dtype=torch.float64)
        se = float(acc.std() / math.sqrt(len(accs))) if len(accs) > 1 else 0.0
        results[label] = {"test_acc": float(acc.mean()), "test_acc_se": se,
                          "test_acc_seeds": accs, "seeds": cfg["seeds"],
                          "val_acc": float(sum(r["val_acc"] for r in runs) / len(runs)),
                          "train_seconds": round(sum(r["train_seconds"] for r in runs), 1),
                          "n_params": runs[0]["n_params"], "backbone": kind,
                          "strategy": strategy}
    seconds = time.perf_counter() - start
    run_info = {"experiment": "pattern", "size": size, "config": cfg, "device": str(device),
                "seconds": round(seconds, 1), "pretrained": note}
    write_json_atomic(out / EXPERIMENT, run_info)
    write_json_atomic(out / METRICS, results)
    write_text_atomic(out / RESULTS, _results_table(size, cfg, results, seconds, note))
    return results


def _results_table(size: str, cfg: dict[str, Any], results: dict[str, Any], seconds: float,
                   note: str) -> str:
    lines = [f"# PATTERN, graphs as images ({size} size)", "",
             f"Settings: `{json.dumps(cfg)}`", "", f"Wall time: {seconds:.1f} s", "",
             f"Pretrained backbone: {note or 'none'}", "",
             "| model | weighted test accuracy | val | train s | params |",
             "|---|---|---|---|---|"]
    for key, r in results.items():
        lines.append(f"| {key} | {100 * r['test_acc']:.1f} ± {100 * r['test_acc_se']:.1f}% | "
                     f"{100 * r['val_acc']:.1f}% | {r['train_seconds']} | {r['n_params']} |")
    lines += ["", "Mean ± standard error over training seeds; the paper size (ViT-B/16, "
              "10,000 / 2,000 / 2,000 graphs) needs a GPU."]
    return "\n".join(lines) + "\n"


class PatternExperiment(SettingsExperiment):
    """PATTERN node classification with symmetrised ViTs; ``--steps`` sets the epochs."""

    name = "pattern"
    task_names = ("pattern",)
    outputs = ("pretrained-digits.pt", "pretrained-digits.json")

    def run_settings(self, config: ExperimentConfig, settings: dict[str, Any], out_dir: Path,
                     log: Callable[[str], None]) -> dict[str, Any]:
        return _run_settings(settings, out_dir, config.size, log)


PATTERN_EXPERIMENT = register_experiment(PatternExperiment())
