"""Rules over the loss, accuracy and epochs: loss at init, stuck at chance, plateau, diverging and
overfitting."""

from __future__ import annotations

import math

import numpy as np

from tuitrain.diagnosis.data import RunData
from tuitrain.diagnosis.finding import Finding, Skipped, episodes, rolling_mean

INIT_FACTOR = 1.5  # the first loss more than 1.5x (or under 1/1.5x) ln(classes) is far from it
CHANCE_LOSS_TOL = 0.03  # within 3% of ln(classes) is "at chance"
PLATEAU_GAIN = 0.01  # less than 1% better than the window before: a plateau
RISING_FACTOR = 1.5  # the rolling loss 1.5x its best so far: diverging
STUCK_WINDOWS = 4  # stuck_at_chance needs this many windows at chance
GAP_MILD = 0.07  # 003: a 7-point train-validation accuracy gap reads as mild overfitting
GAP_STRONG = 0.15


def _loss(d: RunData) -> np.ndarray:
    if d.loss is None or not d.loss.size:
        raise Skipped("the run logged no per-step loss")
    return d.loss


def _chance(d: RunData) -> float:
    if d.num_classes < 2:
        raise Skipped("the number of classes is unknown (a user's own loop), so chance is too")
    return math.log(d.num_classes)


def _end(steps: np.ndarray, b: int | None) -> int | None:
    return None if b is None else int(steps[b])


def loss_at_init(d: RunData) -> list[Finding]:
    """The first finite loss against ln(classes), the cross-entropy of uniform predictions (Karpathy's
    "verify loss @ init"; course report 001: VGG38's 4.61 = ln 100). More than 1.5x or under 1/1.5x
    of it: the init or the output layer's scale is off (warning)."""
    loss, ref = _loss(d), _chance(d)
    if d.steps.size and d.steps[0] > 0:  # live diagnosis of a resumed run: it sees the continuation only
        raise Skipped(f"the data starts at step {int(d.steps[0])}, after the run's initialisation")
    ok = np.flatnonzero(np.isfinite(loss))
    if not ok.size:
        raise Skipped("the run logged no finite loss")
    i = int(ok[0])
    first = float(loss[i])
    if ref / INIT_FACTOR <= first <= ref * INIT_FACTOR:
        return []
    step = int(d.steps[i])
    return [
        Finding(
            "loss_at_init",
            "warning",
            "",
            step,
            step,
            {"first_loss": first, "ln_classes": ref, "ratio": first / ref},
            f"first loss {first:.3g}, far from ln({d.num_classes}) = {ref:.3g} (uniform predictions)",
            "scale down the last layer's init (or zero it) so the first predictions are near uniform",
        )
    ]


def stuck_at_chance(d: RunData) -> list[Finding]:
    """Over ``4 x window`` steps (200 at the default ``monitor.alert_steps``) the mean loss stays within
    3% of ln(classes) and, where accuracy is logged, the mean accuracy below 1.5x chance (course report
    001: plain VGG38 at 4.61 and 1% for 100 epochs). Error: the model learns nothing. The long window
    because a healthy run starts at chance too (VGG08 on 8x8 images leaves it after ~60 steps)."""
    loss, ref = _loss(d), _chance(d)
    w = max(1, STUCK_WINDOWS * d.window)
    lm = rolling_mean(loss, w)
    with np.errstate(invalid="ignore"):
        holds = np.abs(lm - ref) <= CHANCE_LOSS_TOL * ref
        if d.acc is not None:
            holds &= rolling_mean(d.acc, w) < 1.5 / d.num_classes
    out = []
    for a, b in episodes(holds, 1, w):
        start = max(0, a - w + 1)
        out.append(
            Finding(
                "stuck_at_chance",
                "error",
                "",
                int(d.steps[start]),
                _end(d.steps, b),
                {"mean_loss": float(lm[a]), "ln_classes": ref, "window_steps": float(w)},
                f"loss at chance (mean {float(lm[a]):.3g} over {w} steps, ln({d.num_classes}) = {ref:.3g})",
                "look at the gradients: vanishing ones (add BatchNorm or residual connections), a learning"
                " rate far off, or labels that do not match the inputs",
            )
        )
    return out


