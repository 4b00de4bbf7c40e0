"""The alert rules the monitor runs at its flush: NaN/Inf, vanishing and exploding gradients
(:class:`GradientAlerts`), and divergence of the loss for ``monitor.on_nan = "stop"``
(:class:`DivergenceGuard`). Plain numpy over the flushed rows: no torch, no device reads.

Why at the flush: the values are only on the host there (see :mod:`tuitrain.train.monitor`), and one
reduction per flushed block decides the healthy case for all its steps at once.
"""

from __future__ import annotations

import math

import numpy as np

from tuitrain.config import MonitorConfig
from tuitrain.events import PROBE_NAMES, Alert, LayerInfo

_GRAD_NORM = PROBE_NAMES.index("grad_norm")
_GRAD_MEAN_ABS = PROBE_NAMES.index("grad_mean_abs")


class Diverged(Exception):
    """The training loss went non-finite and ``monitor.on_nan = "stop"``: the run ends as ``failed``
    with this message (``diverged: loss is NaN at step N``) as its error. Not a bug: no traceback."""


class DivergenceGuard:
    """Counts non-finite training losses in a row over the flushed blocks and says when to stop.

    ``patience`` (``monitor.nan_patience``) is how many such losses in a row are tolerated: with 0 the
    first one stops the run; a finite loss resets the count. The message names the first step of the
    run of bad losses that stopped it, whatever the flush boundaries were.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.streak = 0  # non-finite losses in a row, up to the last flushed step
        self.first_step = -1  # the first step of that run of bad losses
        self.first_value = 0.0
        self.message = ""  # set once: the run must stop

    def observe(self, steps: np.ndarray, losses: np.ndarray) -> str:
        """Take a flushed block's steps and losses (step order); return the stop message, or ""."""
        if self.message:
            return self.message
        finite = np.isfinite(losses)
        if finite.all():  # the healthy case: one reduction per flush
            self.streak = 0
            return ""
        for step, loss, ok in zip(steps.tolist(), losses.tolist(), finite.tolist(), strict=True):
            if ok:
                self.streak = 0
                continue
            if self.streak == 0:
                self.first_step, self.first_value = int(step), float(loss)
            self.streak += 1
            if self.streak > self.patience:
                what = "NaN" if math.isnan(self.first_value) else ("Inf" if self.first_value > 0 else "-Inf")
                self.message = f"diverged: loss is {what} at step {self.first_step}"
                if self.patience:
                    self.message += f" (non-finite for {self.streak} steps in a row; monitor.nan_patience = {self.patience})"
                break
        return self.message


