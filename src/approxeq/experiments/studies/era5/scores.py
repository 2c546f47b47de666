"""The ERA5 study's scores and tables: every metric of one model on fixed tasks, and the
results table and ``results.md`` of a run (or of an evaluation on another file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from approxeq.data.normalise import Normaliser
from approxeq.experiments.evaluation import evaluate_model
from approxeq.experiments.report import format_table, mean_se
from approxeq.experiments.schema import ExperimentConfig
from approxeq.np.batch import Batch

TASK_NAME = "era5-uk"
ATTRIBUTION = "Contains modified Copernicus Climate Change Service information 2019"


def evaluate_era5_model(model: nn.Module, batches: Sequence[Batch], normaliser: Normaliser, *,
                        equivariance_elements: int = 4, equivariance_tasks: int = 8,
                        seed: int = 0) -> dict[str, Any]:
    """Every metric of one model on fixed ``batches`` (with ``batch.aux_c``/``aux_t``
    when the model reads auxiliary fields).

    Returns ``loglik``, ``loglik_se`` (normalised temperature), ``rmse``, ``rmse_se``
    (normalised), ``rmse_K``, ``rmse_K_se`` (kelvin, or the variable's units), ``coverage95``,
    ``n_tasks``; for approximately equivariant models ``component`` (the same for the
    equivariant component), ``component_loglik``, ``component_loglik_se``, ``delta_equiv``
    (normalised), ``delta_equiv_K``; for models with a symmetry, ``equivariance`` (orbit error
    with auxiliary values attached to their points, and the component's).
    """
    return evaluate_model(model, batches, equivariance_elements=equivariance_elements,
                          equivariance_tasks=equivariance_tasks, seed=seed,
                          y_scale=normaliser.y_std)


def era5_results_table(metrics: Mapping[str, Any]) -> list[list[str]]:
    """Rows (header first): per model the test log-likelihood ± s.e., RMSE (K), the equivariant
    component's log-likelihood, Δequiv (K) and the correction's correlations with elevation
    (whole maps) and with land height in the training region."""
    ood = any("ood" in e for e in metrics.values())
    rows = [["model", "aux", "log-lik", "RMSE (K)", "component log-lik", "Δequiv (K)",
             "corr(correction, elevation)", "corr(correction, h⁺) in region"]
            + (["log-lik OOD", "component OOD"] if ood else [])]
    for label, e in metrics.items():
        rows.append([label, "+".join(e.get("aux_vars") or []) or "–",
                     mean_se(e.get("loglik"), e.get("loglik_se")),
                     mean_se(e.get("rmse_K"), e.get("rmse_K_se")),
                     mean_se(e.get("component_loglik"), e.get("component_loglik_se")),
                     mean_se(e.get("delta_equiv_K"), None, 4),
                     mean_se(e.get("correction_elevation_corr"), None, 2),
                     mean_se(e.get("correction_land_height_corr"), None, 2)])
        if ood:
            b = e.get("ood", {})
            rows[-1] += [mean_se(b.get("loglik"), b.get("loglik_se")),
                         mean_se(b.get("component_loglik"), b.get("component_loglik_se"))]
    return rows


def era5_results_markdown(metrics: Mapping[str, Any], config: ExperimentConfig | None = None,
                          *, command: str | None = None) -> str:
    """``results.md`` of the ERA5 experiment."""
    size = config.size if config is not None else "?"
    parts = [f"# ERA5 UK 2 m temperature ({size} size)", ""]
    if config is not None and config.description:
        parts += [config.description.strip(), ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    parts += [format_table(era5_results_table(metrics)), "",
              "Test days 25–31 March 2019 (train 1–21, validation 22–24). *log-lik*: mean "
              "Gaussian log-likelihood per target point of the normalised temperature ± standard "
              "error over test tasks; *RMSE*: of the predictive mean, in kelvin; *component*: the "
              "model with every fixed input and auxiliary embedding zero (its exactly "
              "equivariant part); *Δequiv*: mean |full − component| of the predictive mean, in "
              "kelvin; *corr*: Pearson correlation between that correction and elevation over "
              "whole-UK test maps (sea floor included), and *h⁺ in region* with the land height "
              "max(elevation, 0) inside the training region, what a lapse rate acts on; *OOD* "
              "(with a spatial hold-out): the test days on the held-out "
              "part of the grid, outside every fixed input's domain.", "", ATTRIBUTION + ".", ""]
    return "\n".join(parts)


__all__ = ["ATTRIBUTION", "TASK_NAME", "era5_results_markdown", "era5_results_table",
           "evaluate_era5_model"]