def plateau(d: RunData) -> list[Finding]:
    """The mean loss over the last window (``max(window, steps/10)``) is within 1% of the window
    before it (less than 1% below, and not more than 1% above: a rising loss is diverging's), while
    not at chance (that is stuck_at_chance) (info: converged runs flatten too; a learning-rate
    schedule or more capacity may help, course report 002 s6)."""
    loss = _loss(d)
    w = max(d.window, loss.size // 10, 1)
    lm = rolling_mean(loss, w)
    prev = np.concatenate([np.full(w, np.nan), lm[:-w]]) if lm.size > w else np.full(lm.shape, np.nan)
    with np.errstate(invalid="ignore"):
        holds = (lm > prev * (1 - PLATEAU_GAIN)) & (lm <= prev * (1 + PLATEAU_GAIN))
        if d.num_classes >= 2:
            holds &= np.abs(lm - math.log(d.num_classes)) > CHANCE_LOSS_TOL * math.log(d.num_classes)
    out = []
    for a, b in episodes(holds, 1, w):
        out.append(
            Finding(
                "plateau",
                "info",
                "",
                int(d.steps[a]),
                _end(d.steps, b),
                {"mean_loss": float(lm[a]), "previous_mean_loss": float(prev[a]), "window_steps": float(w)},
                f"loss flat: {float(lm[a]):.3g} over the last {w} steps against {float(prev[a]):.3g} before",
                "if it is not good enough yet: a learning-rate schedule (cosine, step decay), "
                "a larger model, or less regularisation",
            )
        )
    return out


def diverging(d: RunData) -> list[Finding]:
    """A non-finite loss (NaN/Inf: error, from its first step; course report 002's runs at learning rate 1
    and the monitor's NaN alert) or the rolling mean loss over ``window`` steps rising to 1.5x its best
    so far (warning)."""
    loss = _loss(d)
    out = []
    for a, b in episodes(~np.isfinite(loss), 1, 1):
        out.append(
            Finding(
                "diverging",
                "error",
                "",
                int(d.steps[a]),
                _end(d.steps, b),
                {
                    "nonfinite_steps": float(np.count_nonzero(~np.isfinite(loss[a:]))),
                    "last_finite_loss": (float(loss[a - 1]) if a else float("nan")),
                },
                "loss is not finite (NaN/Inf)",
                "lower the learning rate, clip gradients, check the data for NaN/Inf and the loss for log(0)",
            )
        )
    w = max(1, d.window)
    lm = rolling_mean(np.where(np.isfinite(loss), loss, np.nan), w)
    best = np.fmin.accumulate(np.where(np.isfinite(lm), lm, np.inf))
    with np.errstate(invalid="ignore"):
        holds = np.isfinite(lm) & (lm > RISING_FACTOR * best) & np.isfinite(best)
    for a, b in episodes(holds, 1, w):
        out.append(
            Finding(
                "diverging",
                "warning",
                "",
                int(d.steps[a]),
                _end(d.steps, b),
                {"mean_loss": float(lm[a]), "best_mean_loss": float(best[a]), "window_steps": float(w)},
                f"loss rising: mean {float(lm[a]):.3g} over {w} steps against a best of {float(best[a]):.3g}",
                "lower the learning rate or add warm-up; clip gradients",
            )
        )
    return out


def overfitting(d: RunData) -> list[Finding]:
    """Per epoch, the train-validation accuracy gap at least 7 points (course report 003 reads a 7-point
    gap as mild overfitting: info; 15 or more: warning) and not smaller than two epochs before (growing)."""
    ep = d.epochs
    if not ep or "val_acc" not in ep or ep["val_acc"].size < 3:
        raise Skipped("the run has fewer than 3 epochs with validation")
    ta, va = ep["train_acc"].astype(float), ep["val_acc"].astype(float)
    gap = ta - va
    if not np.isfinite(gap).any():
        raise Skipped("the run logged no train and validation accuracy per epoch")
    lagged = np.concatenate([[np.nan, np.nan], gap[:-2]])
    with np.errstate(invalid="ignore"):
        holds = (gap >= GAP_MILD) & ~(gap < lagged)
    out = []
    for a, b in episodes(holds, 1, 2):
        end = len(gap) if b is None else b + 1
        worst = float(np.nanmax(gap[a:end]))
        out.append(
            Finding(
                "overfitting",
                "warning" if worst >= GAP_STRONG else "info",
                "",
                int(ep["step"][a]),
                None if b is None else int(ep["step"][b]),
                {"gap_points": 100 * worst, "train_acc": float(ta[end - 1]), "val_acc": float(va[end - 1])},
                f"train-validation accuracy gap {100 * worst:.1f} points and growing"
                + (" (mild)" if worst < GAP_STRONG else ""),
                "more data or augmentation, weight decay, dropout, or stop earlier (the best epoch)",
            )
        )
    return out
