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

import math
import time
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Quantity:
    """One statistic a probe measures: its name (a dataset name in the run file), label and unit."""

    name: str
    label: str
    unit: str = ""


# The axes a probe reports on: "tensor" = one value per parameter tensor (RunStarted.layers, /layers);
# "module" = one per module (RunStarted.modules); "step" = one value per probed step.
PROBE_AXES: tuple[str, ...] = ("tensor", "module", "step")


@dataclass(frozen=True)
class ProbeSpec:
    """What a probe declares it measures; carried in RunStarted and stored in the run file, so a reader
    needs no list of probes of its own (docs/run-file.md)."""

    name: str  # e.g. "grad"; the run file keeps its rows under /probes/<name>/
    axis: str  # one of PROBE_AXES
    quantities: tuple[Quantity, ...]
    every: int = 1  # probes every `every` steps

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(q.name for q in self.quantities)

    def index(self, quantity: str) -> int:
        return self.names.index(quantity)


@dataclass
class ProbeBlock:
    """The rows of one probe for a batch of steps: ``values[k, q, i]`` is quantity ``q`` of axis item
    ``i`` (layer, module) at step ``steps[k]``. ``(m, len(quantities), n_axis)`` float32."""

    probe: str
    steps: np.ndarray  # (m,) int64
    values: np.ndarray  # (m, n_quantities, n_axis) float32

    def __len__(self) -> int:
        return int(self.steps.shape[0])


GRAD = "grad"  # the built-in fused gradient probe (tuitrain.train.probes)
GRAD_PROBE = ProbeSpec(
    GRAD,
    "tensor",
    (
        Quantity("grad_norm", "grad L2 norm"),
        Quantity("grad_mean_abs", "mean |grad|"),
        Quantity("weight_norm", "weight L2 norm"),
        Quantity("update_ratio", "update ratio ||dW||/||W||"),
    ),
)
# The gradient probe's quantities, in the order of its ProbeBlock axis 1 and of /probes/grad/.
PROBE_NAMES: tuple[str, ...] = GRAD_PROBE.names

ACT = "act"  # the built-in forward-signal probe (tuitrain.train.activations): one column per module
ACT_PROBE = ProbeSpec(
    ACT,
    "module",
    (
        Quantity("mean", "activation mean"),
        Quantity("std", "activation std"),
        Quantity("zero_frac", "fraction of exact zeros"),
        Quantity("saturated_frac", "fraction saturated (sigmoid/tanh)"),
        Quantity("dead_frac", "fraction of dead units"),
    ),
    every=1,  # set per run (monitor.activations_every; the config schema owns its default)
)
PROBE_LABELS: dict[str, str] = {q.name: q.label for q in GRAD_PROBE.quantities}

# The per-step scalars every run declares (NaN where a run does not measure one), in this order first in
# StepBatch.scalar_names and /steps; a user's own loop adds any keys it logs after them.
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


@dataclass(frozen=True)
class ModuleInfo:
    """One probed module (axis "module" of a probe, RunStarted.modules, /modules), in the order its
    output is produced: its name in ``model.named_modules()``, its class, and "leaf" or "block"."""

    name: str  # e.g. "stages.0.blocks.1.conv0"
    type: str  # e.g. "Conv2d"
    kind: str  # "leaf" | "block"


def _monitor_default(name: str) -> float:
    """The config schema's default for ``monitor.<name>``: one default, owned by tuitrain.config."""
    from tuitrain.config.schema import MonitorConfig

    return float(getattr(MonitorConfig(), name))


@dataclass
class RunStarted:
    """The first event of every run. What a preset always knows (dataset, classes, steps per epoch,
    FLOPs, the module summary) is optional: a user's own loop may know none of it (0, "" or [])."""

    run_name: str
    config_toml: str  # the resolved config, as TOML text (a user loop's config dict, as TOML)
    model_name: str
    dataset: str = ""
    device: str = ""
    params: int = 0
    layers: list[LayerInfo] = field(default_factory=list)
    flops: int = 0  # forward FLOPs for one sample; 0 = unknown
    module_summary: list[dict] = field(default_factory=list)  # [{"name", "type", "params", "flops"}]
    epochs: int = 0  # 0 = unknown
    steps_per_epoch: int = 0  # 0 = unknown
    batch_size: int = 0  # 0 = unknown
    num_classes: int = 0  # 0 = unknown
    out_path: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    max_steps: int = 0  # train.max_steps: 0 = no cap
    # monitor.vanishing / monitor.exploding of this run: the one place the UI reads its health
    # thresholds from (stored as run-file attributes); the defaults are the config schema's own.
    vanishing: float = field(default_factory=lambda: _monitor_default("vanishing"))
    exploding: float = field(default_factory=lambda: _monitor_default("exploding"))
    # What the run will send: its probes (empty when nothing is watched) and its step scalars
    # (STEP_SCALARS first, then a user loop's own keys). The run file declares both.
    probes: list[ProbeSpec] = field(default_factory=lambda: [GRAD_PROBE])
    step_scalars: tuple[str, ...] = STEP_SCALARS
    source: str = "preset"  # "preset" | "script" (tuitrain.init) | "lightning"
    config_json: str = ""  # a user loop's config dict as JSON; presets keep theirs in config_toml
    # The columns of every probe on axis "module" (the activation probe), in model order; [] when none.
    modules: list[ModuleInfo] = field(default_factory=list)
    # The snapshots this run takes (tuitrain.train.snapshots); [] for none, and for files before issue 12.
    snapshots: list[SnapshotSpec] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        full = self.epochs * self.steps_per_epoch
        return min(full, self.max_steps) if self.max_steps else full


