"""What the rules read: a small record of a run, built from a :class:`~tuitrain.runfile.RunFile` through
its public API only (:func:`from_runfile`), or by hand in tests and, later, from live events.

Nothing here imports h5py: ``from_runfile`` takes any object with the RunFile API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuitrain.events import ACT, ACT_PROBE, GRAD_PROBE

ACT_QUANTITIES: tuple[str, ...] = ACT_PROBE.names
GRAD_QUANTITIES: tuple[str, ...] = GRAD_PROBE.names
DEFAULT_WINDOW = 50  # steps; monitor.alert_steps's default, used when the file has no config
MAX_PROBE_ROWS = 20_000  # longer probes are read thinned (every k-th row): memory stays ~L x 20k floats


@dataclass(frozen=True)
class Activations:
    """The activation probe's rows: ``(rows, modules)`` arrays at ``steps``, modules in model order."""

    steps: np.ndarray
    modules: list[str]
    mean: np.ndarray
    std: np.ndarray
    zero_frac: np.ndarray
    saturated_frac: np.ndarray  # NaN for modules whose outputs have no bounds (not sigmoid/tanh)
    dead_frac: np.ndarray


@dataclass(frozen=True)
class Grads:
    """The gradient probe's rows: ``(rows, tensors)`` arrays at ``steps``, tensors as in /layers."""

    steps: np.ndarray
    grad_norm: np.ndarray
    grad_mean_abs: np.ndarray
    weight_norm: np.ndarray
    update_ratio: np.ndarray


@dataclass(frozen=True)
class RunData:
    """One run as the rules see it. Arrays a run lacks are None (a rule that needs one skips)."""

    steps: np.ndarray
    loss: np.ndarray | None = None
    acc: np.ndarray | None = None
    lr: np.ndarray | None = None
    layer_names: list[str] = field(default_factory=list)
    layer_kinds: list[str] = field(default_factory=list)  # "weight" | "bias" | "norm"
    grads: Grads | None = None
    epochs: dict[str, np.ndarray] = field(default_factory=dict)  # epoch, step, train/val loss/acc
    num_classes: int = 0  # 0: unknown (a user's own loop)
    vanishing: float = 1e-8  # monitor.vanishing: mean |grad| below this is vanishing
    exploding: float = 1e2  # monitor.exploding: grad L2 norm above this is exploding
    window: int = DEFAULT_WINDOW  # steps a condition must last (monitor.alert_steps)
    activations: Activations | None = None

    @property
    def weight_idx(self) -> np.ndarray:
        """Columns of weight tensors: biases before a BatchNorm have zero gradients by design."""
        return np.array([i for i, k in enumerate(self.layer_kinds) if k == "weight"], dtype=np.int64)


def from_runfile(rf: Any) -> RunData:
    """The run data of an open RunFile (schema 1 or 2, preset, script or Lightning run)."""
    cols = set(rf.step_scalars)
    steps = np.asarray(rf.scalar("step"), dtype=np.int64)

    def col(name: str) -> np.ndarray | None:
        return np.asarray(rf.scalar(name), dtype=np.float64) if name in cols else None

    layers = rf.layers
    grads = None
    if rf.has_probe("grad") and rf.probe_rows("grad"):
        rows = _thinned(rf.probe_rows("grad"))
        grads = Grads(
            np.asarray(rf.probe_steps(rows, probe="grad"), dtype=np.int64),
            *(np.asarray(rf.probe(q, rows, probe="grad"), dtype=np.float64) for q in GRAD_QUANTITIES),
        )
    acts = None
    if rf.has_probe(ACT) and rf.probe_rows(ACT):
        spec = next(p for p in rf.probe_specs if p.name == ACT)
        if set(ACT_QUANTITIES) <= set(spec.names):
            rows = _thinned(rf.probe_rows(ACT))
            values = [np.asarray(rf.probe(q, rows, probe=ACT), dtype=np.float64) for q in ACT_QUANTITIES]
            width = values[0].shape[1]
            names = [m.name for m in rf.modules]  # /modules; a file that lost its table: numbered
            names = names if len(names) == width else [f"module {i}" for i in range(width)]
            acts = Activations(np.asarray(rf.probe_steps(rows, probe=ACT), dtype=np.int64), names, *values)
    ep = rf.epochs() if rf.n_epochs else {}
    window = DEFAULT_WINDOW
    try:
        cfg = rf.config
    except Exception:  # a stored config that does not load: the rules use the default window
        cfg = None
    if cfg is not None:
        window = int(cfg.monitor.alert_steps)
    van, exp = rf.thresholds
    return RunData(
        steps=steps,
        loss=col("loss"),
        acc=col("acc"),
        lr=col("lr"),
        layer_names=[x.name for x in layers],
        layer_kinds=[x.kind for x in layers],
        grads=grads,
        epochs={k: np.asarray(v) for k, v in ep.items()},
        num_classes=int(rf.num_classes),
        vanishing=float(van),
        exploding=float(exp),
        window=window,
        activations=acts,
    )


def _thinned(n: int) -> slice:
    """Every row, or every k-th of a probe longer than MAX_PROBE_ROWS (the rules' windows are in steps,
    converted to rows at the rows' spacing, so they mean the same thinned; steps are then approximate
    to k)."""
    return slice(0, n, max(1, -(-n // MAX_PROBE_ROWS)))
