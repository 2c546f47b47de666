"""``approxeq demo``: the embedded GP configuration (a TNP, a ConvCNP and its approximately
equivariant version on the AE-NP Gibbs task) and an estimate of its run time on this machine."""

from __future__ import annotations

from approxeq.experiments.schema import ExperimentConfig
from approxeq.experiments.studies.gp.study import make_task, ood_shift
from approxeq.train.checkpoint import ModelSpec

#: training steps per model of ``approxeq demo``: about 4 CPU-minutes for all three models
DEMO_STEPS = 3000


def demo_config(steps: int = DEMO_STEPS, *, test_tasks: int = 256, device: str = "auto"
                ) -> ExperimentConfig:
    """The embedded configuration of ``approxeq demo``: on the AE-NP Gibbs task, a small TNP
    (not equivariant), a small ConvCNP (translation equivariant) and its approximately
    equivariant version, ``steps`` steps each."""
    from approxeq.experiments.schema import experiment_from_dict

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


def estimate_seconds(config: ExperimentConfig, *, probe_steps: int = 4) -> float:
    """Wall-clock seconds that training and evaluating every model of ``config`` should take
    here, from timing ``probe_steps`` training steps of each model on this machine (after one
    warm-up step). Nothing is written and the caller's RNG state is left as it was.

    The evaluation is counted as forward passes over the test sets (about a third of a
    training step per batch: no backward pass), for each setting and, for approximately
    equivariant models, once more for the equivariant component.
    """
    import time

    import torch

    from approxeq.np.functional import np_loss

    task = make_task(config.task)
    task = task.with_oracle(False) if hasattr(task, "with_oracle") else task
    n_settings = 1 + (ood_shift(config) is not None)
    total = 0.0
    with torch.random.fork_rng(devices=[]):
        g = torch.Generator().manual_seed(0)
        for mc in config.models:
            t = mc.train
            spec = ModelSpec(mc.name, config.task.dim_x, config.task.dim_y, dict(mc.options))
            model = spec.build().train()
            opt = torch.optim.AdamW(model.parameters(), lr=t.lr)
            batches = [task.sample(t.batch_size, g) for _ in range(probe_steps + 1)]
            for k, batch in enumerate(batches):
                if k == 1:  # the first step pays for one-off set-up
                    start = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                np_loss(model, batch).backward()
                opt.step()
            per_step = (time.perf_counter() - start) / probe_steps / t.batch_size
            passes = n_settings * (2 if mc.options.get("approximate") else 1)
            validations = t.steps // t.val_every if t.val_every > 0 else 0
            total += per_step * (t.steps * t.batch_size + validations * t.val_tasks / 3
                                 + passes * t.test_tasks / 3)
    return total


__all__ = ["DEMO_STEPS", "demo_config", "estimate_seconds"]
