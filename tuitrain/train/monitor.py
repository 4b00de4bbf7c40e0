"""The monitor: turns steps of any PyTorch loop into tuitrain events for a list of sinks.

It is deliberately independent of :mod:`tuitrain.train.engine`: the engine is one user of it, and a
user's own training script can be another (attach a Monitor to your model, call ``before_step`` /
``after_step`` around ``optimizer.step()``). It owns the probe, the device-to-host readback, the
buffering of step rows into :class:`StepBatch` events every ``monitor.emit_seconds``, and the
detection of NaN/Inf and of vanishing or exploding gradients.

Why it is written the way it is: ``after_step`` runs once per step, and for a tiny model a step takes
about two milliseconds, so every microsecond here is a visible fraction of it (``bench/overhead.py``).
Inside a step every library call costs several times what it costs in a tight loop (the step's forward
and backward have evicted the caches), so on CPU a step does as little as it can: it keeps references
to the loss, logits and targets and, on a probed step, copies the weights into a slot of the probe.
Reading the losses, counting correct predictions, the probes' arithmetic and the alert checks happen
at the flush, ``monitor.emit_seconds`` later, for all waiting steps at once (counting 40 steps' predictions
in one argmax costs what 8 cost one at a time inside their steps; measured in bench/overhead.py's
history, docs/performance.md). On CUDA nothing here reads the device:
the count stays a device tensor and :class:`HostReadback` hands values back a few steps late.

Divergence (``monitor.on_nan = "stop"``): a non-finite training loss is seen where every loss is seen,
at the flush, with one ``isfinite`` reduction over the flushed block; nothing is read per step for it.
So the run stops at the first flush that holds ``nan_patience + 1`` non-finite losses in a row, up to
``emit_seconds`` of steps after the first of them on CPU (a few steps more on CUDA, whose rows come
back late; data-parallel runs stop together at the epoch's end); those steps are in the run file too,
and :class:`Diverged` names the first bad step exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from tuitrain.config import MonitorConfig
from tuitrain.events import PROBE_NAMES, Alert, Event, LayerInfo, Sink, StepBatch
from tuitrain.train.alerts import Diverged, DivergenceGuard, GradientAlerts
from tuitrain.train.probes import HostReadback, LayerProbe

__all__ = ["Diverged", "DivergenceGuard", "GradientAlerts", "Monitor"]  # the alert rules live in .alerts

_N_PROBES = len(PROBE_NAMES)
# CPU rows keep their logits until the flush; past this many elements (16 MB) the flush comes early.
_MAX_PENDING_ELEMS = 1 << 22


class Monitor:
    """Per-step bookkeeping between a training loop and its sinks.

    ``reduce`` (data-parallel runs) turns this rank's (loss, correct count) into global ones, and
    ``world_size`` multiplies the batch size to match; see :meth:`Dist.reduce_step`.
    """

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        layers: list[LayerInfo],
        sinks: list[Sink],
        cfg: MonitorConfig,
        device: torch.device,
        *,
        reduce: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.sinks = sinks
        self.probe = LayerProbe(params)
        self.readback = HostReadback(device)
        self.alerts = GradientAlerts(layers, cfg)
        self.divergence = DivergenceGuard(cfg.nan_patience) if cfg.on_nan == "stop" else None
        self.diverged = ""  # the stop message once the loss diverged (on_nan = "stop"); raised by after_step
        self.n_layers = len(layers)
        self.step = 0  # steps taken so far; the next step's index
        self._reduce = reduce
        self._world_size = world_size
        self._host = device.type == "cpu"  # values are host memory: no readback queue needed
        # Rows since the last flush. On CPU a row keeps the step's loss tensor and either its (logits,
        # targets) or, data-parallel, its reduced correct count, all read at the flush; elsewhere rows
        # hold plain floats. Probe results for `_probe_steps` come from the probe (CPU) or `_probes`.
        self._rows: list[tuple] = []
        self._pending_elems = 0  # logits elements the CPU rows keep alive
        self._probe_steps: list[int] = []
        self._probes: list[np.ndarray] = []
        self._alerts: list[Alert] = []  # found while adding rows, sent after them
        self._sums = [0.0, 0.0, 0]  # loss*n, correct, n: epoch means without another device pass
        self._last_emit = time.perf_counter()
        self._last_step_t: float | None = None

    @property
    def epoch_sums(self) -> np.ndarray:
        """Summed loss*n, correct and n since the last :meth:`take_epoch_means` (rows flushed so far)."""
        return np.array(self._sums, dtype=np.float64)

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.emit(event)

    # -- the two calls around optimizer.step() ----------------------------------------------------
    def before_step(self) -> None:
        if self.step % self.cfg.every == 0:
            self.probe.before_step()

    def after_step(
        self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, lr: float, epoch: int
    ) -> None:
        """Record one step: its mean ``loss``, the ``logits`` and class ``targets`` its accuracy is
        counted from, and the learning rate it used. The tensors must not be changed in place later:
        on CPU they are read at the next flush."""
        now = time.perf_counter()
        last = self._last_step_t
        step_time = (now - last) if last is not None else math.nan
        self._last_step_t = now
        step = self.step
        self.step = step + 1
        probed = step % self.cfg.every == 0
        batch_size = targets.numel() * self._world_size
        if self._host:
            # CPU: nothing is computed or read here. Copies of the probed weights were all the step
            # needed; the arithmetic, the accuracy count and the reads happen at the flush, ten times a
            # second, for every waiting step at once.
            if probed:
                self.probe.after_step_deferred()
                self._probe_steps.append(step)
            logits = logits.detach()
            if self._reduce is None:
                self._rows.append((step, epoch, lr, step_time, batch_size, loss.detach(), (logits, targets)))
                self._pending_elems += logits.numel()
            else:
                loss_all, correct = self._reduce(loss, (logits.argmax(1) == targets).sum())
                self._rows.append((step, epoch, lr, step_time, batch_size, loss_all, correct))
            if now - self._last_emit >= self.cfg.emit_seconds or self._pending_elems > _MAX_PENDING_ELEMS:
                self.flush()
                self._raise_if_diverged()
            return
        correct = (logits.detach().argmax(1) == targets).sum()  # stays on the device: no sync
        if self._reduce is not None:
            loss, correct = self._reduce(loss, correct)
        parts = [loss.detach().reshape(1).float(), correct.detach().reshape(1).float()]
        if probed:
            parts.append(self.probe.after_step().reshape(-1))
        self.readback.push((step, epoch, lr, step_time, batch_size, probed), torch.cat(parts))
        self._collect(self.readback.pop_ready())
        if now - self._last_emit >= self.cfg.emit_seconds:
            self.flush()
            self._raise_if_diverged()

    def _raise_if_diverged(self, at_epoch_end: bool = False) -> None:
        # Data-parallel, every rank sees the same reduced losses but flushes on its own clock: the ranks
        # stop together at the epoch's end, the one step they all flush at, or some would wait forever
        # in an all-reduce the others left.
        if self.diverged and (at_epoch_end or self._reduce is None):
            raise Diverged(self.diverged)

    def pause_clock(self) -> None:
        """Forget the last step time, so a pause or an evaluation does not count as a slow step."""
        self._last_step_t = None

    # -- host side --------------------------------------------------------------------------------
    def _collect(self, ready: list[tuple[tuple, np.ndarray]]) -> None:
        """Rows read back from the device (CUDA, MPS): plain floats, checked for alerts at once."""
        for (step, epoch, lr, step_time, batch_size, probed), vec in ready:
            probes = vec[2:].reshape(_N_PROBES, self.n_layers) if probed else None
            loss, correct = float(vec[0]), float(vec[1])
            self._rows.append((step, epoch, lr, step_time, batch_size, loss, correct))
            if probes is not None:
                self._probe_steps.append(step)
                self._probes.append(probes)
            if probes is not None or not math.isfinite(loss):  # without probes only a bad loss alerts
                self._alerts += self.alerts.check(step, epoch, loss, probes)

    def _resolve_host_rows(self, rows: list[tuple]) -> tuple[list[tuple], np.ndarray]:
        """CPU rows with their tensors read: the accuracy counts in one argmax over the stacked logits
        (per step when batch shapes differ), the probes in one pass. Then the alert checks, in step
        order, now that the values are known: one test for the whole block in the healthy case."""
        losses = [r[5].item() for r in rows]
        counted = [r[6] for r in rows]
        if isinstance(counted[0], tuple):  # single process: (logits, targets) of every step
            counts = _count_correct([c[0] for c in counted], [c[1] for c in counted])
        else:  # data-parallel: reduced counts
            counts = [c.item() for c in counted]
        probes = self.probe.collect()
        assert len(probes) == len(self._probe_steps), "probed steps and probe results out of step"
        out = [
            (r[0], r[1], loss, count, r[2], r[3], r[4])
            for r, loss, count in zip(rows, losses, counts, strict=True)
        ]
        if not self.alerts.healthy(losses, probes):
            by_step = dict(zip(self._probe_steps, range(len(probes)), strict=True))
            for step, epoch, loss, *_ in out:
                k = by_step.get(step)
                if k is not None or not math.isfinite(loss):
                    self._alerts += self.alerts.check(step, epoch, loss, probes[k] if k is not None else None)
        return out, probes

    def flush(self, force: bool = False) -> None:
        """Send buffered rows as one StepBatch, then any alerts they raised. ``force`` waits for rows
        still on the device."""
        if force and not self._host:
            self._collect(self.readback.pop_ready(force=True))
        self._last_emit = time.perf_counter()
        if not self._rows:
            self._send_alerts()
            return
        rows, probe_steps = self._rows, self._probe_steps
        if self._host:
            resolved, probes = self._resolve_host_rows(rows)
            self._pending_elems = 0
        else:
            resolved = [(r[0], r[1], r[5], r[6], r[2], r[3], r[4]) for r in rows]
            probes = (
                np.stack(self._probes)
                if self._probes
                else np.zeros((0, _N_PROBES, self.n_layers), dtype=np.float32)
            )
        self._rows, self._probe_steps, self._probes = [], [], []
        # step, epoch, loss, correct, lr, step time, batch size; exact in float64 below 2**53
        table = np.array(resolved, dtype=np.float64)
        loss, correct, lr, step_time, batch = table[:, 2], table[:, 3], table[:, 4], table[:, 5], table[:, 6]
        if self.divergence is not None and not self.diverged:
            self.diverged = self.divergence.observe(table[:, 0], loss)
        sums = self._sums
        sums[0] += float(np.dot(loss, batch))
        sums[1] += float(correct.sum())
        sums[2] += int(batch.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            sps = np.where(step_time > 0, batch / step_time, np.nan)
        self.emit(
            StepBatch.with_grad(
                steps=table[:, 0].astype(np.int64),
                epochs=table[:, 1].astype(np.int32),
                scalars=np.column_stack([loss, correct / batch, lr, sps, step_time]),  # STEP_SCALARS order
                probe_steps=np.array(probe_steps, dtype=np.int64),
                probes=probes.astype(np.float32, copy=False),
            )
        )
        self._send_alerts()

    def _send_alerts(self) -> None:
        alerts, self._alerts = self._alerts, []
        for alert in alerts:
            self.emit(alert)

    def take_epoch_means(self) -> tuple[float, float]:
        """Mean train loss and accuracy since the last call, weighted by batch size. Raises
        :class:`Diverged` when the rows it flushed made the loss diverge (``on_nan = "stop"``)."""
        self.flush(force=True)
        self._raise_if_diverged(at_epoch_end=True)
        loss_sum, correct, n = self._sums
        self._sums = [0.0, 0.0, 0]
        return (loss_sum / n, correct / n) if n else (math.nan, math.nan)


def _count_correct(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> list[int]:
    """Correct predictions per step (argmax, the first of equal maxima, as ``Tensor.argmax``).

    All steps at once: one concatenation each of logits and targets, one numpy argmax over the rows
    (several times faster than torch's on CPU for the few classes of small models) and one segment
    sum per step, whatever the batch sizes."""
    if logits[0].dtype != torch.float32 or logits[0].device.type != "cpu" or logits[0].dim() != 2:
        return [int((t.argmax(-1) == y).sum()) for t, y in zip(logits, targets, strict=True)]
    hit = torch.cat(logits).numpy().argmax(1) == torch.cat(targets).numpy()
    starts = np.cumsum([0] + [len(t) for t in targets[:-1]])
    return np.add.reduceat(hit, starts).tolist()
