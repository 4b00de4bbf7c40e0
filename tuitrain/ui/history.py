"""What the dashboard remembers of a run, and the lookups the widgets read at redraw time.

No textual here (and no torch): the app's message handler calls :meth:`History.extend` with the events a
source delivered, and the widgets read arrays back at redraw time. Memory is bounded whatever the run:
per-step scalars live in a :class:`~tuitrain.ui.buffers.DecimatingSeries`, the latest probe rows in a
:class:`~tuitrain.ui.buffers.Ring` and the whole run's probes as log10 time buckets in a
:class:`~tuitrain.ui.buffers.LogBuckets`; epochs are a small table; the event log keeps its last
``event_cap`` entries.

A history fed from a run file (:class:`tuitrain.ui.replay.file_source.FileSource`) holds a decimated
overview of a long run and a :class:`Backing` that answers exact per-step lookups from the file: the
time cursor asks :meth:`History.probes_at` / :meth:`History.scalars_at`, which use the backing when there
is one and the in-memory buffers otherwise.

The buffers, the downsampling maths, gradient health and the view state live in their own modules
(``buffers``, ``downsample``, ``fmt``, ``health``, ``view_state``); they are re-exported here for older
imports.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np

from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    Event,
    Finding,
    LayerInfo,
    RunFinished,
    RunStarted,
    Snapshot,
    StatusChanged,
    StepBatch,
    TestResult,
)
from tuitrain.ui.buffers import DecimatingSeries, LogBuckets, Ring
from tuitrain.ui.downsample import bucket_mean, ema, log_ticks, minmax_downsample, robust_range
from tuitrain.ui.fmt import fmt_duration, fmt_si
from tuitrain.ui.health import Thresholds
from tuitrain.ui.history_lookups import HistoryLookups
from tuitrain.ui.signal_history import SignalHistory
from tuitrain.ui.snapshot_history import SnapshotHistory
from tuitrain.ui.view_state import ViewState
from tuitrain.view.divergence import DivergenceTracker
from tuitrain.view.finding_text import log_line, log_step
from tuitrain.view.findings import FindingsStore
from tuitrain.view.messages import epoch_message, start_message, test_message

__all__ = [  # with the re-exports of the modules split off
    "Backing",
    "DecimatingSeries",
    "EpochTable",
    "History",
    "LogBuckets",
    "LogEntry",
    "Ring",
    "Thresholds",
    "ViewState",
    "bucket_mean",
    "ema",
    "fmt_duration",
    "fmt_si",
    "log_ticks",
    "minmax_downsample",
    "robust_range",
]

# An exact zero (a frozen tensor, a bias before a norm layer) is -inf in the log10 buckets: a bucket
# holding one reads as zero, and every widget draws -inf as zero (never as a tiny number such as the
# 1e-30 floor this used to be, nor as a mid-height sparkline). NaN stays "non-finite".
ZERO_LOG = -np.inf
FINISHED = ("completed", "stopped", "failed")
INCOMPLETE = "incomplete"  # UI-only status: a run file whose writer died without finishing it


class Backing(Protocol):
    """Exact per-step lookups from where the whole run lives (a run file); thread-safe, cheap per call."""

    def probes_at(self, step: int) -> tuple[int, np.ndarray] | None:
        """(probed step, (len(PROBE_NAMES), L) float32) of the last probe at or before ``step``."""

    def scalars_at(self, step: int) -> dict[str, float] | None:
        """Every /steps column of the last step at or before ``step``."""


@dataclass
class LogEntry:
    step: int
    level: str  # "info" | "success" | "warning" | "error"
    kind: str
    message: str
    time: float


@dataclass
class EpochTable:
    rows: list[EpochEnd] = field(default_factory=list)
    keys: dict[str, None] = field(default_factory=dict)  # a user loop's own epoch metrics, first-seen order

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> np.ndarray:
        """A standard EpochEnd field, or one of the loop's own epoch metrics (NaN where an epoch has none)."""
        if name in self.keys and name not in _EPOCH_FIELDS:
            return np.array([r.metrics.get(name, np.nan) for r in self.rows], dtype=np.float64)
        return np.array([getattr(r, name) for r in self.rows], dtype=np.float64)