class GradientAlerts:
    """Says once, in words, what a person would otherwise have to spot in a heatmap.

    ``check`` runs for every probed step: in the healthy case it costs three numpy reductions, and the
    streak bookkeeping works in preallocated arrays in place.
    """

    def __init__(self, layers: list[LayerInfo], cfg: MonitorConfig, every: int | None = None) -> None:
        self.cfg = cfg
        self.every = cfg.every if every is None else every  # the gradient probe's: steps per probed row
        self.names = [layer.name for layer in layers]
        self.weights = np.array([layer.kind == "weight" for layer in layers], dtype=bool)
        if not self.weights.any():
            self.weights[:] = True
        self.n_weights = int(self.weights.sum())
        self._weight_idx = np.flatnonzero(self.weights)
        self.streak = np.zeros(len(layers), dtype=np.int64)
        self._below = np.zeros(len(layers), dtype=bool)
        self._stuck = np.zeros(len(layers), dtype=bool)
        self._streaking = False  # some streak is non-zero
        self.vanish_reported = 0
        self.explode_armed = True
        self.nan_epoch = -1

    def check(self, step: int, epoch: int, loss: float | None, probes: np.ndarray | None) -> list[Alert]:
        """The alerts of one step: ``loss`` is None when the step logged none (a user loop), ``probes``
        the gradient probe's ``(len(PROBE_NAMES), n_layers)`` row, None on a step it did not probe."""
        alerts: list[Alert] = []
        # One sum tells whether every statistic is finite: in float64 it cannot overflow, and the
        # statistics are norms (>= 0), so no Inf - Inf. The exact test names the columns.
        bad_probe = probes is not None and not math.isfinite(float(probes.sum(dtype=np.float64)))
        bad_loss = loss is not None and not math.isfinite(loss)
        if (bad_probe or bad_loss) and self.nan_epoch != epoch:
            self.nan_epoch = epoch  # at most one NaN alert per epoch: the log stays readable
            what = [] if loss is None else [f"loss = {loss}"]
            if bad_probe:
                assert probes is not None
                cols = np.nonzero(~np.isfinite(probes).all(axis=0))[0]
                what.append(f"non-finite statistics in {len(cols)} tensors, first {self.names[cols[0]]}")
            alerts.append(Alert(step, "error", "nan", f"NaN/Inf at step {step}: {'; '.join(what)}"))
        if probes is None:
            return alerts
        cfg = self.cfg
        # Fast paths for the healthy case, one reduction each: no layer below `vanishing` (and no streak
        # or report to reset), no grad norm above `exploding`. NaN fails both tests: the exact code decides.
        # Only weight tensors count as vanishing: a bias before a BatchNorm has a zero gradient by design.
        weight_min = float(probes[_GRAD_MEAN_ABS, self._weight_idx].min())
        if self._streaking or self.vanish_reported or not weight_min >= cfg.vanishing:
            self._check_vanishing(step, probes, alerts)
        if not float(probes[_GRAD_NORM].max()) <= cfg.exploding:
            self._check_exploding(step, probes, alerts)
        else:
            self.explode_armed = True
        return alerts

    def check_block(
        self,
        steps: np.ndarray,
        epochs: np.ndarray,
        losses: np.ndarray,
        has_loss: np.ndarray,
        probe_steps: np.ndarray | None,
        probes: np.ndarray | None,
    ) -> list[Alert]:
        """:meth:`check` for each step of a flushed block, in step order, where it can say something:
        steps with a gradient-probe row (``probes[k]`` for ``probe_steps[k]``), and steps whose logged
        loss (``has_loss``) is not finite. One test for the whole block in the healthy case."""
        logged = losses if has_loss.all() else losses[has_loss]
        if probes is None or probe_steps is None:
            probe_steps, probes = np.zeros(0, np.int64), np.zeros((0, len(PROBE_NAMES), len(self.names)))
        if self.healthy(logged.tolist(), probes):
            return []
        by_step = dict(zip(probe_steps.tolist(), range(len(probe_steps)), strict=True))
        alerts: list[Alert] = []
        for i, (step, epoch) in enumerate(zip(steps.tolist(), epochs.tolist(), strict=True)):
            k = by_step.get(step)
            loss = float(losses[i]) if has_loss[i] else None
            if k is not None or (loss is not None and not math.isfinite(loss)):
                alerts += self.check(step, epoch, loss, probes[k] if k is not None else None)
        return alerts

    def healthy(self, losses: list[float], probes: np.ndarray) -> bool:
        """Whether a block of steps (``probes`` of shape (k, len(PROBE_NAMES), n_layers)) can raise no
        alert and change no state: then :meth:`check` need not run for each of them. Four reductions
        for the whole block."""
        if not all(map(math.isfinite, losses)):
            return False
        if not len(probes):
            return True
        if self._streaking or self.vanish_reported or not self.explode_armed:
            return False
        return (
            math.isfinite(float(probes.sum(dtype=np.float64)))
            and float(probes[:, _GRAD_MEAN_ABS, self._weight_idx].min()) >= self.cfg.vanishing
            and float(probes[:, _GRAD_NORM].max()) <= self.cfg.exploding
        )

    def _check_vanishing(self, step: int, probes: np.ndarray, alerts: list[Alert]) -> None:
        cfg = self.cfg
        # streak := where(below, streak + every, 0), with below = mean |grad| < vanishing on weights
        below, streak, stuck = self._below, self.streak, self._stuck
        np.less(probes[_GRAD_MEAN_ABS], cfg.vanishing, out=below)
        below &= self.weights
        streak += self.every
        streak *= below
        self._streaking = bool(np.count_nonzero(streak))
        np.greater_equal(streak, cfg.alert_steps, out=stuck)
        stuck &= self.weights
        n_stuck, n_weights = int(np.count_nonzero(stuck)), self.n_weights
        if n_stuck and n_stuck >= max(1, self.vanish_reported + max(1, n_weights // 4)):
            first = self.names[int(np.argmax(stuck))]
            alerts.append(
                Alert(
                    step,
                    "warning",
                    "vanishing",
                    f"vanishing gradients: {n_stuck} of {n_weights} weight layers have mean |grad| below "
                    f"{cfg.vanishing:g} for {cfg.alert_steps} steps (first: {first})",
                )
            )
            self.vanish_reported = n_stuck
        elif self.vanish_reported and n_stuck == 0 and not np.count_nonzero(below):
            alerts.append(
                Alert(step, "info", "recovered", "gradients recovered: no weight layer is vanishing now")
            )
            self.vanish_reported = 0

    def _check_exploding(self, step: int, probes: np.ndarray, alerts: list[Alert]) -> None:
        cfg = self.cfg
        norms = probes[_GRAD_NORM]
        over = np.isfinite(norms) & (norms > cfg.exploding)
        n_over = int(np.count_nonzero(over))
        if n_over and self.explode_armed:
            worst = int(np.argmax(np.where(over, norms, -np.inf)))
            alerts.append(
                Alert(
                    step,
                    "warning",
                    "exploding",
                    f"exploding gradients: {n_over} tensors have grad norm above {cfg.exploding:g} "
                    f"(largest {norms[worst]:.3g} in {self.names[worst]})",
                )
            )
            self.explode_armed = False
        elif not n_over:
            self.explode_armed = True
