"""A run file as a dashboard source: replay a finished run, follow one that is still being written.

The widgets never see the whole file. A :class:`FileSource` delivers, as ordinary events:

* the run-level events (RunStarted, EpochEnd, alerts and status changes, the diagnosis' findings as
  they were stored (each opening and closing row, at the step it was seen), TestResult, RunFinished);
* an overview of the steps: every ``step_stride``-th row of /steps (at most ``overview_rows`` rows,
  the same uniform thinning the live history does by itself on long runs) plus the latest row;
* an overview of each declared probe: every ``probe_stride``-th row (at most ``probe_rows`` rows; a
  strided read touches one chunk per row, see :mod:`tuitrain.runfile.schema`) plus the latest row;
  the steps carry the file's declared columns (a user loop's own keys too);
* the stored snapshots (issue 12) as Snapshot events: per "epoch" spec one event per row (m = 1, that
  row's epoch and step), per "start"/"end" spec one event with all its rows (sent again, whole, if a
  live file gains rows later: the latest event of such a spec is the whole snapshot); among the other
  run-level events by step, a snapshot at step s after the EpochEnd of step s.

Everything is read through :class:`~tuitrain.runfile.RunFile`'s public API.

and it is the history's :class:`~tuitrain.ui.history.Backing`: the time cursor asks it for the exact
probe row or step row at a step, which it reads from the file (one chunk per probe, ~0.3 ms).

With ``follow`` it polls the file (HDF5 SWMR refresh) every ``poll_seconds`` and delivers the rows
appended since, thinned with the same strides, until the run's "finished" row appears or the writing
process is gone (then the run is reported ``incomplete``). A file whose writer was killed before a
replay starts is reported ``incomplete`` too. All file access holds one lock: the reader thread and
the UI thread (cursor lookups) share the handle, and a follow may reopen it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from tuitrain.events import (
    GRAD,
    Alert,
    Event,
    ProbeBlock,
    RunFinished,
    StatusChanged,
    StepBatch,
)
from tuitrain.runfile import RunFile, RunFileError, open_run
from tuitrain.runfile import schema as S
from tuitrain.runfile.replay import epoch_events, test_event
from tuitrain.runfile.snapshots import events as snapshot_events
from tuitrain.ui.history import INCOMPLETE
from tuitrain.ui.source import EventsArrived, MessageTarget, Source, SourceEnded

OVERVIEW_ROWS = 1 << 16  # /steps rows the history gets at most (the chart has ~200 columns)
PROBE_ROWS = 512  # /probes rows it gets at most (the heatmap has ~150 columns)
CONTIGUOUS_ROWS = 1 << 22  # step columns up to this many rows are read whole, then thinned in memory


def stride_for(rows: int, cap: int) -> int:
    return max(1, -(-rows // max(1, cap)))


def thinned(a: int, b: int, stride: int) -> tuple[slice, int | None]:
    """Rows of ``[a, b)`` kept at ``stride``: a strided slice on the global grid (row % stride == 0),
    and the last row ``b - 1`` when it is off the grid (None otherwise), so the latest is never lost."""
    start = a + (-a) % stride
    extra = b - 1 if b > a and (b - 1) % stride else None
    return slice(start, max(start, b), stride), extra


class FileSource(Source):
    """Delivers a run file's events to the app and answers the cursor's per-step lookups from it."""

    live = False

    def __init__(
        self,
        run: RunFile | str | os.PathLike[str],
        *,
        follow: bool = False,
        overview_rows: int = OVERVIEW_ROWS,
        probe_rows: int = PROBE_ROWS,
        poll_seconds: float = 0.25,
        cache_rows: int = 64,
    ) -> None:
        self.rf = run if isinstance(run, RunFile) else open_run(run)
        self.follow = follow
        self.poll_seconds = poll_seconds
        self.description = "follow" if follow else "replay"
        self.lock = threading.RLock()
        self.step_stride = stride_for(self.rf.n_steps, overview_rows)
        most = max((self.rf.probe_rows(p.name) for p in self.rf.probe_specs), default=0)
        self.probe_stride = stride_for(most, probe_rows)  # one stride for every probe: the same grid
        self.ended = ""  # why delivery ended: "finished", "incomplete", an error; "" while it goes on
        self._cache: OrderedDict[int, tuple[int, np.ndarray]] = OrderedDict()
        self._cache_rows = cache_rows
        self._probe_cache: OrderedDict[tuple[str, int], tuple[int, np.ndarray]] = OrderedDict()
        self._sent = (
            {"steps": 0, "epochs": 0, "events": 0, "findings": 0}
            | {f"probe:{p.name}": 0 for p in self.rf.probe_specs}
            | {f"snap:{name}": 0 for name in self.rf.snapshot_specs}
        )
        self._started = False
        self._finished = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target: MessageTarget | None = None

    # -- Source ------------------------------------------------------------------------------------

    def start(self, target: MessageTarget) -> None:
        self._target = target
        self._thread = threading.Thread(target=self._run, name="tuitrain-FileSource", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2.0)
        with self.lock:
            self.rf.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        target = self._target
        assert target is not None
        try:
            with self.lock:
                events = self.collect()
                if not self._finished and self.rf.incomplete:
                    events.append(self._incomplete())
                elif not self.follow and self.rf.is_live:
                    events.append(
                        Alert(
                            max(0, self.rf.last_step),
                            "warning",
                            "live",
                            "this run is still being written: this is a snapshot; "
                            "`tuitrain replay --follow` keeps up with it",
                        )
                    )
            target.post_message(EventsArrived(events))
            while self.follow and not self._finished and not self._stop.wait(self.poll_seconds):
                with self.lock:
                    events = self.collect() if self.rf.refresh() else []
                    if not self._finished and self.rf.writer_alive() is False:
                        self.rf.refresh()  # the writer may have finished just before it exited
                        events += self.collect()
                        if not self._finished:
                            events.append(self._incomplete())
                if events:
                    target.post_message(EventsArrived(events))
        except (RunFileError, OSError, ValueError, KeyError) as e:
            self.ended = f"cannot read the run file any more: {e}"
            target.post_message(EventsArrived([Alert(0, "error", "source", self.ended)]))
        if not self._stop.is_set():
            self.ended = self.ended or ("finished" if self._finished else "end of file")
            target.post_message(SourceEnded(self.ended))

    # -- reading -----------------------------------------------------------------------------------

    def collect(self) -> list[Event]:
        """The events for everything the file gained since the last call (all of it the first time),
        in order: RunStarted, one thinned StepBatch, the run-level events by step, TestResult and
        RunFinished. Call with the lock held."""
        rf = self.rf
        out: list[Event] = []
        if not self._started:
            out.append(rf.run_started())
            self._started = True
        batch = self._steps()
        if batch is not None:
            out.append(batch)
        side: list[tuple[int, Event]] = []
        finished: RunFinished | None = None
        n_ep = rf.n_epochs
        if n_ep > self._sent["epochs"]:
            for epoch_end in epoch_events(rf, self._sent["epochs"])[: n_ep - self._sent["epochs"]]:
                side.append((epoch_end.step - 1, epoch_end))
            self._sent["epochs"] = n_ep
        n_ev = rf.n_events
        if n_ev > self._sent["events"]:
            for e in rf.events()[self._sent["events"] : n_ev]:
                if e["kind"] == S.KIND_FINISHED:
                    finished = RunFinished(
                        e["message"], e["step"], rf.error, rf.traceback, rf.checkpoint, e["time"]
                    )
                elif e["kind"] == S.KIND_STATUS:
                    side.append((e["step"], StatusChanged(e["message"], e["step"], e["time"])))
                else:
                    side.append((e["step"], Alert(e["step"], e["level"], e["kind"], e["message"], e["time"])))
            self._sent["events"] = n_ev
        n_f = rf.n_findings  # the /findings rows: openings and closings (0 for a file without the table)
        if n_f > self._sent["findings"]:
            for f in rf.findings(self._sent["findings"])[: n_f - self._sent["findings"]]:
                side.append((f.at_step if f.at_step >= 0 else f.first_step, f))
            self._sent["findings"] = n_f
        for name in rf.snapshot_specs:  # after the epoch end of their step (it is keyed step - 1 too)
            n_s, key = rf.n_snapshot_rows(name), f"snap:{name}"
            side.extend((ev.step - 1, ev) for ev in snapshot_events(rf, name, self._sent[key], rf.started_at))
            self._sent[key] = max(self._sent[key], n_s)
        side.sort(key=lambda x: x[0])
        out.extend(ev for _, ev in side)
        if finished is not None:
            test = test_event(rf)
            if test is not None:
                out.append(test)
            out.append(finished)
            self._finished = True
        return out

    def _steps(self) -> StepBatch | None:
        rf = self.rf
        n, a = rf.n_steps, self._sent["steps"]
        specs = rf.probe_specs
        probe_rows = {p.name: rf.probe_rows(p.name) for p in specs}
        if n <= a and all(m <= self._sent[f"probe:{k}"] for k, m in probe_rows.items()):
            return None
        rows, extra = thinned(a, n, self.step_stride)
        names = rf.step_scalars
        cols = {
            k: self._column(lambda r, k=k: rf.scalar(k, r.start, r.stop, r.step or 1), rows, extra)
            for k in ("step", "epoch", *names)
        }
        later = rf.metrics("step")  # keys first logged after the run started: NaN where a row did not
        names = (*names, *later)
        steps = cols["step"].astype(np.int64)
        scalars = np.full((steps.shape[0], len(names)), np.nan)
        for j, name in enumerate(names):
            if name in cols:
                scalars[:, j] = cols[name]
            elif len(steps):
                at, _, values = later[name]
                rows_ = np.minimum(np.searchsorted(steps, at), len(steps) - 1)
                hit = steps[rows_] == at
                scalars[rows_[hit], j] = values[hit]
        blocks: dict[str, ProbeBlock] = {}
        for spec in specs:
            pa, m = self._sent[f"probe:{spec.name}"], probe_rows[spec.name]
            prows, pextra = thinned(pa, m, self.probe_stride)
            psteps = self._column(lambda r, p=spec.name: rf.probe_steps(r, p), prows, pextra).astype(np.int64)
            qs = [
                self._column(lambda r, q=q, p=spec.name: rf.probe(q, r, probe=p), prows, pextra, matrix=True)
                for q in spec.names
            ]
            blocks[spec.name] = ProbeBlock(
                spec.name, psteps, np.stack(qs, axis=1).astype(np.float32, copy=False)
            )
            self._sent[f"probe:{spec.name}"] = max(pa, m)
        when = time.time()  # files from before /steps/time: when the rows arrived here
        if n > a and rf.has(S.path(S.STEPS, "time")):
            t = rf.scalar("time", n - 1, n)  # under SWMR this column may lag the others mid-flush
            if len(t):
                when = float(t[0])
        self._sent["steps"] = max(a, n)
        return StepBatch(
            steps,
            cols["epoch"].astype(np.int32),
            scalars,
            scalar_names=names,
            blocks=blocks,
            time=when,
        )

    @staticmethod
    def _column(
        read: Callable[[slice], np.ndarray], rows: slice, extra: int | None, matrix: bool = False
    ) -> np.ndarray:
        """``read(rows)`` thinned, plus the row ``extra``: a step column up to CONTIGUOUS_ROWS rows is
        read whole and thinned in memory (a contiguous read beats HDF5's strided one); probe matrices are
        read strided (one chunk per row instead of the whole matrix)."""
        if rows.stop <= rows.start:
            part = read(slice(0, 0))
        elif rows.step > 1 and not matrix and rows.stop - rows.start <= CONTIGUOUS_ROWS:
            part = read(slice(rows.start, rows.stop))[:: rows.step]
        else:
            part = read(rows)
        if extra is None:
            return part
        return np.concatenate([part, read(slice(extra, extra + 1))])

    def _incomplete(self) -> RunFinished:
        rf = self.rf
        self._finished = True
        self.ended = "incomplete"
        pid = int(rf.attr("writer_pid"))
        times = [rf.started_at, *(e["time"] for e in rf.events()[-1:])]
        ep = rf.epochs()["time"]
        if len(ep):
            times.append(float(ep[-1]))
        when = (
            max(t for t in times if math.isfinite(t)) if any(math.isfinite(t) for t in times) else time.time()
        )
        error = (
            f"the writing process{f' (pid {pid})' if pid > 0 else ''} is gone and never finished the file; "
            f"it holds {rf.n_steps:,} steps"
        )
        return RunFinished(INCOMPLETE, max(0, rf.last_step), error=error, time=when)

    # -- Backing: exact lookups for the cursor -----------------------------------------------------

    def probes_at(self, step: int) -> tuple[int, np.ndarray] | None:
        with self.lock:
            if not self.rf.is_open:
                return None
            try:
                row = self.rf.probe_row_at(step)  # the gradient probe; None when the file has none
                if row is None:
                    return None
                got = self._cache.get(row)
                if got is None:
                    got = self._cache[row] = self.rf.probe_row(row, GRAD)
                    if len(self._cache) > self._cache_rows:
                        self._cache.popitem(last=False)
                else:
                    self._cache.move_to_end(row)
                return got
            except (RunFileError, OSError, ValueError):
                return None

    def probe_at(self, step: int, probe: str) -> tuple[int, np.ndarray] | None:
        """(probed step, (n_quantities, n_axis) float32) of ``probe``'s last row at or before ``step``,
        in the file's quantity order; None when there is none (or no such probe). The Signal view's
        cursor reads the activation probe through this (:mod:`tuitrain.ui.signal_history`)."""
        with self.lock:
            if not self.rf.is_open:
                return None
            try:
                row = self.rf.probe_row_at(step, probe)
                if row is None:
                    return None
                key = (probe, row)
                got = self._probe_cache.get(key)
                if got is None:
                    got = self._probe_cache[key] = self.rf.probe_row(row, probe)
                    if len(self._probe_cache) > self._cache_rows:
                        self._probe_cache.popitem(last=False)
                else:
                    self._probe_cache.move_to_end(key)
                return got
            except (RunFileError, OSError, ValueError, KeyError):
                return None

    def scalars_at(self, step: int) -> dict[str, float] | None:
        with self.lock:
            if not self.rf.is_open:
                return None
            try:
                row = self.rf.step_row_at(step)
                if row is None:
                    return None
                names = ["step", "epoch", *self.rf.step_scalars]  # a user loop's own keys too
                return {k: float(self.rf.scalar(k, row, row + 1)[0]) for k in names}
            except (RunFileError, OSError, ValueError, IndexError):
                return None

    def __repr__(self) -> str:
        return (
            f"<FileSource {self.rf.path} follow={self.follow} strides={self.step_stride}/{self.probe_stride}>"
        )
