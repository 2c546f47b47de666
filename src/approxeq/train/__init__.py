"""Training: configurations, the training loop, atomic checkpoints and distributed execution.

Typical use::

    from approxeq.train import TrainConfig, train, load_model
    result = train(model, generator, TrainConfig(steps=2000), "runs/te-tnp")
    model = load_model(result.best_path)
"""

from approxeq.files import atomic_open, save_atomic, write_json_atomic, write_text_atomic
from approxeq.train.checkpoint import (
    Checkpoint,
    ModelSpec,
    build_model_with_spec,
    load_checkpoint,
    load_model,
    model_spec_of,
    save_checkpoint,
)
from approxeq.train.config import ConfigError, TrainConfig, train_config_from_dict
from approxeq.train.config_files import load_train_config, read_yaml
from approxeq.train.distributed import DistInfo, init_distributed, unwrap_model
from approxeq.train.loop import (
    TrainResult,
    capture_rng_state,
    evaluate,
    make_test_set,
    make_val_set,
    restore_rng_state,
    seed_everything,
    train,
)
from approxeq.train.progress import Progress

__all__ = [
    "Checkpoint", "ConfigError", "DistInfo", "ModelSpec", "Progress", "TrainConfig",
    "TrainResult", "atomic_open", "build_model_with_spec", "capture_rng_state", "evaluate",
    "init_distributed", "load_checkpoint", "load_model", "load_train_config",
    "make_test_set", "make_val_set", "model_spec_of", "read_yaml", "restore_rng_state",
    "save_atomic",
    "save_checkpoint", "seed_everything", "train", "train_config_from_dict",
    "unwrap_model", "write_json_atomic", "write_text_atomic",
]