_EPOCH_FIELDS = frozenset(f.name for f in fields(EpochEnd))


# The columns every history starts with; a run's own scalars (RunStarted.step_scalars and any new
# names a StepBatch carries, in first-seen order) follow: History.columns is the whole list.
SCALAR_COLUMNS = ("step", "epoch", *STEP_SCALARS)


class History(HistoryLookups):
    """Everything the dashboard knows about one run. Fed by :meth:`extend`, read by the widgets."""

    def __init__(
        self,
        *,
        step_cap: int = 1 << 18,
        probe_rows: int = 20_000,
        probe_bytes: int = 32 << 20,
        long_cap: int = 2048,
        event_cap: int = 2000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock or time.time
        self.step_cap = step_cap
        self.probe_rows = probe_rows
        self.probe_bytes = probe_bytes
        self.long_cap = long_cap
        self.run: RunStarted | None = None
        self.layers: list[LayerInfo] = []
        self.thresholds = Thresholds.none()
        self.status = "starting"
        self.pending = ""  # "pausing…" etc., shown until the matching StatusChanged arrives
        self.finished: RunFinished | None = None
        # The first step whose training loss was not finite (NaN/Inf), None while all were: the chart
        # marks it, the header and the log say so. Exact live; from a run file, the first such row of
        # the overview (strided for long runs). A user's loop may log its loss sparsely: see
        # tuitrain.view.divergence for when a NaN there counts.
        self.nan_step: int | None = None
        self._divergence = DivergenceTracker(dense=True)
        # The per-step scalars this run has (the batch's scalar_names / the file's step_scalars are
        # the one owner of the list): STEP_SCALARS, then the run's own keys in first-seen order.
        self.scalar_names: tuple[str, ...] = STEP_SCALARS
        self._col: dict[str, int] = {c: i for i, c in enumerate(SCALAR_COLUMNS)}
        self.process_died = False
        self.test: TestResult | None = None
        self.epochs = EpochTable()
        self.best_val_acc: float | None = None
        self.best_val_loss: float | None = None
        self.best_epoch: int | None = None
        self.scalars = DecimatingSeries(len(SCALAR_COLUMNS), cap=step_cap)
        self.probes: Ring | None = None
        self.long: LogBuckets | None = None
        self.signal = SignalHistory(long_cap=long_cap)  # the activation probe's rows (the Signal view)
        self.snapshots = SnapshotHistory()  # the run's snapshots (the Images screen)
        self.findings = FindingsStore()  # the diagnosis rules' findings (panel, header, log, chart marks)
        self.log: deque[LogEntry] = deque(maxlen=event_cap)
        self.log_total = 0  # entries ever logged (widgets key their caches on it)
        self.steps_done = 0
        self.epoch = 0
        self.samples_per_s = float("nan")
        self.dropped_steps = 0
        self.events_seen = 0
        self.steps_seen = 0
        self.version = 0  # bumped by every change; widgets key their caches on it
        self.backing: Backing | None = None  # exact lookups from the run file, when replaying one
        self.row_stride = 1.0  # steps per stored row when a file source delivers a decimated overview
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._ema_cache: dict[
            tuple[str, float], tuple[int, int, np.ndarray, tuple[float, int], np.ndarray]
        ] = {}

    # -- feeding ---------------------------------------------------------------------------------

    def extend(self, events: Iterable[Event], dropped_steps: int = 0) -> None:
        for ev in events:
            self.events_seen += 1
            if isinstance(ev, StepBatch):
                self._on_steps(ev)
            elif isinstance(ev, RunStarted):
                self._on_started(ev)
            elif isinstance(ev, EpochEnd):
                self._on_epoch(ev)
            elif isinstance(ev, Alert):
                self._on_alert(ev)
            elif isinstance(ev, Finding):
                self.findings.add(ev)
                level, text = log_line(ev)
                self.add_log(log_step(ev), level, "finding", text)
            elif isinstance(ev, Snapshot):
                self.snapshots.feed(ev)
            elif isinstance(ev, StatusChanged):
                self._on_status(ev)
            elif isinstance(ev, RunFinished):
                self._on_finished(ev)
            elif isinstance(ev, TestResult):
                self.test = ev
                preset = self.run is None or self.run.source == "preset"
                level, text = test_message(ev, preset)
                self.add_log(self.steps_done, level, "test", text, ev.time)
        if dropped_steps:
            self.dropped_steps += dropped_steps
            msg = f"display dropped {self.dropped_steps:,} steps (queue full); the run file has them all"
            if self.log and self.log[-1].kind == "dropped":
                self.log[-1].message = msg
                self.log_total += 1
            else:
                self.add_log(self.steps_done, "warning", "dropped", msg, self.clock())
        self.version += 1

    def add_log(self, step: int, level: str, kind: str, message: str, when: float | None = None) -> None:
        self.log.append(LogEntry(int(step), level, kind, message, self.clock() if when is None else when))
        self.log_total += 1
        self.version += 1

    def _declare(self, names: tuple[str, ...]) -> None:
        """Add the scalar names this history does not hold yet (a column of NaN for the rows before)."""
        new = [n for n in names if n not in self._col]
        if not new:
            return
        self.scalars.add_columns(len(new))
        self.scalar_names = (*self.scalar_names, *new)
        self._col = {c: i for i, c in enumerate(self.columns)}
        self._ema_cache.clear()

    def _on_started(self, ev: RunStarted) -> None:
        self.run = ev
        self._declare(tuple(ev.step_scalars))
        if ev.source != "preset" and not self.steps_seen:
            self._divergence = DivergenceTracker(dense=False)  # a user's loop may log sparsely
        self.layers = list(ev.layers)
        self.thresholds = Thresholds.of(ev)
        self.findings.configure(ev)
        L = len(self.layers)
        row_bytes = max(1, len(PROBE_NAMES) * L * 4)
        rows = max(256, min(self.probe_rows, self.probe_bytes // row_bytes))
        self.probes = Ring(rows, (len(PROBE_NAMES), L))
        self.long = LogBuckets(self.long_cap, (len(PROBE_NAMES), L))
        self.signal.start(ev)
        self.snapshots.start(ev)
        if self.status == "starting":
            self.status = "running"
        self.add_log(0, "info", "start", start_message(ev), ev.started_at)

    def _on_steps(self, ev: StepBatch) -> None:
        n = len(ev)
        if n:
            names = tuple(ev.scalar_names)
            if names != self.scalar_names:
                self._declare(names)
            rows = np.empty((n, len(self._col)), dtype=np.float64)
            rows[:, 0] = ev.steps
            rows[:, 1] = ev.epochs
            if names == self.scalar_names:
                rows[:, 2:] = ev.scalars
            else:  # a batch with fewer (or reordered) columns than the run: NaN where it has none
                rows[:, 2:] = np.nan
                for j, name in enumerate(names):
                    rows[:, self._col[name]] = ev.scalars[:, j]
            self.scalars.append(rows)
            self.nan_step = self._divergence.feed(ev.steps, ev.scalar("loss"))
            self.steps_done = max(self.steps_done, int(ev.steps[-1]) + 1)
            self.epoch = int(ev.epochs[-1])
            sps = ev.scalar("samples_per_s")
            fin = sps[np.isfinite(sps)]
            if fin.size:
                self.samples_per_s = float(fin[-min(fin.size, 16) :].mean())
            self._rate.append((ev.time, self.steps_done))
            self.steps_seen += n
            if self.status == "starting":
                self.status = "running"
        m = ev.probe_steps.shape[0] if ev.probe_steps is not None else 0
        if m and self.probes is not None and self.layers and ev.probes.shape[-1] == len(self.layers):
            probes = np.asarray(ev.probes, dtype=np.float32)
            self.probes.append(ev.probe_steps, probes)
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.log10(np.abs(probes))  # 0 -> -inf (ZERO_LOG)
            logs[~np.isfinite(probes)] = np.nan
            assert self.long is not None
            self.long.append(ev.probe_steps, logs)
        self.signal.feed(ev)

    def _on_epoch(self, ev: EpochEnd) -> None:
        self.epochs.rows.append(ev)
        self.epochs.keys.update(dict.fromkeys(ev.metrics))
        total = self.run.epochs if self.run else 0
        preset = self.run is None or self.run.source == "preset"
        level, text = epoch_message(ev, total, preset)
        self.add_log(ev.step, level, "epoch", text, ev.time)
        if math.isfinite(ev.val_loss) and (self.best_val_loss is None or ev.val_loss < self.best_val_loss):
            self.best_val_loss = ev.val_loss
        if math.isfinite(ev.val_acc) and (self.best_val_acc is None or ev.val_acc > self.best_val_acc):
            first = self.best_val_acc is None
            self.best_val_acc = ev.val_acc
            self.best_epoch = ev.epoch
            if not first:
                self.add_log(
                    ev.step,
                    "success",
                    "best",
                    f"new best val acc {ev.val_acc * 100:.2f}% (epoch {ev.epoch + 1})",
                    ev.time,
                )

    def _on_alert(self, ev: Alert) -> None:
        if ev.kind == "best" and self.log and self.log[-1].kind == "best" and self.log[-1].step == ev.step:
            return  # already said it from the EpochEnd
        level = ev.level if ev.level in ("info", "warning", "error") else "info"
        if ev.kind in ("best", "checkpoint") and level == "info":
            level = "success"
        self.add_log(ev.step, level, ev.kind, ev.message, ev.time)

    def _on_status(self, ev: StatusChanged) -> None:
        if self.finished is not None:
            return
        if ev.status != self.status:
            self.add_log(  # a status, never a warning: pausing is something the user asked for
                ev.step,
                "info",
                "status",
                f"status: {ev.status} at step {ev.step:,}",
                ev.time,
            )
        self.status = ev.status
        self.pending = ""

    def _on_finished(self, ev: RunFinished) -> None:
        self.finished = ev
        self.status = ev.status if ev.status in (*FINISHED, INCOMPLETE) else "failed"
        self.pending = ""
        if self.status == INCOMPLETE:
            self.add_log(ev.step, "error", "incomplete", f"run incomplete: {ev.error}", ev.time)
        elif self.status == "failed":
            text = f"run failed at step {ev.step:,}: {ev.error or 'no error message'}"
            self.add_log(ev.step, "error", "finished", text, ev.time)
        else:
            extra = f"; checkpoint {ev.checkpoint}" if ev.checkpoint else ""
            level = "success"
            if self.nan_step is not None:  # on_nan = "continue": it ran to the end, but diverged
                level, extra = "warning", f"; the loss was not finite from step {self.nan_step:,}{extra}"
            self.add_log(ev.step, level, "finished", f"run {self.status} at step {ev.step:,}{extra}", ev.time)

    def mark_process_died(self, detail: str = "") -> None:
        """The training process is gone and never said RunFinished: the run failed."""
        if self.finished is not None:
            return
        self.process_died = True
        msg = "the training process exited without finishing the run" + (f" ({detail})" if detail else "")
        self.finished = RunFinished(status="failed", step=self.steps_done, error=msg, time=self.clock())
        self.status = "failed"
        self.pending = ""
        self.add_log(self.steps_done, "error", "died", msg)

    def set_pending(self, note: str) -> None:
        self.pending = note
        self.version += 1
