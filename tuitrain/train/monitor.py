"""The monitor: turns steps of any PyTorch loop into tuitrain events for a list of sinks.

Two callers, one bookkeeping. The preset engine calls ``before_forward()`` before its forward and
``before_step()`` / ``after_step(loss, logits, targets, lr, epoch)`` around ``optimizer.step()``; a
user's own loop (``tuitrain.init``, the Lightning callback) calls ``before_step()`` /
``after_optimizer_step()`` from optimizer hooks and ``log(values, epoch)`` to commit a step, and the
Monitor arms its forward probes itself. It holds a list of probes
(:mod:`tuitrain.train.probe_protocol`, their bookkeeping in :mod:`tuitrain.train.probe_set`; none is
valid), buffers committed steps (:mod:`tuitrain.train.steprows`) and every ``monitor.emit_seconds``
sends one :class:`StepBatch` with every probe's block, then the alerts its rows raised.

Why it is written the way it is: a tiny model's step takes about two milliseconds, and inside a step
every library call costs several times what it costs in a tight loop (cold caches), so a step only
keeps references (loss, logits and targets, or the logged tensors) and lets the probes copy what they
need; reading values, counting correct predictions, the probes' arithmetic and the alert checks
happen at the flush, for all waiting steps at once (``bench/overhead.py``, docs/performance.md). On
CUDA nothing is read per step: the engine's loss and count come back through :class:`HostReadback`,
each probe has its own path, and a row waits at the flush until every probe's row for its step came
back, so a StepBatch carries the probe rows of its own steps.

Divergence (``monitor.on_nan = "stop"``): a non-finite logged loss is seen at the flush, with one
``isfinite`` reduction over the flushed block. So the run stops at the first flush that holds
``nan_patience + 1`` non-finite losses in a row, up to ``emit_seconds`` of steps after the first of
them on CPU (a few steps more on CUDA; data-parallel runs stop together at the epoch's end); those
steps are in the run file too, and :class:`Diverged` names the first bad step exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from tuitrain.config import MonitorConfig
from tuitrain.events import (
    GRAD,
    Alert,
    Event,
    LayerInfo,
    ModuleInfo,
    ProbeBlock,
    ProbeSpec,
    RunStarted,
    Sink,
    StepBatch,
)
from tuitrain.train.alerts import Diverged, DivergenceGuard, GradientAlerts
from tuitrain.train.probe_protocol import GradientProbe, Probe
from tuitrain.train.probe_set import ProbeSet, Slot
from tuitrain.train.probes import HostReadback
from tuitrain.train.steprows import (
    Columns,
    EngineRow,
    RowTable,
    UserRow,
    engine_table,
    kept_logits,
    user_table,
)

__all__ = ["Diverged", "DivergenceGuard", "GradientAlerts", "Monitor"]  # the alert rules live in .alerts

# CPU rows keep their logits until the flush; past this many elements (16 MB) the flush comes early.
_MAX_PENDING_ELEMS = 1 << 22
# Rows waiting for a late probe's rows are sent anyway past this many (a probe that never answers).
_MAX_HELD_ROWS = 4096
_NO_PROBES: list = []


class Monitor:
    """Per-step bookkeeping between a training loop and its sinks.

    ``probes`` may be empty (a loop that never called ``watch``); :meth:`add_probe` adds more until the
    run is announced. ``device`` is where the engine's loss and logits live (``None``: a user loop,
    whose logged tensors are read per device at the flush). ``reduce`` (data-parallel runs) turns this
    rank's (loss, correct count) into global ones, and ``world_size`` multiplies the batch size to
    match; see :meth:`Dist.reduce_step`. ``announce`` is called once with the scalar names known then,
    right before the first StepBatch (or at the first forced flush with nothing to send), and before
    any other event but a :class:`RunStarted`: the caller emits its RunStarted from it.
    """

    def __init__(
        self,
        sinks: list[Sink],
        cfg: MonitorConfig | None = None,
        *,
        probes: Sequence[Probe] = (),
        device: torch.device | None = None,
        reduce: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        world_size: int = 1,
        announce: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.cfg = cfg = cfg if cfg is not None else MonitorConfig()
        self.sinks = sinks
        self.alerts = GradientAlerts([], cfg)  # NaN losses alert without a gradient probe too
        self.divergence = DivergenceGuard(cfg.nan_patience) if cfg.on_nan == "stop" else None
        self.diverged = ""  # the stop message once the loss diverged (on_nan = "stop"); raised after a flush
        self.step = 0  # steps committed so far; the index of the open step
        self.announced = False
        self.readback = HostReadback(device or torch.device("cpu"))  # the engine's loss and count
        self._host = device is None or device.type == "cpu"  # the engine's values are host memory
        self._reduce = reduce
        self._world_size = world_size
        self._announce = announce
        self._probes = ProbeSet()  # the probes and which rows each owes (tuitrain.train.probe_set)
        self._armed: list[Slot] = _NO_PROBES  # probes whose before_step ran for the open step
        self._stepped = False  # the open step had its optimizer step (user loop)
        self._columns = Columns()  # the scalar names: STEP_SCALARS, then a user loop's keys
        self._rows: list = []  # EngineRow (engine) or UserRow (user loop), oldest first
        self._pending_elems = 0  # logits elements the CPU rows keep alive
        self._last_out = -1  # the last step sent
        self._alerts: list[Alert] = []  # found while resolving rows, sent after them
        self._sums = [0.0, 0.0, 0.0, 0.0]  # loss x w, w, acc x w, w: epoch means without another pass
        self._epoch = 0  # the epoch of the last committed step
        self._last_emit = time.perf_counter()
        self._last_step_t: float | None = None
        for probe in probes:
            self.add_probe(probe)

    @classmethod
    def for_model(
        cls,
        params: list[torch.nn.Parameter],
        layers: list[LayerInfo],
        sinks: list[Sink],
        cfg: MonitorConfig,
        device: torch.device,
        *,
        reduce: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        world_size: int = 1,
    ) -> Monitor:
        """The engine's monitor: the gradient probe on ``params`` every ``cfg.every`` steps."""
        probe = GradientProbe(params, layers, every=cfg.every)
        return cls(sinks, cfg, probes=[probe], device=device, reduce=reduce, world_size=world_size)

    # -- probes -----------------------------------------------------------------------------------
    def add_probe(
        self,
        probe: Probe,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        """Add ``probe`` (attached to ``model`` / ``optimizer`` first when either is given). Only before
        the run is announced: the run file's layout follows the probes it declares."""
        if self.announced:
            raise RuntimeError("probes must be added before the run starts (its first step is sent)")
        self._probes.add(probe, model, optimizer, self.step)  # a forward probe is armed for the open step
        if probe.spec.name == GRAD:
            self.alerts = GradientAlerts(list(probe.layers), self.cfg, every=probe.spec.every)  # type: ignore[attr-defined]

    @property
    def probes(self) -> list[Probe]:
        return [s.probe for s in self._probes.slots]

    @property
    def specs(self) -> list[ProbeSpec]:
        """What RunStarted.probes declares."""
        return self._probes.specs

    @property
    def modules(self) -> list[ModuleInfo]:
        """What RunStarted.modules declares: the activation probe's modules, or [] without one."""
        return self._probes.modules

    @property
    def gradient(self) -> GradientProbe | None:
        """The gradient probe, if there is one (its ``layers`` are RunStarted.layers)."""
        return self._probes.gradient

    @property
    def scalar_names(self) -> tuple[str, ...]:
        """STEP_SCALARS, then a user loop's keys in first-seen order."""
        return self._columns.names

    @property
    def stepped(self) -> bool:
        """The open step already had its optimizer step: the next before_step() commits it."""
        return self._stepped

    @property
    def epoch_sums(self) -> np.ndarray:
        """(loss x weight, weight, acc x weight, weight) since the last :meth:`take_epoch_means`, over
        the rows flushed so far; the engine's weight is the batch size, so acc x weight is the count
        of correct predictions."""
        return np.array(self._sums, dtype=np.float64)

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if not self.announced:
            if isinstance(event, RunStarted):
                self.announced = True
            else:
                self._announce_once()
        for sink in self.sinks:
            sink.emit(event)

    def _announce_once(self) -> None:
        if not self.announced:
            self.announced = True
            if self._announce is not None:
                self._announce(self._columns.names)

    # -- around the forward and optimizer.step() ----------------------------------------------------
    def before_forward(self) -> None:
        """The engine, right before the forward pass of every training step: the probes that measure
        the forward (the activation probe) arm their hooks if their ``every`` selects the open step.
        A user loop need not call it: the Monitor arms them at :meth:`add_probe`, after each optimizer
        step and at each commit, for the step whose forward comes next."""
        self._probes.arm_forward(self.step)

    def before_step(self) -> None:
        """Just before ``optimizer.step()``: the probes whose ``every`` selects the open step measure.
        A step that already had its optimizer step is committed first (a row of NaN scalars); a second
        call for the same step keeps the first one's measurement (one row per probe and step)."""
        if self._stepped:
            self._commit(UserRow(self.step, self._epoch, [], math.nan, 0, self._tick()))
        if self._armed:
            return
        self._armed = self._probes.before_step(self.step) or _NO_PROBES

    def after_optimizer_step(self) -> None:
        """Just after ``optimizer.step()`` of a user loop; the step stays open until :meth:`log`. The
        next forward is the next step's, logged or not: its forward probes are armed now."""
        self._probes_after(self.step)
        self._stepped = True
        self._probes.arm_forward(self.step + 1)

    def _probes_after(self, step: int) -> None:
        if self._armed:
            self._probes.after_step(self._armed, step)
            self._armed = _NO_PROBES

    def after_step(
        self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, lr: float, epoch: int
    ) -> None:
        """The engine: record one step, its mean ``loss``, the ``logits`` and class ``targets`` its
        accuracy is counted from, and the learning rate it used. The tensors must not be changed in
        place later: on CPU they are read at the next flush."""
        now = time.perf_counter()
        last = self._last_step_t
        step_time = (now - last) if last is not None else math.nan
        self._last_step_t = now
        step = self.step
        self.step = step + 1
        if self._armed:
            self._probes_after(step)
        batch_size = targets.numel() * self._world_size
        if self._host:
            # CPU: nothing is computed or read here. What the probes copied was all the step needed;
            # the arithmetic, the accuracy count and the reads happen at the flush.
            logits = logits.detach()
            if self._reduce is None:
                self._rows.append(
                    EngineRow(step, epoch, lr, step_time, batch_size, loss.detach(), (logits, targets))
                )
                self._pending_elems += logits.numel()
            else:
                loss_all, correct = self._reduce(loss, (logits.argmax(1) == targets).sum())
                self._rows.append(EngineRow(step, epoch, lr, step_time, batch_size, loss_all, correct))
            if now - self._last_emit >= self.cfg.emit_seconds or self._pending_elems > _MAX_PENDING_ELEMS:
                self.flush()
                self._raise_if_diverged()
            return
        correct = (logits.detach().argmax(1) == targets).sum()  # stays on the device: no sync
        if self._reduce is not None:
            loss, correct = self._reduce(loss, correct)
        vec = torch.cat([loss.detach().reshape(1).float(), correct.detach().reshape(1).float()])
        self.readback.push((step, epoch, lr, step_time, batch_size), vec)
        self._read_back(self.readback.pop_ready())
        if now - self._last_emit >= self.cfg.emit_seconds:
            self.flush()
            self._raise_if_diverged()

    # -- a user loop's step ------------------------------------------------------------------------
    def log(
        self,
        values: Mapping[str, torch.Tensor | float],
        epoch: int,
        *,
        lr: float = math.nan,
        n_samples: int = 0,
    ) -> None:
        """Commit the open step with ``values``: Python numbers or one-element tensors on any device,
        kept as references and read at the flush (do not change them in place). ``loss`` / ``acc`` /
        ``lr`` fill the standard columns (so does ``lr=``); other keys become columns of their own, in
        first-seen order. ``n_samples`` gives samples/s. Raises :class:`Diverged` after a flush that
        found the loss diverged (``monitor.on_nan = "stop"``)."""
        pairs = self._columns.pairs(values)
        self._commit(UserRow(self.step, int(epoch), pairs, float(lr), int(n_samples), self._tick()))
        if time.perf_counter() - self._last_emit >= self.cfg.emit_seconds:
            self.flush()
            self._raise_if_diverged()

    def _tick(self) -> float:
        now = time.perf_counter()
        last, self._last_step_t = self._last_step_t, now
        return (now - last) if last is not None else math.nan

    def _commit(self, row: UserRow) -> None:
        # before_step() without an optimizer step after it: still one row per armed probe (the probe
        # protocol's promise), its update ratio that of no update
        self._probes_after(row.step)
        self._rows.append(row)
        self._epoch = row.epoch
        self.step = row.step + 1
        self._stepped = False
        self._probes.arm_forward(self.step)

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
    def _read_back(self, ready: list[tuple[tuple, np.ndarray]]) -> None:
        """The engine's rows read back from the device (CUDA, MPS): plain floats."""
        for (step, epoch, lr, step_time, batch_size), vec in ready:
            self._rows.append(EngineRow(step, epoch, lr, step_time, batch_size, float(vec[0]), float(vec[1])))

    def _take_rows(self, force: bool) -> list:
        """The rows to send now: all of them, but those a probe has not yet returned rows for."""
        rows = self._rows
        frontier = self._probes.frontier()
        if force or frontier is None or not rows or len(rows) > _MAX_HELD_ROWS:
            self._rows = []
            return rows
        k = len(rows)
        while k and rows[k - 1].step >= frontier:
            k -= 1
        self._rows = rows[k:]
        return rows[:k]

    def flush(self, force: bool = False) -> None:
        """Send the committed rows as one StepBatch with every probe's block, then any alerts they
        raised. ``force`` waits for values still on the device and commits an open step that had its
        optimizer step."""
        if force and self._stepped:
            self._commit(UserRow(self.step, self._epoch, [], math.nan, 0, self._tick()))
        if not self._host:
            self._read_back(self.readback.pop_ready(force=force))
        self._probes.collect(force)  # first: a probe's outstanding steps decide which rows wait for it
        self._last_emit = time.perf_counter()
        rows = self._take_rows(force)
        table: RowTable | None = None
        if rows:
            n = len(self._columns.names)
            table = engine_table(rows, n) if isinstance(rows[0], EngineRow) else user_table(rows, n)
            self._last_out = int(table.steps[-1])
            self._pending_elems = kept_logits(self._rows)
        blocks = self._probes.split_held(self._last_out)
        if table is None and not any(len(b) for b in blocks.values()):
            if force:
                self._announce_once()
            self._send_alerts()
            return
        if table is not None:
            self._check(table, blocks.get(GRAD))
        self._announce_once()
        if table is None:
            table = RowTable.empty(len(self._columns.names))
        self.emit(StepBatch(table.steps, table.epochs, table.scalars, self._columns.names, blocks))
        self._send_alerts()

    def _check(self, table: RowTable, grad: ProbeBlock | None) -> None:
        """Divergence, alerts and the epoch sums of rows just resolved."""
        losses, has_loss = table.losses, table.has_loss
        if self.divergence is not None and not self.diverged:
            every = has_loss.all()
            self.diverged = self.divergence.observe(
                table.steps if every else table.steps[has_loss], losses if every else losses[has_loss]
            )
        steps = grad.steps if grad is not None else None
        values = grad.values if grad is not None else None
        self._alerts += self.alerts.check_block(table.steps, table.epochs, losses, has_loss, steps, values)
        s = self._sums
        for j, v in enumerate(table.sums):
            s[j] += v

    def _send_alerts(self) -> None:
        alerts, self._alerts = self._alerts, []
        for alert in alerts:
            self.emit(alert)

    def take_epoch_means(self) -> tuple[float, float]:
        """Mean train loss and accuracy since the last call (weighted by batch size, or by a user
        loop's ``n_samples``, else one per logged step). Raises :class:`Diverged` when the rows it
        flushed made the loss diverge (``on_nan = "stop"``)."""
        self.flush(force=True)
        self._raise_if_diverged(at_epoch_end=True)
        ln, lw, an, aw = self._sums
        self._sums = [0.0, 0.0, 0.0, 0.0]
        return (ln / lw if lw else math.nan, an / aw if aw else math.nan)
