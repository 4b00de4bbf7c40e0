"""The event vocabulary that crosses every boundary: engine -> sinks, process -> process, file -> UI.

Events are small dataclasses of plain Python scalars, strings and numpy arrays, so they pickle cheaply
through a ``multiprocessing.Queue`` and mean the same thing whether they come from a live run or are
rebuilt from a run file. Nothing here imports torch or textual: both sides of the torch/textual line
import this module.

Per-step data is never sent one step at a time: the engine batches rows into a :class:`StepBatch`
(about 100 ms of steps), which keeps the per-step Python cost and the queue traffic small for tiny
models that take thousands of steps a second.
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field

import numpy as np

# Per-layer probe quantities, in the order they are stored everywhere (StepBatch.probes axis 1,
# run-file datasets under /probes). Keep in sync with docs/run-file.md.
PROBE_NAMES: tuple[str, ...] = ("grad_norm", "grad_mean_abs", "weight_norm", "update_ratio")
PROBE_LABELS: dict[str, str] = {
    "grad_norm": "grad L2 norm",
    "grad_mean_abs": "mean |grad|",
    "weight_norm": "weight L2 norm",
    "update_ratio": "update ratio ||dW||/||W||",
}

# Per-step scalars, in the order of StepBatch.scalars columns and /steps datasets.
STEP_SCALARS: tuple[str, ...] = ("loss", "acc", "lr", "samples_per_s", "step_time")

# Run status values written to the run file and shown in headers.
STATUSES: tuple[str, ...] = ("starting", "running", "paused", "completed", "stopped", "failed")


@dataclass
class LayerInfo:
    """One monitored parameter tensor, in model order (input side first)."""

    name: str  # e.g. "stages.0.blocks.1.conv0.weight"
    shape: tuple[int, ...]
    numel: int
    kind: str  # "weight" | "bias" | "norm" (BatchNorm/LayerNorm affine params)
    module: str  # owning module path, e.g. "stages.0.blocks.1.conv0"
    module_type: str  # e.g. "Conv2d"


def _monitor_default(name: str) -> float:
    """The config schema's default for ``monitor.<name>``: one default, owned by tuitrain.config."""
    from tuitrain.config.schema import MonitorConfig

    return float(getattr(MonitorConfig(), name))


@dataclass
class RunStarted:
    run_name: str
    config_toml: str  # the resolved config, as TOML text
    model_name: str
    dataset: str
    device: str
    params: int
    layers: list[LayerInfo]
    flops: int  # forward FLOPs for one sample
    module_summary: list[dict]  # [{"name", "type", "params", "flops"}] per module
    epochs: int
    steps_per_epoch: int
    batch_size: int
    num_classes: int
    out_path: str
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    max_steps: int = 0  # train.max_steps: 0 = no cap
    # monitor.vanishing / monitor.exploding of this run: the one place the UI reads its health
    # thresholds from (stored as run-file attributes); the defaults are the config schema's own.
    vanishing: float = field(default_factory=lambda: _monitor_default("vanishing"))
    exploding: float = field(default_factory=lambda: _monitor_default("exploding"))

    @property
    def total_steps(self) -> int:
        full = self.epochs * self.steps_per_epoch
        return min(full, self.max_steps) if self.max_steps else full


@dataclass
class StepBatch:
    """A batch of consecutive training steps.

    ``scalars`` is ``(n, len(STEP_SCALARS))`` float64, one row per step in ``steps``.
    ``probe_steps`` (m,) lists the steps that carried per-layer probes (every ``monitor.every``
    steps), and ``probes`` is ``(m, len(PROBE_NAMES), n_layers)`` float32 for those steps.
    """

    steps: np.ndarray  # (n,) int64, global step index starting at 0
    epochs: np.ndarray  # (n,) int32
    scalars: np.ndarray  # (n, len(STEP_SCALARS)) float64
    probe_steps: np.ndarray  # (m,) int64
    probes: np.ndarray  # (m, len(PROBE_NAMES), n_layers) float32
    time: float = field(default_factory=time.time)

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    def scalar(self, name: str) -> np.ndarray:
        return self.scalars[:, STEP_SCALARS.index(name)]

    def probe(self, name: str) -> np.ndarray:
        return self.probes[:, PROBE_NAMES.index(name), :]


@dataclass
class EpochEnd:
    epoch: int  # 0-based
    step: int  # global step count at the end of the epoch
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float  # wall time of the epoch, training and validation
    time: float = field(default_factory=time.time)


@dataclass
class TestResult:
    loss: float
    acc: float
    time: float = field(default_factory=time.time)


@dataclass
class Alert:
    """Something a person should notice: NaN/Inf, vanishing or exploding gradients, checkpoints."""

    step: int
    level: str  # "info" | "warning" | "error"
    kind: str  # "nan" | "vanishing" | "exploding" | "checkpoint" | "best" | "info" | ...
    message: str
    time: float = field(default_factory=time.time)


@dataclass
class StatusChanged:
    status: str  # one of STATUSES
    step: int
    time: float = field(default_factory=time.time)


@dataclass
class RunFinished:
    status: str  # "completed" | "stopped" | "failed"
    step: int
    error: str = ""
    traceback: str = ""
    checkpoint: str = ""
    time: float = field(default_factory=time.time)


Event = RunStarted | StepBatch | EpochEnd | TestResult | Alert | StatusChanged | RunFinished


@dataclass
class EventBatch:
    """What crosses the process queue: several events in order, one pickle, one queue item."""

    events: list[Event]
    dropped_steps: int = 0  # steps the sender coalesced away because the queue was full


class Sink(typing.Protocol):
    """Receives every event of a run, in order. The HDF5 writer, the live queue and the headless
    console are sinks; so is anything a user plugs in (shaped like Lightning's loggers).

    ``emit`` must not block for long: it is called from the training loop. ``close`` is called exactly
    once, after :class:`RunFinished` (or after a crash, with whatever came before).
    """

    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...
