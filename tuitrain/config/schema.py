"""The run configuration's shape: one dataclass per preset section, every key's default, and the
allowed values and ranges that :mod:`tuitrain.config.validate` checks. Nothing here reads files."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A bad preset, override or option. The message is meant for the user, as is."""


def error_text(e: BaseException) -> str:
    """A run's error as the run file and the sinks carry it: ``Type: message``, with every kind of bad
    input (any :class:`ConfigError`) as ``ConfigError: ...``, so that :func:`is_bad_input` can tell."""
    return f"{'ConfigError' if isinstance(e, ConfigError) else type(e).__name__}: {e}"


def is_bad_input(error: str) -> bool:
    """Whether a run's error text (:func:`error_text`) is bad input: exit 2, said once by the command."""
    return error.startswith("ConfigError: ")


MODELS = ("mlp", "vgg", "resnet18", "mlp_mixer")
# A model of the user's own: ``model.name = "mypkg.models:build"``, an importable module and a callable
# in it (dotted for a nested attribute) that takes the [model] table and returns an nn.Module
# (tuitrain/train/own_model.py builds it). Only the spelling is checked here: no import, so that a stored
# config opens anywhere (info, replay, compare), whether or not the module can be imported there.
OWN_MODEL = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "sigmoid", "tanh")
DATASETS = ("synthetic", "cifar10", "cifar100", "toy2d")
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100}
TOY2D_SHAPES = ("spirals", "moons", "blobs")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda", "mps")
INITS = ("default", "kaiming", "xavier")
SHORTCUTS = ("none", "conv1x1", "avgpool")
ON_NAN = ("stop", "continue")


def is_own_model(name: str) -> bool:
    """Whether ``model.name`` names a model of the user's own (``module:function``), not a built-in."""
    return ":" in name


@dataclass
class ModelConfig:
    """Model options. ``name`` picks the family; which options a family reads is :data:`MODEL_KEYS`.

    A model of the user's own (:func:`is_own_model`) may have keys of its own in [model]; they are kept
    in ``options`` and written back into the [model] table (never as an ``options`` key), so a preset,
    ``--set model.width=64`` and the stored config all spell them as plain [model] keys."""

    name: str = "vgg"
    init: str = "default"  # PyTorch default init (as in 001), or kaiming/xavier
    activation: str = "leaky_relu"  # vgg takes leaky_relu or relu only
    batch_norm: bool = False  # mlp: before each activation; vgg: after each conv
    dropout: float = 0.0
    hidden: list[int] = field(default_factory=lambda: [1024, 512, 64, 64])  # widths of the hidden layers
    filters: int = 32
    stages: int = 3
    blocks_per_stage: int = 5  # 0 -> VGG08, 5 -> VGG38
    residual: bool = False  # identity shortcuts around processing blocks
    downsample_shortcut: str = "none"  # with residual: none | conv1x1 | avgpool
    width: int = 64  # channels of the first stage
    patch_size: int = 4
    embed_dim: int = 256
    num_blocks: int = 4
    mlp_ratio: list[float] = field(default_factory=lambda: [0.5, 4.0])  # [token, channel]
    options: dict[str, Any] = field(default_factory=dict)  # a model of the user's own: its own keys


# The [model] keys each model family reads (its builder in tuitrain/train/models/, plus ``init``, which
# every family applies). The one owner of that fact: ``tuitrain info`` shows only these, and anything
# else that shows a model's config can use :func:`model_keys`. Every ModelConfig field but ``options``
# is in at least one family (tests/faults/test_first_contact.py checks that, and that the others change
# nothing). A model of the user's own gets the whole table (docs: "Your own model").
MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": ("name", "init", "activation", "batch_norm", "dropout", "hidden"),
    "vgg": (
        "name",
        "init",
        "activation",
        "batch_norm",
        "filters",
        "stages",
        "blocks_per_stage",
        "residual",
        "downsample_shortcut",
    ),
    "resnet18": ("name", "init", "width"),
    "mlp_mixer": (
        "name",
        "init",
        "activation",
        "dropout",
        "patch_size",
        "embed_dim",
        "num_blocks",
        "mlp_ratio",
    ),
}


