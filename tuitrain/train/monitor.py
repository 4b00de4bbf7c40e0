"""The monitor: turns steps of any PyTorch loop into tuitrain events for a list of sinks.

It is deliberately independent of :mod:`tuitrain.train.engine`: the engine is one user of it, and a
user's own training script can be another (attach a Monitor to your model, call ``before_step`` /
``after_step`` around ``optimizer.step()``). It owns the probe, the device-to-host readback, the
buffering of step rows into :class:`StepBatch` events every ``monitor.emit_seconds``, and the
detection of NaN/Inf and of vanishing or exploding gradients.

Why it is written the way it is: ``after_step`` runs once per step, and for a tiny model a step takes
about a millisecond, so every microsecond here is a visible fraction of it (``bench/overhead.py``). On
CPU the values are host memory already, so they skip the device vector and the readback queue; a row
is one tuple appended to a list (no numpy call per step; one array per column per flush); the alert
checks cost three numpy reductions in the healthy case. On CUDA nothing here reads the device:
:class:`HostReadback` hands values back a few steps late.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from tuitrain.config import MonitorConfig
from tuitrain.events import PROBE_NAMES, Alert, Event, LayerInfo, Sink, StepBatch
from tuitrain.train.probes import HostReadback, LayerProbe

_N_PROBES = len(PROBE_NAMES)
_GRAD_NORM = PROBE_NAMES.index("grad_norm")
_GRAD_MEAN_ABS = PROBE_NAMES.index("grad_mean_abs")


class GradientAlerts:
    """Says once, in words, what a person would otherwise have to spot in a heatmap.

    ``check`` runs for every probed step: in the healthy case it costs three numpy reductions, and the
    streak bookkeeping works in preallocated arrays in place.
    """

    def __init__(self, layers: list[LayerInfo], cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.names = [layer.name for layer in layers]
        self.weights = np.array([layer.kind == "weight" for layer in layers], dtype=bool)
        if not self.weights.any():
            self.weights[:] = True
        self.n_weights = int(self.weights.sum())
        self.streak = np.zeros(len(layers), dtype=np.int64)
        self._below = np.zeros(len(layers), dtype=bool)
        self._stuck = np.zeros(len(layers), dtype=bool)
        self._streaking = False  # some streak is non-zero
        self.vanish_reported = 0
        self.explode_armed = True
        self.nan_epoch = -1

    def check(self, step: int, epoch: int, loss: float, probes: np.ndarray | None) -> list[Alert]:
        alerts: list[Alert] = []
        # One sum tells whether every statistic is finite: in float64 it cannot overflow, and the
        # statistics are norms (>= 0), so no Inf - Inf. The exact test names the columns.
        bad_probe = probes is not None and not math.isfinite(float(probes.sum(dtype=np.float64)))
        if (bad_probe or not math.isfinite(loss)) and self.nan_epoch != epoch:
            self.nan_epoch = epoch  # at most one NaN alert per epoch: the log stays readable
            where = ""
            if bad_probe:
                assert probes is not None
                cols = np.nonzero(~np.isfinite(probes).all(axis=0))[0]
                where = f"; non-finite statistics in {len(cols)} tensors, first {self.names[cols[0]]}"
            alerts.append(Alert(step, "error", "nan", f"NaN/Inf at step {step}: loss = {loss}{where}"))
        if probes is None:
            return alerts
        cfg = self.cfg
        # Fast paths for the healthy case, one reduction each: no layer below `vanishing` (and no streak
        # or report to reset), no grad norm above `exploding`. NaN fails both tests: the exact code decides.
        if self._streaking or self.vanish_reported or not float(probes[_GRAD_MEAN_ABS].min()) >= cfg.vanishing:
            self._check_vanishing(step, probes, alerts)
        if not float(probes[_GRAD_NORM].max()) <= cfg.exploding:
            self._check_exploding(step, probes, alerts)
        else:
            self.explode_armed = True
        return alerts

    def _check_vanishing(self, step: int, probes: np.ndarray, alerts: list[Alert]) -> None:
        cfg = self.cfg
        # streak := where(below, streak + every, 0), with below = mean |grad| < vanishing on weights
        below, streak, stuck = self._below, self.streak, self._stuck
        np.less(probes[_GRAD_MEAN_ABS], cfg.vanishing, out=below)
        below &= self.weights
        streak += cfg.every
        streak *= below
        self._streaking = bool(np.count_nonzero(streak))
        np.greater_equal(streak, cfg.alert_steps, out=stuck)
        stuck &= self.weights
        n_stuck, n_weights = int(np.count_nonzero(stuck)), self.n_weights
        if n_stuck and n_stuck >= max(1, self.vanish_reported + max(1, n_weights // 4)):
            first = self.names[int(np.argmax(stuck))]
            alerts.append(Alert(
                step, "warning", "vanishing",
                f"vanishing gradients: {n_stuck} of {n_weights} weight layers have mean |grad| below "
                f"{cfg.vanishing:g} for {cfg.alert_steps} steps (first: {first})",
            ))
            self.vanish_reported = n_stuck
        elif self.vanish_reported and n_stuck == 0 and not np.count_nonzero(below):
            alerts.append(Alert(step, "info", "recovered", "gradients recovered: no weight layer is vanishing now"))
            self.vanish_reported = 0

    def _check_exploding(self, step: int, probes: np.ndarray, alerts: list[Alert]) -> None:
        cfg = self.cfg
        norms = probes[_GRAD_NORM]
        over = np.isfinite(norms) & (norms > cfg.exploding)
        n_over = int(np.count_nonzero(over))
        if n_over and self.explode_armed:
            worst = int(np.argmax(np.where(over, norms, -np.inf)))
            alerts.append(Alert(
                step, "warning", "exploding",
                f"exploding gradients: {n_over} tensors have grad norm above {cfg.exploding:g} "
                f"(largest {norms[worst]:.3g} in {self.names[worst]})",
            ))
            self.explode_armed = False
        elif not n_over:
            self.explode_armed = True


class Monitor:
    """Per-step bookkeeping between a training loop and its sinks."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        layers: list[LayerInfo],
        sinks: list[Sink],
        cfg: MonitorConfig,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.sinks = sinks
        self.probe = LayerProbe(params)
        self.readback = HostReadback(device)
        self.alerts = GradientAlerts(layers, cfg)
        self.n_layers = len(layers)
        self.step = 0  # steps taken so far; the next step's index
        self._host = device.type == "cpu"  # values are host memory: no readback queue needed
        # Rows since the last flush as plain tuples and arrays: appending costs no numpy call, and
        # each flush turns them into arrays at once.
        self._rows: list[tuple[int, int, float, float, float, float, float]] = []
        self._probe_steps: list[int] = []
        self._probes: list[np.ndarray] = []
        self._sums = [0.0, 0.0, 0]  # loss*n, correct, n: epoch means without another device pass
        self._last_emit = time.perf_counter()
        self._last_step_t: float | None = None
        self.last_loss = math.nan

    @property
    def epoch_sums(self) -> np.ndarray:
        """Summed loss*n, correct and n since the last :meth:`take_epoch_means`."""
        return np.array(self._sums, dtype=np.float64)

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def probing(self) -> bool:
        return self.step % self.cfg.every == 0

    # -- the two calls around optimizer.step() ----------------------------------------------------
    def before_step(self) -> None:
        if self.step % self.cfg.every == 0:
            self.probe.before_step()

    def after_step(self, loss: torch.Tensor, correct: torch.Tensor, batch_size: int, lr: float, epoch: int) -> None:
        now = time.perf_counter()
        last = self._last_step_t
        step_time = (now - last) if last is not None else math.nan
        self._last_step_t = now
        step = self.step
        probed = step % self.cfg.every == 0
        if self._host:
            # CPU: reading a value is no synchronisation, and a device vector would only be copied.
            probes = self.probe.after_step_host() if probed else None
            self.step = step + 1
            self._add(step, epoch, lr, step_time, batch_size, loss.item(), correct.item(), probes)
        else:
            parts = [loss.detach().reshape(1).float(), correct.detach().reshape(1).float()]
            if probed:
                parts.append(self.probe.after_step().reshape(-1))
            self.readback.push((step, epoch, lr, step_time, batch_size, probed), torch.cat(parts))
            self.step = step + 1
            self._collect(self.readback.pop_ready())
        if now - self._last_emit >= self.cfg.emit_seconds:
            self.flush()

    def pause_clock(self) -> None:
        """Forget the last step time, so a pause or an evaluation does not count as a slow step."""
        self._last_step_t = None

    # -- host side --------------------------------------------------------------------------------
    def _collect(self, ready: list[tuple[tuple, np.ndarray]]) -> None:
        for (step, epoch, lr, step_time, batch_size, probed), vec in ready:
            probes = vec[2:].reshape(_N_PROBES, self.n_layers) if probed else None
            self._add(step, epoch, lr, step_time, batch_size, float(vec[0]), float(vec[1]), probes)

    def _add(self, step: int, epoch: int, lr: float, step_time: float, batch_size: int, loss: float,
             correct: float, probes: np.ndarray | None) -> None:
        sps = batch_size / step_time if step_time and step_time > 0 else math.nan
        self._rows.append((step, epoch, loss, correct / batch_size, lr, sps, step_time))
        sums = self._sums
        sums[0] += loss * batch_size
        sums[1] += correct
        sums[2] += batch_size
        self.last_loss = loss
        if probes is not None:
            self._probe_steps.append(step)
            self._probes.append(probes)
        elif math.isfinite(loss):
            return  # nothing to check: without probes only a non-finite loss can alert
        for alert in self.alerts.check(step, epoch, loss, probes):
            self.flush()
            self.emit(alert)

    def flush(self, force: bool = False) -> None:
        """Send buffered rows as one StepBatch. ``force`` waits for rows still on the device."""
        if force:
            self._collect(self.readback.pop_ready(force=True))
        self._last_emit = time.perf_counter()
        if not self._rows:
            return
        rows, probe_steps, probes = self._rows, self._probe_steps, self._probes
        self._rows, self._probe_steps, self._probes = [], [], []
        table = np.array(rows, dtype=np.float64)  # step, epoch, then STEP_SCALARS; exact below 2**53
        self.emit(StepBatch(
            steps=table[:, 0].astype(np.int64),
            epochs=table[:, 1].astype(np.int32),
            scalars=np.ascontiguousarray(table[:, 2:]),
            probe_steps=np.array(probe_steps, dtype=np.int64),
            probes=(
                np.stack(probes).astype(np.float32, copy=False)
                if probes
                else np.zeros((0, _N_PROBES, self.n_layers), dtype=np.float32)
            ),
        ))

    def take_epoch_means(self) -> tuple[float, float]:
        """Mean train loss and accuracy since the last call, weighted by batch size."""
        self.flush(force=True)
        loss_sum, correct, n = self._sums
        self._sums = [0.0, 0.0, 0]
        return (loss_sum / n, correct / n) if n else (math.nan, math.nan)
