"""The experiment runner: train every model of an :class:`ExperimentConfig`, evaluate them on
fixed in-distribution (ID) and out-of-distribution (OOD) test sets against the GP oracle, and
write the results.

A run directory ``out_dir`` holds

* ``config.yaml``: the resolved configuration (read back by :func:`evaluate_run`);
* ``<label>/``: one training run per model (``last.pt``, ``best.pt``, ``history.json``) and
  its evaluation ``eval.json``;
* ``metrics.json``: one entry per model label (and ``"oracle"``), each holding the ID
  ``loglik``, ``loglik_se``, ``rmse``, ``coverage95`` and a dict per setting (``"id"``,
  ``"ood"``) with the same keys; approximately equivariant models add ``delta_equiv`` and
  ``component`` (the equivariant component's metrics); models with a symmetry add
  ``equivariance`` (orbit equivariance error under ``model.symmetry``);
* ``experiment.json``: what ran (name, size, task, settings, times);
* ``results.md``: a markdown table of the same numbers.

Rerunning :func:`run_experiment` on the same directory skips models whose training finished
and whose evaluation is on disk, and resumes unfinished ones from ``last.pt``.

The experiment's ``extra`` section may set ``ood_shift`` (float or one per input dimension,
default 8.0; ``null`` = no OOD setting), ``equivariance_elements`` (group elements for the orbit
error, default 4), ``equivariance_tasks`` (tasks it uses, default 8), ``plot_range`` (the x
range of figures) and ``figures`` (``false`` = no figures).

Saved task files (``approxeq eval RUN_DIR --data FILE``): see :func:`save_batches`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from approxeq.approximate import (delta_equiv, equivariance_error, equivariant_component,
                                  is_approximate)
from approxeq.data.base import TaskGenerator
from approxeq.np.batch import Batch
from approxeq.np.functional import EvalResult, gaussian_metrics
from approxeq.train.checkpoint import (ModelSpec, load_checkpoint, load_model, save_atomic,
                                       write_json_atomic, write_text_atomic)
from approxeq.train.config import (ConfigError, ExperimentConfig, ModelConfig, TaskConfig,
                                   load_experiment, save_experiment)
from approxeq.train.distributed import is_main_process, resolve_device
from approxeq.train.loop import evaluate, train

METRICS = "metrics.json"
RESULTS = "results.md"
EXPERIMENT = "experiment.json"
CONFIG = "config.yaml"
MODEL_EVAL = "eval.json"
BATCHES_FORMAT = "approxeq-batches"
ORACLE = "oracle"
#: bump when the evaluation protocol changes, so cached per-model evaluations are redone
EVAL_VERSION = 1

Log = Callable[[str], None]
#: ``figures(out_dir, config, models, test_sets, histories) -> written paths``
FigureHook = Callable[[Path, ExperimentConfig, Mapping[str, nn.Module],
                       Mapping[str, Sequence[Batch]], Mapping[str, dict]], Sequence[Path]]


# --------------------------------------------------------------------------------------------
# Tasks and test sets
# --------------------------------------------------------------------------------------------

def make_task(task: TaskConfig, *, ood: bool = False, shift: float | Sequence[float] = 8.0
              ) -> TaskGenerator:
    """The task generator of a :class:`TaskConfig`: any name of
    :func:`approxeq.data.gp.gp_task` (``gibbs``, ``eq``, ...), its options passed through;
    ``ood=True`` moves the input windows by ``shift``."""
    from approxeq.data.gp import TASK_NAMES, gp_task

    if task.name not in TASK_NAMES:
        raise ConfigError(f"task.name: unknown task {task.name!r}; the experiment runner knows "
                          f"{', '.join(TASK_NAMES)}")
    try:
        return gp_task(task.name, task.dim_x, dim_y=task.dim_y, ood=ood, shift=shift,
                       **task.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task: cannot build task {task.name!r} with options "
                          f"{task.options}: {err}") from None


def ood_shift(config: ExperimentConfig) -> float | list[float] | None:
    """The OOD shift of the experiment (``extra.ood_shift``, default 8.0; ``None``: no OOD)."""
    return config.extra.get("ood_shift", 8.0)


def make_test_sets(config: ExperimentConfig) -> dict[str, list[Batch]]:
    """Fixed-seed test sets ``{"id": [...], "ood": [...]}`` (``ood`` only when
    ``extra.ood_shift`` is not null): ``config.train.test_tasks`` tasks in batches of
    ``config.train.eval_batch_size``, seeded by ``config.train.test_seed``."""
    t = config.train
    if t.test_tasks < 1:
        raise ConfigError("test_tasks: expected >= 1 to evaluate the experiment, got 0")
    sets = {"id": make_task(config.task).fixed_set(t.test_tasks, t.eval_batch_size, t.test_seed)}
    shift = ood_shift(config)
    if shift is not None:
        sets["ood"] = make_task(config.task, ood=True, shift=shift).fixed_set(
            t.test_tasks, t.eval_batch_size, t.test_seed)
    return sets


def context_region(config: ExperimentConfig, setting: str = "id") -> tuple[float, float] | None:
    """The (first-dimension) context window of a setting, for figures."""
    try:
        task = make_task(config.task, ood=setting == "ood", shift=ood_shift(config) or 0.0)
    except ConfigError:
        return None
    box = getattr(task, "context_range", None)
    return None if box is None else (float(box[0, 0]), float(box[0, 1]))


# --------------------------------------------------------------------------------------------
# Saved batches
# --------------------------------------------------------------------------------------------

def save_batches(path: str | Path, batches: Sequence[Batch]) -> Path:
    """Write tasks to a ``.pt`` file that :func:`load_batches` (and ``approxeq eval --data``)
    reads.

    Format: ``torch.save`` of ``{"format": "approxeq-batches", "version": 1, "batches": [...]}``
    where each batch is a dict of tensors ``xc [b, nc, dx]``, ``yc [b, nc, dy]``,
    ``xt [b, nt, dx]``, ``yt [b, nt, dy]``, optional masks ``mc [b, nc]``, ``mt [b, nt]`` and
    ``aux``, a dict of the batch's tensor-valued extras (e.g. the oracle's ``gt_loglik [b]``).
    It holds only tensors, so it loads with ``weights_only=True``. Written atomically.
    """
    if len(batches) == 0:
        raise ValueError("batches: expected at least one batch, got none")
    out = []
    for i, b in enumerate(batches):
        if not isinstance(b, Batch):
            raise TypeError(f"batches[{i}]: expected an approxeq.np.Batch, got {type(b).__name__}")
        d = {k: getattr(b, k) for k in ("xc", "yc", "xt", "yt", "mc", "mt")
             if getattr(b, k) is not None}
        d["aux"] = {k: v for k, v in (b.aux or {}).items() if isinstance(v, Tensor)}
        out.append(d)
    return save_atomic({"format": BATCHES_FORMAT, "version": 1, "batches": out}, path)


def load_batches(path: str | Path) -> list[Batch]:
    """Read a file written by :func:`save_batches` (or a plain list of such batch dicts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: no file at {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"data: {path} is not a saved task file ({err})") from None
    if isinstance(raw, dict):
        if raw.get("format") != BATCHES_FORMAT:
            raise ValueError(f"data: {path} is not an approxeq task file (expected a dict with "
                             f"format={BATCHES_FORMAT!r}, as written by save_batches)")
        raw = raw["batches"]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"data: {path}: expected a non-empty list of batches")
    batches = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict) or not {"xc", "yc", "xt", "yt"} <= set(d):
            raise ValueError(f"data: {path}: batch {i} must be a dict with xc, yc, xt, yt")
        batches.append(Batch(xc=d["xc"], yc=d["yc"], xt=d["xt"], yt=d["yt"], mc=d.get("mc"),
                             mt=d.get("mt"), aux=dict(d.get("aux") or {})))
    return batches


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def _mean_se(v: Tensor) -> tuple[float, float]:
    v = v.double()
    n = v.numel()
    return float(v.mean()), float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _to(batch: Batch, model: nn.Module) -> Batch:
    device, dtype = _device_dtype(model)
    return batch.to(device=device, dtype=dtype)


