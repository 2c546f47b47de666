"""One tiny terrain configuration for the tests that run the terrain experiment end to end."""
from __future__ import annotations

from typing import Any

TINY_MODELS: dict[str, dict[str, Any]] = {
    "ConvCNP": {"label": "ConvCNP", "name": "convcnp",
                "options": {"channels": 4, "num_layers": 1, "points_per_unit": 40}},
    "ConvCNP~": {"label": "ConvCNP~", "name": "convcnp",
                 "options": {"approximate": True, "channels": 4, "num_layers": 1,
                             "points_per_unit": 40, "num_fixed_inputs": 4,
                             "fourier_features": 4}},
    "TE-PT-TNP+elev": {"label": "TE-PT-TNP+elev", "name": "te-pt-tnp",
                       "options": {"width": 8, "num_layers": 1, "num_heads": 2,
                                   "num_pseudo_tokens": 4, "dim_aux": 2}},
}


def tiny_terrain(name: str, labels: tuple[str, ...] = ("ConvCNP~", "TE-PT-TNP+elev"),
                 **train: Any) -> dict[str, Any]:
    """A terrain experiment of 3-cell patches and one-layer models that trains in seconds;
    ``train`` entries replace those of its ``train`` section."""
    return {
        "name": name,
        "task": {"name": "terrain", "dim_x": 2, "dim_y": 1,
                 "options": {"patch_degrees": 3.0, "max_targets": 16, "train_pool": 3}},
        "models": [TINY_MODELS[label] for label in labels],
        "train": {"steps": 3, "batch_size": 2, "val_every": 3, "val_tasks": 2, "test_tasks": 4,
                  "eval_batch_size": 2, "device": "cpu", **train},
        "extra": {"equivariance_elements": 1, "equivariance_tasks": 1},
    }
