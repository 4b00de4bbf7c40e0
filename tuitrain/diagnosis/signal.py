"""Rules over the forward-signal (activation) probe ``act`` of issue 11, axis "module": signal
collapse, dead units and saturation. Runs whose files have no such probe (every file written before
it) skip these rules and say so."""

from __future__ import annotations

import numpy as np

from tuitrain.diagnosis.data import Activations, RunData
from tuitrain.diagnosis.finding import Finding, Skipped, episodes, rows_for

COLLAPSE_FRACTION = 1e-2  # std below 1/100 of the first module's: two orders of magnitude lost
DEAD_FRACTION = 0.5  # half the units of a module zero for every sample of the batch
SATURATED_FRACTION = 0.5  # half the outputs within 0.03 of a sigmoid/tanh bound


def _acts(d: RunData) -> Activations:
    if d.activations is None:
        raise Skipped("the run has no activation probe (files written before issue 11 have none)")
    return d.activations


def _end(steps: np.ndarray, b: int | None) -> int | None:
    return None if b is None else int(steps[b])


def signal_collapse(d: RunData) -> list[Finding]:
    """Activation std falling from the first module to below 1e-2 of it (two orders of magnitude) in
    a later module, over ``window`` steps; names the first such module. Source: Brock et al. 2021
    ("Characterizing signal propagation to close the performance gap in unnormalized ResNets": the
    signal-propagation plot) and course report 001 (plain VGG38's forward signal dies within its first
    blocks). Error."""
    a = _acts(d)
    std = a.std
    ref = std[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        low = (std < COLLAPSE_FRACTION * ref) & (ref > 0)
    holds = low.any(axis=1)
    n = rows_for(a.steps, d.window)
    out = []
    for s, b in episodes(holds, n, n):
        first = int(np.flatnonzero(low[s]).min())
        ratio = float(std[s, first] / ref[s, 0])
        out.append(
            Finding(
                "signal_collapse",
                "error",
                a.modules[first],
                int(a.steps[s]),
                _end(a.steps, b),
                {
                    "module_index": float(first),
                    "std_ratio": ratio,
                    "input_std": float(ref[s, 0]),
                    "last_std": float(std[s, -1]),
                },
                f"activation std falls to {ratio:.2g} of the first module's at {a.modules[first]}",
                "add BatchNorm, residual connections or a variance-preserving init (He/Kaiming)",
            )
        )
    return out


def dead_units(d: RunData) -> list[Finding]:
    """Modules where at least half the units (channels, features) were zero for every sample of the
    batch at every probed step of ``window`` steps. Source: course report 002 (ReLU MLPs flat-lining
    after a learning rate of 1). Warning; error when nine tenths are dead."""
    a = _acts(d)
    with np.errstate(invalid="ignore"):
        dead = a.dead_frac >= DEAD_FRACTION
    return _per_module(
        a,
        d,
        dead,
        a.dead_frac,
        "dead_units",
        "{v:.0%} of the units of {m} never fire",
        "lower the learning rate, BatchNorm before the activation, or leaky ReLU",
        0.9,
    )


def saturation(d: RunData) -> list[Finding]:
    """Sigmoid/tanh modules with at least half their outputs within 0.03 of a bound at every probed step
    of ``window`` steps (their gradient is then near zero: course report 000's sigmoid and tanh MLPs).
    Warning."""
    a = _acts(d)
    sat = np.nan_to_num(a.saturated_frac, nan=0.0)
    if not np.isfinite(a.saturated_frac).any():
        raise Skipped("the run has no sigmoid or tanh outputs")
    return _per_module(
        a,
        d,
        sat >= SATURATED_FRACTION,
        sat,
        "saturation",
        "{v:.0%} of the outputs of {m} pinned at their bounds",
        "a variance-preserving init (Xavier/Glorot), BatchNorm before the activation, or ReLU",
        2.0,
    )


def _per_module(
    a: Activations, d: RunData, mask: np.ndarray, value: np.ndarray, kind: str, say: str, fix: str, err: float
) -> list[Finding]:
    """One finding per episode of each module's condition (the modules in model order)."""
    n = rows_for(a.steps, d.window)
    out = []
    for m in range(mask.shape[1]):
        for s, b in episodes(mask[:, m], n, n):
            end = mask.shape[0] if b is None else b + 1
            v = float(np.nanmax(value[s:end, m]))
            out.append(
                Finding(
                    kind,
                    "error" if v >= err else "warning",
                    a.modules[m],
                    int(a.steps[s]),
                    _end(a.steps, b),
                    {"fraction": v, "module_index": float(m)},
                    say.format(v=v, m=a.modules[m]),
                    fix,
                )
            )
    return out
