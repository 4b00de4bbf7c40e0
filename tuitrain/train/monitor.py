"""The monitor: turns steps of any PyTorch loop into tuitrain events for a list of sinks.

It is deliberately independent of :mod:`tuitrain.train.engine`: the engine is one user of it, and a
user's own training script can be another (attach a Monitor to your model, call ``before_step`` /
``after_step`` around ``optimizer.step()``). It owns the probe, the device-to-host readback, the
buffering of step rows into :class:`StepBatch` events every ``monitor.emit_seconds``, and the
detection of NaN/Inf and of vanishing or exploding gradients.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from tuitrain.config import MonitorConfig
from tuitrain.events import PROBE_NAMES, STEP_SCALARS, Alert, Event, LayerInfo, Sink, StepBatch
from tuitrain.train.probes import HostReadback, LayerProbe

_N_SCALARS = len(STEP_SCALARS)
_N_PROBES = len(PROBE_NAMES)


class GradientAlerts:
    """Says once, in words, what a person would otherwise have to spot in a heatmap."""

    def __init__(self, layers: list[LayerInfo], cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.names = [layer.name for layer in layers]
        self.weights = np.array([layer.kind == "weight" for layer in layers], dtype=bool)
        if not self.weights.any():
            self.weights[:] = True
        self.streak = np.zeros(len(layers), dtype=np.int64)
        self.vanish_reported = 0
        self.explode_armed = True
        self.nan_epoch = -1

    def check(self, step: int, epoch: int, loss: float, probes: np.ndarray | None) -> list[Alert]:
        alerts: list[Alert] = []
        bad_probe = probes is not None and not np.isfinite(probes).all()
        if (not math.isfinite(loss) or bad_probe) and self.nan_epoch != epoch:
            self.nan_epoch = epoch  # at most one NaN alert per epoch: the log stays readable
            where = ""
            if bad_probe:
                cols = np.nonzero(~np.isfinite(probes).all(axis=0))[0]
                where = f"; non-finite statistics in {len(cols)} tensors, first {self.names[cols[0]]}"
            alerts.append(Alert(step, "error", "nan", f"NaN/Inf at step {step}: loss = {loss}{where}"))
        if probes is None:
            return alerts
        every = self.cfg.every
        mean_abs = probes[PROBE_NAMES.index("grad_mean_abs")]
        below = (mean_abs < self.cfg.vanishing) & self.weights
        self.streak = np.where(below, self.streak + every, 0)
        stuck = (self.streak >= self.cfg.alert_steps) & self.weights
        n_stuck, n_weights = int(stuck.sum()), int(self.weights.sum())
        if n_stuck and n_stuck >= max(1, self.vanish_reported + max(1, n_weights // 4)):
            first = self.names[int(np.argmax(stuck))]
            alerts.append(Alert(
                step, "warning", "vanishing",
                f"vanishing gradients: {n_stuck} of {n_weights} weight layers have mean |grad| below "
                f"{self.cfg.vanishing:g} for {self.cfg.alert_steps} steps (first: {first})",
            ))
            self.vanish_reported = n_stuck
        elif self.vanish_reported and n_stuck == 0 and not below.any():
            alerts.append(Alert(step, "info", "recovered", "gradients recovered: no weight layer is vanishing now"))
            self.vanish_reported = 0
        norms = probes[PROBE_NAMES.index("grad_norm")]
        over = np.isfinite(norms) & (norms > self.cfg.exploding)
        if over.any() and self.explode_armed:
            worst = int(np.argmax(np.where(over, norms, -np.inf)))
            alerts.append(Alert(
                step, "warning", "exploding",
                f"exploding gradients: {int(over.sum())} tensors have grad norm above {self.cfg.exploding:g} "
                f"(largest {norms[worst]:.3g} in {self.names[worst]})",
            ))
            self.explode_armed = False
        elif not over.any():
            self.explode_armed = True
        return alerts


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
        self._rows: list[tuple[int, int, np.ndarray]] = []  # (step, epoch, scalars)
        self._probe_rows: list[tuple[int, np.ndarray]] = []
        self._last_emit = time.perf_counter()
        self._last_step_t: float | None = None
        self.epoch_sums = np.zeros(3)  # loss*n, correct, n: epoch means without another device pass
        self.last_loss = math.nan

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def probing(self) -> bool:
        return self.step % self.cfg.every == 0

    # -- the two calls around optimizer.step() ----------------------------------------------------
    def before_step(self) -> None:
        if self.probing():
            self.probe.before_step()

    def after_step(self, loss: torch.Tensor, correct: torch.Tensor, batch_size: int, lr: float, epoch: int) -> None:
        now = time.perf_counter()
        step_time = (now - self._last_step_t) if self._last_step_t is not None else math.nan
        self._last_step_t = now
        parts = [loss.detach().float().reshape(1), correct.detach().float().reshape(1)]
        probed = self.probing()
        if probed:
            parts.append(self.probe.after_step().reshape(-1))
        self.readback.push((self.step, epoch, lr, step_time, batch_size, probed), torch.cat(parts))
        self.step += 1
        self._collect(self.readback.pop_ready())
        if now - self._last_emit >= self.cfg.emit_seconds:
            self.flush()

    def pause_clock(self) -> None:
        """Forget the last step time, so a pause or an evaluation does not count as a slow step."""
        self._last_step_t = None

    # -- host side --------------------------------------------------------------------------------
    def _collect(self, ready: list[tuple[tuple, np.ndarray]]) -> None:
        for (step, epoch, lr, step_time, batch_size, probed), vec in ready:
            loss, correct = float(vec[0]), float(vec[1])
            acc = correct / batch_size
            sps = batch_size / step_time if step_time and step_time > 0 else math.nan
            self._rows.append((step, epoch, np.array([loss, acc, lr, sps, step_time])))
            self.epoch_sums += (loss * batch_size, correct, batch_size)
            self.last_loss = loss
            probes = None
            if probed:
                probes = vec[2:].reshape(_N_PROBES, self.n_layers)
                self._probe_rows.append((step, probes))
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
        rows, probe_rows = self._rows, self._probe_rows
        self._rows, self._probe_rows = [], []
        batch = StepBatch(
            steps=np.array([r[0] for r in rows], dtype=np.int64),
            epochs=np.array([r[1] for r in rows], dtype=np.int32),
            scalars=np.stack([r[2] for r in rows]).astype(np.float64),
            probe_steps=np.array([r[0] for r in probe_rows], dtype=np.int64),
            probes=(
                np.stack([r[1] for r in probe_rows]).astype(np.float32)
                if probe_rows
                else np.zeros((0, _N_PROBES, self.n_layers), dtype=np.float32)
            ),
        )
        self.emit(batch)

    def take_epoch_means(self) -> tuple[float, float]:
        """Mean train loss and accuracy since the last call, weighted by batch size."""
        self.flush(force=True)
        loss_sum, correct, n = self.epoch_sums
        self.epoch_sums = np.zeros(3)
        return (loss_sum / n, correct / n) if n else (math.nan, math.nan)