def oracle_metrics(batches: Sequence[Batch]) -> dict[str, float] | None:
    """The oracle's metrics on ``batches``: ``loglik`` (± ``loglik_se``) from
    ``aux["gt_loglik"]``; ``rmse`` and ``coverage95`` from its moment-matched predictive when
    ``aux["oracle"]`` is there. ``None`` when a batch has no oracle log-likelihood."""
    if not all(b.aux and "gt_loglik" in b.aux for b in batches):
        return None
    ll = torch.cat([b.aux["gt_loglik"].double().reshape(-1) for b in batches])
    mean, se = _mean_se(ll)
    out = {"loglik": mean, "loglik_se": se, "n_tasks": ll.numel()}
    if all("oracle" in b.aux and hasattr(b.aux["oracle"], "posterior") for b in batches):
        results = []
        for b in batches:
            post = b.aux["oracle"].posterior(b.xc.double(), b.yc.double(), b.xt.double())
            results.append(gaussian_metrics(post.mean, post.var.clamp_min(0).sqrt(), b.yt, b.mt))
        s = EvalResult.cat(results).summary()
        out.update(rmse=s["rmse"], rmse_se=s["rmse_se"], coverage95=s["coverage95"])
    return out


def evaluate_model(model: nn.Module, batches: Sequence[Batch], *, equivariance_elements: int = 4,
                   equivariance_tasks: int = 8, seed: int = 0) -> dict[str, Any]:
    """Every metric of one model on one setting.

    Returns a dict with ``loglik``, ``loglik_se``, ``rmse``, ``rmse_se``, ``coverage95``,
    ``n_tasks``; for approximately equivariant models also ``component`` (the same metrics of
    the equivariant component, every fixed input zero), ``component_loglik`` and
    ``delta_equiv`` / ``delta_equiv_se`` (mean absolute difference of the predictive means of
    model and component); for models with a ``symmetry``, ``equivariance``: the orbit
    equivariance error (``equiv_err_mean``, ``equiv_err_max``, ``scale``, the group, and for
    approximate models the component's ``component_equiv_err_max``) on the first
    ``equivariance_tasks`` tasks under ``equivariance_elements`` random group elements
    (lattice shifts for lattice-translation symmetries).
    """
    out: dict[str, Any] = evaluate(model, batches, seed=seed).summary()
    approximate = is_approximate(model)
    if approximate:
        with equivariant_component(model):
            comp = evaluate(model, batches, seed=seed).summary()
        out["component"] = comp
        out["component_loglik"], out["component_loglik_se"] = comp["loglik"], comp["loglik_se"]
        deltas = torch.cat([delta_equiv(model, *(lambda b: (b.xc, b.yc, b.xt))(_to(b, model)))
                            .double().cpu() for b in batches])
        out["delta_equiv"], out["delta_equiv_se"] = _mean_se(deltas)
    group = getattr(model, "symmetry", None)
    if group is not None and equivariance_elements > 0:
        b = _to(batches[0], model)
        k = min(equivariance_tasks, b.batch_size)
        task = (b.xc[:k], b.yc[:k], b.xt[:k])
        kwargs = dict(n_elements=equivariance_elements)
        report = equivariance_error(model, group, *task,
                                    generator=torch.Generator().manual_seed(seed), **kwargs)
        eq = {"group": repr(group), **report.summary(), "scale": report.scale}
        if approximate:
            with equivariant_component(model):
                comp_report = equivariance_error(
                    model, group, *task, generator=torch.Generator().manual_seed(seed), **kwargs)
            eq["component_equiv_err_max"] = comp_report.max_error
        out["equivariance"] = eq
    return out