SNAPSHOT_WHEN: tuple[str, ...] = ("start", "epoch", "end")  # when a snapshot's rows are taken
SNAPSHOT_DTYPES: tuple[str, ...] = ("float32", "float16", "int64", "int32", "int16", "uint8")

# The snapshots the engine takes (tuitrain.train.snapshots); their fields and meta are documented in
# docs/run-file.md. A reader needs none of these names: the file declares what it holds.
FIRST_LAYER = "first_layer"  # the first layer's kernels (or image-shaped weight rows), at init and each epoch
TOKEN_MIXING = "token_mixing"  # MLP-Mixer: the first block's token-mixing weights, at init and each epoch
BOUNDARY = "boundary"  # 2-D data: the model's predicted class on a fixed grid, at init and each epoch
POINTS = "points"  # 2-D data: the test points the boundary is drawn over, once at the start
MISCLASSIFIED = "misclassified"  # misclassified test samples at the end (index, labels, the samples)


@dataclass(frozen=True)
class SnapshotField:
    """One array of a snapshot, per row: ``shape`` excludes the row axis; ``dtype`` is one of
    :data:`SNAPSHOT_DTYPES` (the file stores it so; float16 halves what weights cost)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, eq=False)
class SnapshotSpec:
    """A small, bounded picture of the model or its predictions, declared in RunStarted.snapshots.

    The run file keeps its rows under ``/snapshots/<name>/``: one dataset per field, shaped
    ``(rows, *field.shape)``, plus ``epoch`` (-1 for a row taken before training) and ``step`` per row;
    ``meta`` (plain JSON values: numbers, strings, lists of them) goes to the group's attributes.
    ``max_rows`` is a hard cap: rows beyond it are never written, so a spec bounds the bytes it may
    add to the file (:meth:`max_bytes`). One Snapshot event may carry several rows (misclassified
    samples: one row per sample)."""

    name: str
    fields: tuple[SnapshotField, ...]
    when: str  # one of SNAPSHOT_WHEN
    max_rows: int
    meta: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.when not in SNAPSHOT_WHEN:
            raise ValueError(
                f"snapshot {self.name!r}: when={self.when!r}; allowed: {', '.join(SNAPSHOT_WHEN)}"
            )
        for f in self.fields:
            if f.dtype not in SNAPSHOT_DTYPES:
                raise ValueError(
                    f"snapshot {self.name!r} field {f.name!r}: dtype {f.dtype!r}; "
                    f"allowed: {', '.join(SNAPSHOT_DTYPES)}"
                )

    def field_named(self, name: str) -> SnapshotField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(
            f"snapshot {self.name!r} has no field {name!r} (its fields: "
            f"{', '.join(f.name for f in self.fields)})"
        )

    @property
    def row_bytes(self) -> int:
        """Bytes of one row, its epoch and step included."""
        per = sum(int(np.prod(f.shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize for f in self.fields)
        return int(per) + 4 + 8

    @property
    def max_bytes(self) -> int:
        return self.row_bytes * self.max_rows


@dataclass
class Snapshot:
    """Rows of one declared snapshot (an event): ``arrays`` has every field of the spec, each shaped
    ``(m, *field.shape)`` with the same ``m``; all ``m`` rows were taken at ``epoch`` / ``step``
    (``epoch`` -1: before training)."""

    name: str
    epoch: int
    step: int
    arrays: dict[str, np.ndarray]
    time: float = field(default_factory=time.time)

    @property
    def rows(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0]) if self.arrays else 0


@dataclass
class StepBatch:
    """A batch of consecutive training steps.

    ``scalars`` is ``(n, len(scalar_names))`` float64, one row per step in ``steps`` (NaN where a step
    did not log a key). ``blocks`` holds each probe's rows by probe name; a probe reports only on the
    steps it probed (every ``ProbeSpec.every`` steps).
    """

    steps: np.ndarray  # (n,) int64, global step index starting at 0
    epochs: np.ndarray  # (n,) int32
    scalars: np.ndarray  # (n, len(scalar_names)) float64
    scalar_names: tuple[str, ...] = STEP_SCALARS
    blocks: dict[str, ProbeBlock] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    @classmethod
    def with_grad(
        cls,
        steps: np.ndarray,
        epochs: np.ndarray,
        scalars: np.ndarray,
        probe_steps: np.ndarray,
        probes: np.ndarray,
        time: float | None = None,
        scalar_names: tuple[str, ...] = STEP_SCALARS,
    ) -> StepBatch:
        """A batch whose only probe is the gradient probe (what the preset engine sends)."""
        blocks = {GRAD: ProbeBlock(GRAD, probe_steps, probes)}
        if time is None:
            return cls(steps, epochs, scalars, scalar_names, blocks)
        return cls(steps, epochs, scalars, scalar_names, blocks, time)

    def __len__(self) -> int:
        return int(self.steps.shape[0])

    def scalar(self, name: str) -> np.ndarray:
        """The column ``name``; all NaN when this batch does not carry it."""
        if name in self.scalar_names:
            return self.scalars[:, self.scalar_names.index(name)]
        return np.full(len(self), np.nan)

    def block(self, probe: str = GRAD) -> ProbeBlock | None:
        return self.blocks.get(probe)

    @property
    def probe_steps(self) -> np.ndarray:
        """The gradient probe's steps (empty when the run has no gradient probe)."""
        b = self.blocks.get(GRAD)
        return b.steps if b is not None else np.zeros(0, np.int64)

    @property
    def probes(self) -> np.ndarray:
        """The gradient probe's ``(m, len(PROBE_NAMES), n_layers)`` values (0 rows when absent)."""
        b = self.blocks.get(GRAD)
        return b.values if b is not None else np.zeros((0, len(PROBE_NAMES), 0), np.float32)

    def probe(self, name: str) -> np.ndarray:
        """One gradient-probe quantity, ``(m, n_layers)``."""
        return self.probes[:, PROBE_NAMES.index(name), :]


