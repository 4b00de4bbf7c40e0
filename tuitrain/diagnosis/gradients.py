"""Rules over the gradient probe (per parameter tensor, weights only): vanishing and exploding
gradients, and the update-to-weight ratio."""

from __future__ import annotations

import numpy as np

from tuitrain.diagnosis.data import Grads, RunData
from tuitrain.diagnosis.finding import Finding, Skipped, episodes, rows_for

RELATIVE_VANISHING = 1e-4  # a weight's mean |grad| this far below the largest layer's is vanishing too
UPDATE_TOO_LOW = 1e-5
UPDATE_TOO_HIGH = 1e-1


def _grads(d: RunData) -> tuple[Grads, np.ndarray]:
    if d.grads is None:
        raise Skipped("the run has no gradient probe (a loop that never called run.watch)")
    w = d.weight_idx
    if not w.size:
        raise Skipped("the run's layer table has no weight tensors")
    return d.grads, w


def _close(steps: np.ndarray, last: int | None) -> int | None:
    return None if last is None else int(steps[last])


def vanishing_gradients(d: RunData) -> list[Finding]:
    """Weights whose mean |grad| is below ``monitor.vanishing`` (default 1e-8, the file's threshold) or
    1e-4 of the largest layer's, for ``window`` steps (``monitor.alert_steps``, default 50).

    Source: course report 001 (plain VGG38 stuck at chance, mean |grad| ~1e-18 at init, against ~1e-6
    in VGG08) and 000 (sigmoid MLPs). Names the layer nearest the output where it begins (gradients
    vanish on the way back to the input) and the ratio of the first to the last weight's mean |grad|.
    Error when most weight layers vanish, else warning."""
    g, w = _grads(d)
    gma = g.grad_mean_abs[:, w]
    with np.errstate(invalid="ignore"):
        top = np.nanmax(np.where(np.isfinite(gma), gma, np.nan), axis=1, initial=0.0, keepdims=True)
        low = (gma < d.vanishing) | (gma < RELATIVE_VANISHING * top)
    holds = low.any(axis=1)
    n = rows_for(g.steps, d.window)
    out = []
    for a, b in episodes(holds, n, n):
        at = a if b is None else b
        row = low[a : (b if b is not None else len(holds) - 1) + 1].mean(axis=0) >= 0.5
        idx = np.flatnonzero(row) if row.any() else np.flatnonzero(low[at])
        deepest = int(idx.max())
        frac = float(row.mean())
        ratio = float(gma[at, 0] / gma[at, -1]) if gma[at, -1] > 0 else float("nan")
        name = d.layer_names[int(w[deepest])]
        out.append(
            Finding(
                "vanishing_gradients",
                "error" if frac >= 0.5 else "warning",
                name,
                int(g.steps[a]),
                _close(g.steps, b),
                {
                    "depth": float(deepest + 1),
                    "weight_layers": float(w.size),
                    "vanishing_layers": float(idx.size),
                    "min_grad_mean_abs": float(np.nanmin(gma[at])),
                    "first_last_ratio": ratio,
                },
                f"mean |grad| below {d.vanishing:g} in {idx.size} of {w.size} weight layers, from the input"
                f" up to {name} (depth {deepest + 1})",
                "add BatchNorm, residual connections or a variance-preserving init (He/Kaiming); "
                "avoid saturating activations",
            )
        )
    return out


def exploding_gradients(d: RunData) -> list[Finding]:
    """Weights whose grad L2 norm is above ``monitor.exploding`` (default 1e2, the file's threshold) for
    ``window`` steps (``monitor.alert_steps``); NaN gradients count. Source: the monitor's alert of
    issue 3 (course report 002's diverging runs at learning rate 1), made per layer: names the first
    layer (model order) where it begins and the ratio of the first to the last weight's norm. Error."""
    g, w = _grads(d)
    gn = g.grad_norm[:, w]
    with np.errstate(invalid="ignore"):
        high = ~(gn <= d.exploding)
    holds = high.any(axis=1)
    n = rows_for(g.steps, d.window)
    out = []
    for a, b in episodes(holds, n, n):
        first = int(np.flatnonzero(high[a]).min())
        name = d.layer_names[int(w[first])]
        out.append(
            Finding(
                "exploding_gradients",
                "error",
                name,
                int(g.steps[a]),
                _close(g.steps, b),
                {
                    "depth": float(first + 1),
                    "weight_layers": float(w.size),
                    "exploding_layers": float(high[a].sum()),
                    "max_grad_norm": float(np.nanmax(gn[a], initial=np.nan)),
                    "first_last_ratio": float(gn[a, 0] / gn[a, -1]) if gn[a, -1] > 0 else float("nan"),
                },
                f"grad L2 norm above {d.exploding:g} in {int(high[a].sum())} of {w.size} weight layers,"
                f" from {name} (depth {first + 1})",
                "lower the learning rate, clip gradients (clip_grad_norm_), add BatchNorm",
            )
        )
    return out


def update_ratio(d: RunData) -> list[Finding]:
    """Per weight layer, the update-to-weight ratio ||dW||/||W|| over ``window`` steps (median of the
    rows, step 0's excluded: no update yet) against CS231n's rule of thumb of about 1e-3: below 1e-5
    "learning rate probably too low", above 1e-1 "too high" (warnings). One finding per direction,
    naming the worst layer; it holds while the median of the affected layers stays past the bound."""
    g, w = _grads(d)
    keep = g.steps > 0
    steps, ur = g.steps[keep], g.update_ratio[keep][:, w].copy()
    with np.errstate(invalid="ignore"):
        # a weight whose gradient vanishes does not move at any learning rate: vanishing_gradients' case
        ur[g.grad_mean_abs[keep][:, w] < d.vanishing] = np.nan
    if not steps.size:
        raise Skipped("the run has no probed step after the first update")
    n = rows_for(steps, d.window)
    out = []
    for label, worse, bound in (
        ("too low", np.less, UPDATE_TOO_LOW),
        ("too high", np.greater, UPDATE_TOO_HIGH),
    ):
        with np.errstate(invalid="ignore"):
            past = worse(ur, bound)
        holds = past.sum(axis=1) >= 0.5 * w.size
        for a, b in episodes(holds, n, n):
            end = len(holds) if b is None else b + 1
            med = np.nanmedian(ur[a:end], axis=0)
            bad = np.flatnonzero(worse(med, bound))
            bad = bad if bad.size else np.flatnonzero(past[a])
            worst = int(bad[np.argmin(med[bad])] if label == "too low" else bad[np.argmax(med[bad])])
            name = d.layer_names[int(w[worst])]
            out.append(
                Finding(
                    "update_ratio",
                    "warning",
                    name,
                    int(steps[a]),
                    _close(steps, b),
                    {
                        "median_update_ratio": float(med[worst]),
                        "layers": float(bad.size),
                        "weight_layers": float(w.size),
                        "bound": bound,
                    },
                    f"update/weight ratio {label} ({float(med[worst]):.2g}, about 1e-3 is typical) in"
                    f" {bad.size} of {w.size} weight layers, worst {name}",
                    f"learning rate probably {label}: "
                    + ("raise it (try 10x)" if label == "too low" else "lower it (try 0.1x), or warm it up"),
                )
            )
    return out