def _entry(per_setting: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any]) -> dict:
    """A metrics.json entry: the first setting's headline numbers at the top level (so every
    entry has ``loglik`` and ``loglik_se``), then one dict per setting."""
    first = next(iter(per_setting.values()))
    entry = {k: first[k] for k in ("loglik", "loglik_se", "rmse", "coverage95") if k in first}
    if "component_loglik" in first:
        entry["component_loglik"] = first["component_loglik"]
        entry["delta_equiv"] = first["delta_equiv"]
    entry.update(extra)
    entry.update({s: dict(v) for s, v in per_setting.items()})
    return entry


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes:
        out_dir: the run directory. metrics: the content of ``metrics.json``.
        models: the trained models (best checkpoints), by label.
        histories: their ``history.json`` contents, by label.
        figures: the figure files written. seconds: wall time of the call.
    """

    out_dir: Path
    metrics: dict[str, Any]
    models: dict[str, nn.Module] = field(default_factory=dict)
    histories: dict[str, dict] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _default_log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _finished_step(run_dir: Path) -> int:
    last = run_dir / "last.pt"
    if not last.is_file():
        return 0
    return load_checkpoint(last).step


def _test_signature(config: ExperimentConfig) -> dict[str, Any]:
    t = config.train
    return {"version": EVAL_VERSION, "task": config.task.to_dict(), "ood_shift": ood_shift(config),
            "test_tasks": t.test_tasks, "test_seed": t.test_seed,
            "eval_batch_size": t.eval_batch_size,
            "equivariance_elements": config.extra.get("equivariance_elements", 4),
            "equivariance_tasks": config.extra.get("equivariance_tasks", 8)}


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _train_one(mc: ModelConfig, config: ExperimentConfig, run_dir: Path, *, progress: bool,
               log: Log, device: str | None) -> tuple[nn.Module, dict, float]:
    tcfg = mc.train if device is None else mc.train.replace(device=device)
    spec = ModelSpec(mc.name, config.task.dim_x, config.task.dim_y, dict(mc.options))
    done = _finished_step(run_dir)
    if done >= tcfg.steps and (run_dir / "best.pt").is_file():
        log(f"[{mc.label}] finished earlier ({done} steps): skipping training")
        model = load_model(run_dir / "best.pt", map_location=resolve_device(tcfg.device))
        history = _read_json(run_dir / "history.json") or {}
        return model, history, 0.0
    try:
        model = spec.build()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"models: cannot build {mc.label!r} ({mc.name} with options "
                          f"{mc.options}): {err}") from None
    generator = make_task(config.task)
    if hasattr(generator, "with_oracle"):
        generator = generator.with_oracle(False)  # the oracle is only needed at evaluation
    val = None
    if tcfg.val_every > 0 and tcfg.val_tasks > 0:
        val = generator.fixed_set(tcfg.val_tasks, tcfg.eval_batch_size, tcfg.val_seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[{mc.label}] {mc.name} {mc.options or ''} ({n_params:,} parameters): "
        f"{tcfg.steps} steps" + (f", resuming from step {done}" if done else ""))
    result = train(model, generator, tcfg, run_dir, val_set=val, resume=True, progress=progress,
                   log=log, spec=spec)
    model = result.load_best().eval()
    return model, result.history, result.seconds


def select_models(config: ExperimentConfig, only: Sequence[str] | None,
                  reserved: Sequence[str] = ()) -> list[ModelConfig]:
    """The model configs to run (all, or those labelled in ``only``), after checking that every
    label can name a run directory."""
    labels = [m.label for m in config.models]
    if only:
        unknown = [o for o in only if o not in labels]
        if unknown:
            raise ConfigError(f"only: unknown model label(s) {unknown}; labels: {labels}")
    chosen = [m for m in config.models if not only or m.label in only]
    for m in chosen:
        if "/" in m.label or m.label in ("", ".", "..", *reserved):
            raise ConfigError(f"models: label {m.label!r} cannot name a run directory")
    return chosen


def with_cached_entries(config: ExperimentConfig, out_dir: Path, entries: dict[str, Any],
                        signature: Any) -> dict[str, Any]:
    """``entries`` completed, in config order, with the still-valid cached evaluations of the
    models not run this time (``only``)."""
    merged = dict(entries)
    for mc in config.models:
        cached = _read_json(out_dir / mc.label / MODEL_EVAL)
        if mc.label not in merged and isinstance(cached, dict) and \
                cached.get("signature") == signature:
            merged[mc.label] = cached["entry"]
    return {m.label: merged[m.label] for m in config.models if m.label in merged}


def run_experiment(config: ExperimentConfig, out_dir: str | Path, *, progress: bool = True,
                   log: Log | None = None, figures: FigureHook | None = None,
                   device: str | None = None, only: Sequence[str] | None = None
                   ) -> ExperimentResult:
    """Train, evaluate and report every model of ``config`` in ``out_dir`` (see the module
    docstring for the files).

    Args:
        config: a resolved experiment (e.g. :func:`~approxeq.train.load_experiment`).
        out_dir: the run directory (created). Rerunning resumes: finished models are skipped,
            unfinished ones continue from their ``last.pt``.
        progress: progress bars while training.
        log: receives status messages (default: stderr).
        figures: called once at the end with ``(out_dir, config, models, test_sets,
            histories)``; returns the files it wrote (e.g.
            :func:`approxeq.plot.experiment_figures`).
            Skipped when ``extra.figures`` is false.
        device: overrides every model's ``train.device`` (``"cpu"``, ``"cuda"``, ...).
        only: train and evaluate only these labels; the others appear in the results only
            if an earlier run evaluated them on the same test sets.

    Returns:
        :class:`ExperimentResult`; ``metrics`` is what ``metrics.json`` holds.
    """
    start = time.monotonic()
    main = is_main_process()  # under DDP the other ranks only train
    log = (log or _default_log) if main else (lambda _message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = select_models(config, only, reserved=(ORACLE,))
    if main:
        save_experiment(config, out_dir / CONFIG)

    log(f"experiment {config.name!r} (size {config.size}): {len(chosen)} model(s) on task "
        f"{config.task.name!r}; building test sets")
    test_sets = make_test_sets(config) if main else {}
    signature = _test_signature(config)
    eq_elements = int(config.extra.get("equivariance_elements", 4))
    eq_tasks = int(config.extra.get("equivariance_tasks", 8))

    models: dict[str, nn.Module] = {}
    histories: dict[str, dict] = {}
    entries: dict[str, Any] = {}
    for mc in chosen:
        run_dir = out_dir / mc.label
        model, history, seconds = _train_one(mc, config, run_dir, progress=progress, log=log,
                                             device=device)
        models[mc.label], histories[mc.label] = model, history
        if not main:
            continue
        step = _finished_step(run_dir)
        cached = _read_json(run_dir / MODEL_EVAL)
        if (isinstance(cached, dict) and cached.get("signature") == signature
                and cached.get("step") == step):
            entries[mc.label] = cached["entry"]
            continue
        per_setting = {}
        for setting, batches in test_sets.items():
            per_setting[setting] = evaluate_model(model, batches,
                                                  equivariance_elements=eq_elements,
                                                  equivariance_tasks=eq_tasks)
        info = {"name": mc.name, "options": mc.options, "steps": step,
                "parameters": sum(p.numel() for p in model.parameters()),
                "symmetry": repr(getattr(model, "symmetry", None)),
                "approximate": is_approximate(model)}
        ckpt_seconds = load_checkpoint(run_dir / "last.pt").extra.get("seconds")
        if ckpt_seconds is not None:
            info["train_seconds"] = ckpt_seconds
        entries[mc.label] = _entry(per_setting, info)
        write_json_atomic(run_dir / MODEL_EVAL, {"signature": signature, "step": step,
                                                 "entry": entries[mc.label]})
        log(f"[{mc.label}] " + ", ".join(
            f"{s}: {v['loglik']:.3f} ± {v['loglik_se']:.3f}" for s, v in per_setting.items()))

    if not main:
        return ExperimentResult(out_dir=out_dir, metrics={}, models=models, histories=histories,
                                figures=[], seconds=time.monotonic() - start)
    metrics = with_cached_entries(config, out_dir, entries, signature)
    oracle = {s: m for s, b in test_sets.items() if (m := oracle_metrics(b)) is not None}
    if oracle:
        metrics[ORACLE] = _entry(oracle, {"name": "gp-oracle"})
    write_json_atomic(out_dir / METRICS, metrics)
    write_text_atomic(out_dir / RESULTS, results_markdown(metrics, title=config.name,
                                                          description=config.description))

    paths: list[Path] = []
    if figures is not None and config.extra.get("figures", True):
        paths = list(figures(out_dir, config, models, test_sets, histories))
    write_json_atomic(out_dir / EXPERIMENT, {
        "name": config.name, "size": config.size, "description": config.description,
        "task": config.task.to_dict(), "settings": list(test_sets), "ood_shift": ood_shift(config),
        "models": [m.to_dict() for m in chosen],
        "figures": [str(p.relative_to(out_dir)) if p.is_relative_to(out_dir) else str(p)
                    for p in paths],
        "seconds": time.monotonic() - start})
    return ExperimentResult(out_dir=out_dir, metrics=metrics, models=models, histories=histories,
                            figures=paths, seconds=time.monotonic() - start)


def evaluate_run(run_dir: str | Path, *, data: str | Path | None = None,
                 out: str | Path | None = None, log: Log | None = None,
                 checkpoint: str = "best.pt", device: str | None = None
                 ) -> tuple[dict[str, Any], Path]:
    """Re-evaluate a finished run from its checkpoints.

    Args:
        run_dir: a directory written by :func:`run_experiment` (it holds ``config.yaml`` and one
            sub-directory per model).
        data: evaluate on this saved task file (:func:`save_batches`) instead of the
            experiment's own ID/OOD test sets; the setting is then named after the file.
        out: where to write the metrics; default ``run_dir/metrics.json``, or with ``data``
            ``run_dir/eval-<file stem>/metrics.json``.
        checkpoint: ``"best.pt"`` or ``"last.pt"``.
        device: where to evaluate (default: ``"auto"``, CUDA if available).

    Returns:
        ``(metrics, path written)``; metrics as in ``metrics.json``.
    """
    log = log or _default_log
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: no directory {run_dir}")
    config_path = run_dir / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} has no {CONFIG}; is it a directory written "
                                "by `approxeq train`/`approxeq experiment`?")
    raw = _read_yaml_size(config_path)
    config = load_experiment(config_path, size=raw)
    if data is not None:
        data = Path(data)
        sets = {data.stem: load_batches(data)}
        default_out = run_dir / f"eval-{data.stem}" / METRICS
    else:
        sets = make_test_sets(config)
        default_out = run_dir / METRICS
    out_path = Path(out) if out is not None else default_out
    eq_elements = int(config.extra.get("equivariance_elements", 4))
    eq_tasks = int(config.extra.get("equivariance_tasks", 8))
    entries: dict[str, Any] = {}
    for mc in config.models:
        ckpt = run_dir / mc.label / checkpoint
        if not ckpt.is_file():
            log(f"[{mc.label}] no {checkpoint}: skipped")
            continue
        model = load_model(ckpt, map_location=resolve_device(device or "auto"))
        per_setting = {s: evaluate_model(model, b, equivariance_elements=eq_elements,
                                         equivariance_tasks=eq_tasks) for s, b in sets.items()}
        entries[mc.label] = _entry(per_setting, {"name": mc.name, "options": mc.options,
                                                 "steps": load_checkpoint(ckpt).step})
        log(f"[{mc.label}] " + ", ".join(
            f"{s}: {v['loglik']:.3f} ± {v['loglik_se']:.3f}" for s, v in per_setting.items()))
    if not entries:
        raise FileNotFoundError(f"run_dir: no model checkpoints ({checkpoint}) under {run_dir}")
    oracle = {s: m for s, b in sets.items() if (m := oracle_metrics(b)) is not None}
    if oracle:
        entries[ORACLE] = _entry(oracle, {"name": "gp-oracle"})
    write_json_atomic(out_path, entries)
    write_text_atomic(out_path.with_name(RESULTS), results_markdown(
        entries, title=config.name, description=config.description))
    return entries, out_path


def _read_yaml_size(path: Path) -> str:
    from approxeq.train.config import read_yaml

    sizes = (read_yaml(path) or {}).get("sizes") or {}
    return next(iter(sizes), "quick")


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

def _settings(metrics: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for entry in metrics.values():
        for k, v in entry.items():
            if isinstance(v, dict) and "loglik" in v and k != "component" and k not in found:
                found.append(k)
    return found


def _pm(mean: Any, se: Any, digits: int = 3) -> str:
    if mean is None:
        return "–"
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


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
        row += [_pm(entry.get(s, {}).get("loglik"), entry.get(s, {}).get("loglik_se"))
                for s in settings]
        row += [_pm(entry.get(s, {}).get("component_loglik"),
                    entry.get(s, {}).get("component_loglik_se")) for s in settings]
        row += [_pm(entry.get(s, {}).get("delta_equiv"), entry.get(s, {}).get("delta_equiv_se"), 4)
                for s in settings]
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


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------

#: training steps per model of ``approxeq demo``: about 4 CPU-minutes for all three models
DEMO_STEPS = 3000


def demo_config(steps: int = DEMO_STEPS, *, test_tasks: int = 256, device: str = "auto"
                ) -> ExperimentConfig:
    """The embedded configuration of ``approxeq demo``: on the AE-NP Gibbs task, a small TNP
    (not equivariant), a small ConvCNP (translation equivariant) and its approximately
    equivariant version, ``steps`` steps each."""
    from approxeq.train.config import experiment_from_dict

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    conv = {"channels": 16, "num_layers": 4, "points_per_unit": 16, "kernel_size": 9}
    data = {
        "name": "demo",
        "description": ("Non-equivariant (TNP), equivariant (ConvCNP) and approximately "
                        "equivariant (ConvCNP with fixed inputs) neural processes on the 1-D "
                        "Gibbs switching-lengthscale GP task; OOD = inputs shifted by +8, where "
                        "the task is stationary and the fixed inputs are zero."),
        "task": {"name": "gibbs", "dim_x": 1, "dim_y": 1},
        "models": [
            {"label": "TNP", "name": "tnp",
             "options": {"width": 32, "num_layers": 2, "num_heads": 4}},
            {"label": "ConvCNP", "name": "convcnp", "options": dict(conv)},
            {"label": "ConvCNP-approx", "name": "convcnp",
             "options": {**conv, "approximate": True, "num_fixed_inputs": 8,
                         "fixed_input_domain": [[-2.0, 2.0]], "fixed_input_dropout": 0.5}},
        ],
        "train": {"steps": steps, "batch_size": 16, "lr": 1e-3, "grad_clip": 0.5,
                  "val_every": max(steps // 5, 1), "val_tasks": 64, "test_tasks": test_tasks,
                  "eval_batch_size": 32, "checkpoint_every": max(steps // 5, 1),
                  "device": device, "log_every": 10},
        "extra": {"ood_shift": 8.0, "plot_range": [-4.0, 4.0]},
    }
    return experiment_from_dict(data, size="demo")


__all__ = [
    "DEMO_STEPS", "ExperimentResult", "FigureHook", "context_region", "demo_config",
    "evaluate_model", "evaluate_run", "format_table", "load_batches", "make_task", "make_test_sets",
    "ood_shift", "oracle_metrics", "results_markdown", "results_table", "run_experiment",
    "save_batches",
]