@dataclass
class EpochEnd:
    """An epoch closed. The standard metrics are NaN where a user's loop did not log them; any other
    keys it logged (``run.log_epoch``) are in ``metrics``."""

    epoch: int  # 0-based
    step: int  # global step count at the end of the epoch
    train_loss: float = math.nan
    train_acc: float = math.nan
    val_loss: float = math.nan
    val_acc: float = math.nan
    lr: float = math.nan
    seconds: float = math.nan  # wall time of the epoch, training and validation
    time: float = field(default_factory=time.time)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TestResult:
    """Final metrics (``run.log_test``): test loss and accuracy, and any other keys in ``metrics``."""

    loss: float = math.nan
    acc: float = math.nan
    time: float = field(default_factory=time.time)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Alert:
    """Something a person should notice: NaN/Inf, vanishing or exploding gradients, checkpoints."""

    step: int
    level: str  # "info" | "warning" | "error"
    kind: str  # "nan" | "vanishing" | "exploding" | "checkpoint" | "best" | "info" | ...
    message: str
    time: float = field(default_factory=time.time)


SEVERITIES: tuple[str, ...] = ("error", "warning", "info")  # a finding's severity, worst first
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    """One problem the diagnosis rules (:mod:`tuitrain.diagnosis`) found: what (``kind``), how bad,
    where (a layer or module; "" for the run as a whole), from which step to which (``last_step``
    None: it still held at the end of the data), on what evidence (numbers, by name), and what
    usually fixes it.

    Also an event: the training process sends a finding when it opens and once more when it closes
    (the same ``kind``, ``layer`` and ``first_step``, now with ``last_step``); ``at_step`` is the
    run's step when that was seen (-1: found offline, by ``tuitrain diagnose``)."""

    kind: str
    severity: str  # one of SEVERITIES
    layer: str
    first_step: int
    last_step: int | None
    evidence: dict[str, float] = field(default_factory=dict)
    message: str = ""
    suggestion: str = ""
    at_step: int = -1

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"severity {self.severity!r}; allowed: {', '.join(SEVERITIES)}")

    @property
    def key(self) -> tuple[str, str, int]:
        """What stays the same between a finding's opening and its closing."""
        return (self.kind, self.layer, self.first_step)

    @property
    def is_open(self) -> bool:
        return self.last_step is None

    def holds_at(self, step: int) -> bool:
        """Whether the finding held at ``step`` (as far as it was known then: ``at_step``)."""
        return self.first_step <= step and (self.last_step is None or step <= self.last_step)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "layer": self.layer,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "evidence": dict(self.evidence),
            "message": self.message,
            "suggestion": self.suggestion,
        }


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


Event = (
    RunStarted | StepBatch | EpochEnd | TestResult | Alert | Finding | Snapshot | StatusChanged | RunFinished
)


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
