"""Rules over the forward-signal (activation) probe ``act`` of issue 11, axis "module": signal
collapse, dead units and saturation. Runs whose files have no such probe (every file written before
it) skip these rules and say so."""

from __future__ import annotations

import numpy as np

from tuitrain.diagnosis.data import Activations, RunData
from tuitrain.diagnosis.finding import Finding, Skipped, episodes, rows_for

COLLAPSE_FRACTION = 1e-2  # std below 1/100 of the first module's: where the collapse is named
COLLAPSE_DEPTH = 1e-6  # it holds once some module is below 1e-6 of it: six orders of magnitude lost
DEAD_FRACTION = 0.5  # half the units of a module zero for every sample of the batch
DEAD_GROWTH = 0.1  # died in training: the fraction 10 points or more above the run's first probed row's
DEAD_ERROR = 0.9  # nine tenths dead: an error, and signal_collapse leaves the module to dead_units
SATURATED_FRACTION = 0.5  # half the outputs within 0.03 of a sigmoid/tanh bound


def _acts(d: RunData) -> Activations:
    if d.activations is None:
        raise Skipped("the run has no activation probe (files written before issue 11 have none)")
    return d.activations


def _end(steps: np.ndarray, b: int | None) -> int | None:
    return None if b is None else int(steps[b])


def signal_collapse(d: RunData) -> list[Finding]:
    """Activation std falling from the first module's by six orders of magnitude (below 1e-6 of it) in
    some later module, over ``window`` steps; names the first module below 1e-2 of it (where the
    collapse begins) and the deepest fall. Source: Brock et al. 2021 ("Characterizing signal
    propagation to close the performance gap in unnormalized ResNets": the signal-propagation plot)
    and course report 001 (plain VGG38's forward signal dies within its first blocks; VGG08 trains).
    Why six orders and not two: at PyTorch's default init each conv + leaky ReLU scales the std by
    about 0.4, so a shallow net loses orders of magnitude too and trains anyway: VGG08 (8 layers)
    falls to 1e-4 of its first module's at init and to 3e-5 after 40 Adam steps at batch 20 (8x8
    synthetic images), while plain VGG38 passes 1e-6 within its first stage and ends near 1e-19.
    Error. A module with nine tenths of its units dead (``dead_frac >= 0.9``) is left out: its std is
    near zero because its units are zero, which is dead_units' finding (002's ReLU MLP at learning
    rate 1), not a signal that shrinks layer by layer."""
    a = _acts(d)
    std = a.std
    ref = std[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(a.dead_frac >= DEAD_ERROR, np.nan, std / ref)
        ratio[~(ref[:, 0] > 0)] = np.nan
        low = ratio < COLLAPSE_FRACTION
        holds = (ratio < COLLAPSE_DEPTH).any(axis=1)
    n = rows_for(a.steps, d.window)
    out = []
    for s, b in episodes(holds, n, n):
        first = int(np.flatnonzero(low[s]).min())
        deepest = int(np.nanargmin(ratio[s]))
        r, lowest = float(ratio[s, first]), float(ratio[s, deepest])
        out.append(
            Finding(
                "signal_collapse",
                "error",
                a.modules[first],
                int(a.steps[s]),
                _end(a.steps, b),
                {
                    "module_index": float(first),
                    "std_ratio": r,
                    "min_std_ratio": lowest,
                    "input_std": float(ref[s, 0]),
                    "last_std": float(std[s, -1]),
                },
                f"activation std falls to {r:.2g} of the first module's at {a.modules[first]}"
                f" and to {lowest:.2g} at {a.modules[deepest]}",
                "add BatchNorm, residual connections or a variance-preserving init (He/Kaiming)",
            )
        )
    return out


def dead_units(d: RunData) -> list[Finding]:
    """Modules where at least half the units (channels, features) were zero for every sample of the
    batch at every probed step of ``window`` steps. Source: course report 002 (ReLU MLPs flat-lining
    after a learning rate of 1: "all the neurons are dead"). Units that died in training (the fraction
    at least 10 points above the module's first probed value, at the run's first probed step: the
    model before its first update): warning, error from nine tenths. Units dead from that first row on are the init's doing,
    not the learning rate's: PyTorch's default init shrinks a plain ReLU stack's signal until the
    biases decide (55% of the fifth layer of 002's 6-layer MLP without BatchNorm, at init): info, with
    an init fix, so a run at a tiny learning rate (nothing changes) is not blamed for them. Sigmoid and
    tanh modules are left to saturation: a sigmoid pinned at its lower bound underflows to exact zeros
    (toy2d_mlp with sigmoid at Adam learning rate 1), the same fact."""
    a = _acts(d)
    frac = a.dead_frac
    ok = np.isfinite(frac)
    base = np.where(ok.any(axis=0), frac[ok.argmax(axis=0), np.arange(frac.shape[1])], np.nan)
    bounded = np.isfinite(a.saturated_frac).any(axis=0)
    with np.errstate(invalid="ignore"):
        dead = (frac >= DEAD_FRACTION) & ~bounded
        died = dead & ~(frac < base + DEAD_GROWTH)
    return _per_module(
        a,
        d,
        died,
        frac,
        "dead_units",
        "{v:.0%} of the units of {m} never fire ({b:.0%} at the first probed step): they died in training",
        "lower the learning rate, BatchNorm before the activation, or leaky ReLU",
        err=DEAD_ERROR,
        at_init=base,
    ) + _per_module(
        a,
        d,
        dead & ~died,
        frac,
        "dead_units",
        "{v:.0%} of the units of {m} never fire, as at the first probed step (at init: the init's doing)",
        "a variance-preserving init (He/Kaiming, zero biases), BatchNorm before the activation, or leaky ReLU",
        severity="info",
        at_init=base,
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
    )


def _per_module(
    a: Activations,
    d: RunData,
    mask: np.ndarray,
    value: np.ndarray,
    kind: str,
    say: str,
    fix: str,
    *,
    severity: str = "warning",
    err: float = 2.0,
    at_init: np.ndarray | None = None,
) -> list[Finding]:
    """One finding per episode of each module's condition (the modules in model order): ``severity``,
    or error when the worst value reaches ``err``; ``at_init`` (per module) goes into the evidence."""
    n = rows_for(a.steps, d.window)
    out = []
    for m in range(mask.shape[1]):
        for s, b in episodes(mask[:, m], n, n):
            end = mask.shape[0] if b is None else b + 1
            v = float(np.nanmax(value[s:end, m]))
            ev = {"fraction": v, "module_index": float(m)}
            base = float("nan") if at_init is None else float(at_init[m])
            if at_init is not None:
                ev["at_first_step"] = base
            out.append(
                Finding(
                    kind,
                    "error" if v >= err else severity,
                    a.modules[m],
                    int(a.steps[s]),
                    _end(a.steps, b),
                    ev,
                    say.format(v=v, m=a.modules[m], b=base),
                    fix,
                )
            )
    return out