def model_keys(name: str) -> tuple[str, ...]:
    """The [model] keys that apply to model family ``name``; every key for a name this version does
    not know (an old or newer run file), so nothing is hidden that might matter."""
    if name in MODEL_KEYS:
        return MODEL_KEYS[name]
    return tuple(f.name for f in fields(ModelConfig) if f.name != "options")


@dataclass
class DataConfig:
    name: str = "synthetic"
    classes: int = 10  # synthetic and toy2d; cifar sets its own
    train_size: int = 0  # 0: the dataset's default (synthetic 5000, cifar all but val_size)
    val_size: int = 0  # 0: default (synthetic 500, cifar 2500 split off the training set)
    test_size: int = 0  # 0: default (synthetic 1000, cifar 10000)
    dir: str = ""  # where CIFAR lives or is downloaded to; "" -> $TUITRAIN_DATA or ~/.cache/tuitrain
    download: bool = True
    augment: bool = True  # images: random crop with padding and horizontal flip, on the device
    crop_padding: int = 4
    flip: bool = True
    shape: str = "spirals"  # toy2d: spirals | moons | blobs
    noise: float = 0.1  # toy2d and synthetic
    image_size: int = 32  # synthetic: 32 is CIFAR-shaped; 16 makes CNN experiments 4x cheaper on a CPU
    seed: int = 0  # the dataset itself; train.seed drives init and shuffling


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw


@dataclass
class ScheduleConfig:
    name: str = "cosine"
    step_size: int = 30  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    warmup_epochs: int = 0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100
    eval_batch_size: int = 500
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast to bf16; only ever used on CUDA
    channels_last: bool = True  # only ever used on CUDA
    cudnn_benchmark: bool = True
    compile: bool = False
    max_steps: int = 0  # 0: no cap; else stop after this many steps (smoke tests, quick looks)
    # Save a checkpoint beside the run file when the run ends completed or stopped: the resolved config,
    # step, epoch, model weights, optimizer and scheduler state, RNG state (tuitrain/train/resume.py)
    checkpoint: bool = True
    # The run file this run continues from its checkpoint; set by `tuitrain run/watch --resume RUN.h5`
    # (a preset may set it too). "" starts a new run.
    resume: str = ""
    # CPU threads torch uses: "auto" measures (free cores, and whether more threads make a step faster;
    # see tuitrain/train/threads.py and docs/performance.md) or a count >= 1, per process
    threads: int | str = "auto"


@dataclass
class MonitorConfig:
    every: int = 1  # probe per-layer statistics every N steps
    emit_seconds: float = 0.1  # how often step batches go to the sinks
    flush_seconds: float = 1.0  # run file flush period
    vanishing: float = 1e-8  # mean |grad| below this is "vanishing" (VGG38 at init: ~1e-18; VGG08: ~1e-6)
    exploding: float = 1e2  # grad L2 norm above this is "exploding"
    alert_steps: int = 50  # a vanishing/exploding condition must last this many steps to alert
    # A non-finite (NaN or Inf) training loss: "stop" ends the run as `failed` with the error
    # "diverged: loss is NaN at step N" (N the first bad step, exactly) once `nan_patience` + 1 losses
    # in a row were non-finite; "continue" trains on (the NaN/Inf alert still says when it began).
    # Detected at the monitor's batched flush, not per step: up to `emit_seconds` of further steps
    # (on CUDA a few more, read back late; data-parallel: to the end of the epoch) are trained and
    # stored before the run stops.
    on_nan: str = "stop"
    nan_patience: int = 0  # on_nan = "stop": consecutive non-finite losses tolerated; 0 stops at the first
    # The forward-signal probe (per module: activation mean, std, zeros, saturation, dead units) every
    # N steps; 0 turns it off. Its cost at 10 is in docs/performance.md.
    activations_every: int = 20
    # Live diagnosis (tuitrain.diagnosis): the rules run over the run so far about this often (never
    # costing more than ~1% of the training process's time), and findings go to the dashboard and the
    # run file; 0 turns live diagnosis off (`tuitrain diagnose RUN.h5` still works on the file).
    diagnose_seconds: float = 2.0
    # Snapshots (tuitrain.train.snapshots): the first layer's kernels, Mixer token mixing, the decision
    # boundary of 2-D data at init and each epoch, misclassified test samples at the end, for the
    # report's image figures and the Images screen; they add at most this many MB (10**6 bytes) to the
    # run file (fewer epochs kept when they would add more); 0 turns them off.
    snapshot_mb: float = 4.0


