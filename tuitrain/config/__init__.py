"""Typed run configuration: dataclasses, TOML presets with ``extends``, ``--set`` overrides, validation.

Every way a person can get a config wrong (a missing file, a TOML syntax error, an unknown key, a value
of the wrong type or out of range) ends in one :class:`ConfigError` whose message names the file, the
key and what is allowed. The CLI prints it and exits 2; nobody sees a traceback. No torch here: the
CLI validates a preset before paying for ``import torch``. This package imports nothing else of
tuitrain's.

The parts: :mod:`~tuitrain.config.schema` (the dataclasses, every key's default, allowed values and
ranges), :mod:`~tuitrain.config.load` (TOML presets, ``extends``, ``--set``),
:mod:`~tuitrain.config.validate` (raw table -> checked config, the error messages) and
:mod:`~tuitrain.config.dump` (dicts, TOML out, config diffs). Import from ``tuitrain.config``.
"""

from tuitrain.config.dump import diff_flat, to_dict, to_flat, to_toml
from tuitrain.config.load import from_toml, load_config, parse_override
from tuitrain.config.schema import (
    ACTIVATIONS,
    CHOICES,
    DATASET_CLASSES,
    DATASETS,
    DEVICES,
    INITS,
    MODEL_KEYS,
    MODELS,
    OPTIMIZERS,
    RANGES,
    SCHEDULES,
    SHORTCUTS,
    TOY2D_SHAPES,
    ConfigError,
    DataConfig,
    ModelConfig,
    MonitorConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    error_text,
    is_bad_input,
    is_own_model,
    model_keys,
)
from tuitrain.config.validate import from_dict

__all__ = [
    "ACTIVATIONS",
    "CHOICES",
    "DATASETS",
    "DATASET_CLASSES",
    "DEVICES",
    "INITS",
    "MODEL_KEYS",
    "MODELS",
    "OPTIMIZERS",
    "RANGES",
    "SCHEDULES",
    "SHORTCUTS",
    "TOY2D_SHAPES",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "diff_flat",
    "error_text",
    "is_bad_input",
    "is_own_model",
    "from_dict",
    "from_toml",
    "load_config",
    "model_keys",
    "parse_override",
    "to_dict",
    "to_flat",
    "to_toml",
]