@dataclass
class RunConfig:
    name: str = "run"
    description: str = ""
    out: str = ""  # run file path; "" -> runs/<name>-<timestamp>.h5
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


# Allowed values and ranges, by dotted key. Checked after every merge so that the message can name
# the key and the allowed set, whichever layer (preset, parent, --set) the bad value came from.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.name": MODELS,
    "model.init": INITS,
    "model.activation": ACTIVATIONS,
    "model.downsample_shortcut": SHORTCUTS,
    "data.name": DATASETS,
    "data.shape": TOY2D_SHAPES,
    "optim.name": OPTIMIZERS,
    "schedule.name": SCHEDULES,
    "train.device": DEVICES,
    "monitor.on_nan": ON_NAN,
}
# Seeds are refused outside [0, 2**31 - 1] rather than mapped: the seed in the run file is then the
# one torch and numpy got (numpy takes [0, 2**32 - 1], and rank r of a data-parallel run seeds with
# seed + r, which stays in range).
SEED_MAX = 2**31 - 1
# (low, high, low_inclusive, high_inclusive); None = unbounded. Every float key (and every float in a
# list) must also be finite: validate refuses inf and nan before the ranges are checked.
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "model.dropout": (0.0, 1.0, True, False),
    "model.filters": (1, None, True, True),
    "model.stages": (1, 5, True, True),
    "model.blocks_per_stage": (0, None, True, True),
    "model.width": (1, None, True, True),
    "model.patch_size": (1, 32, True, True),
    "model.embed_dim": (1, None, True, True),
    "model.num_blocks": (1, None, True, True),
    "data.classes": (2, 1000, True, True),
    "data.train_size": (0, None, True, True),
    "data.val_size": (0, None, True, True),
    "data.test_size": (0, None, True, True),
    "data.crop_padding": (0, 16, True, True),
    "data.image_size": (8, 64, True, True),
    "data.noise": (0.0, None, True, True),
    "data.seed": (0, SEED_MAX, True, True),
    "optim.lr": (0.0, None, False, True),
    "optim.momentum": (0.0, 1.0, True, False),
    "optim.weight_decay": (0.0, None, True, True),
    "schedule.step_size": (1, None, True, True),
    "schedule.gamma": (0.0, 1.0, False, True),
    "schedule.warmup_epochs": (0, None, True, True),
    "train.epochs": (1, None, True, True),
    "train.batch_size": (1, None, True, True),
    "train.eval_batch_size": (1, None, True, True),
    "train.max_steps": (0, None, True, True),
    "train.seed": (0, SEED_MAX, True, True),
    "monitor.every": (1, None, True, True),
    "monitor.emit_seconds": (0.01, 10.0, True, True),
    "monitor.flush_seconds": (0.05, 60.0, True, True),
    "monitor.vanishing": (0.0, None, False, True),
    "monitor.exploding": (0.0, None, False, True),
    "monitor.alert_steps": (1, None, True, True),
    "monitor.nan_patience": (0, None, True, True),
    "monitor.activations_every": (0, None, True, True),
    "monitor.diagnose_seconds": (0.0, None, True, True),
    "monitor.snapshot_mb": (0.0, None, True, True),
}
