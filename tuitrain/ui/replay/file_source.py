"""A run file as a dashboard source: replay a finished run, follow one that is still being written.

The widgets never see the whole file. A :class:`FileSource` delivers, as ordinary events:

* the run-level events (RunStarted, EpochEnd, alerts and status changes, TestResult, RunFinished);
* an overview of the steps: every ``step_stride``-th row of /steps (at most ``overview_rows`` rows,
  the same uniform thinning the live history does by itself on long runs) plus the latest row;
* an overview of the probes: every ``probe_stride``-th row of /probes (at most ``probe_rows`` rows; a
  strided read touches one chunk per row, see :mod:`tuitrain.runfile.schema`) plus the latest row.

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

import numpy as np

from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    Event,
    RunFinished,
    StatusChanged,
    StepBatch,
    TestResult,
)
from tuitrain.runfile import RunFile, RunFileError, open_run
from tuitrain.runfile import schema as S
from tuitrain.runfile.replay import search_steps
from tuitrain.ui.history import INCOMPLETE, SCALAR_COLUMNS
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
        self.probe_stride = stride_for(self.rf.n_probe_rows, probe_rows)
        self.ended = ""  # why delivery ended: "finished", "incomplete", an error; "" while it goes on
        self._cache: OrderedDict[int, tuple[int, np.ndarray]] = OrderedDict()
        self._cache_rows = cache_rows
        self._sent = {"steps": 0, "probes": 0, "epochs": 0, "events": 0}
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
            ep = rf.epochs()
            for i in range(self._sent["epochs"], min(n_ep, len(ep["epoch"]))):
                row = {k: v[i].item() for k, v in ep.items()}
                side.append((int(row["step"]) - 1, EpochEnd(**row)))
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
        side.sort(key=lambda x: x[0])
        out.extend(ev for _, ev in side)
        if finished is not None:
            t = rf.test()
            if not math.isnan(t["time"]):
                out.append(TestResult(t["loss"], t["acc"], t["time"]))
            out.append(finished)
            self._finished = True
        return out

    def _steps(self) -> StepBatch | None:
        rf = self.rf
        n, m = rf.n_steps, rf.n_probe_rows
        a, pa = self._sent["steps"], self._sent["probes"]
        if n <= a and m <= pa:
            return None
        rows, extra = thinned(a, n, self.step_stride)
        cols = {k: self._column(S.path(S.STEPS, k), rows, extra) for k in S.STEP_FIELDS}
        k = cols["step"].shape[0]
        scalars = np.empty((k, len(STEP_SCALARS)), np.float64)
        for j, name in enumerate(STEP_SCALARS):
            scalars[:, j] = cols[name]
        prows, pextra = thinned(pa, m, self.probe_stride)
        probe_steps = self._column("probes/step", prows, pextra).astype(np.int64)
        probes = np.empty((probe_steps.shape[0], len(PROBE_NAMES), rf.n_layers), np.float32)
        for j, name in enumerate(PROBE_NAMES):
            probes[:, j, :] = self._column(S.path(S.PROBES, name), prows, pextra)
        when = time.time()  # files from before /steps/time: when the rows arrived here
        tpath = S.path(S.STEPS, "time")
        if n > a and rf.has(tpath):
            tcol = rf._d(tpath)
            if tcol.shape[0] >= n:  # under SWMR this column may lag the others mid-flush
                when = float(tcol[n - 1])
        self._sent["steps"], self._sent["probes"] = max(a, n), max(pa, m)
        return StepBatch.with_grad(
            cols["step"].astype(np.int64),
            cols["epoch"].astype(np.int32),
            scalars,
            probe_steps,
            probes,
            time=when,
        )

    def _column(self, path: str, rows: slice, extra: int | None) -> np.ndarray:
        ds = self.rf._d(path)  # the reader's handle: the one refresh() keeps current under SWMR
        if rows.stop <= rows.start:
            part = ds[0:0]
        elif rows.step > 1 and ds.ndim == 1 and rows.stop - rows.start <= CONTIGUOUS_ROWS:
            part = ds[rows.start : rows.stop][:: rows.step]  # a contiguous read beats HDF5's strided one
        else:
            part = ds[rows]  # probes: one chunk per strided row instead of the whole matrix
        if extra is None:
            return part
        return np.concatenate([part, ds[extra : extra + 1]])

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
            if self.rf._f is None:
                return None
            try:
                row = self.rf.probe_row_at(step)
                if row is None:
                    return None
                got = self._cache.get(row)
                if got is None:
                    d = self.rf._d
                    got = (
                        int(d("probes/step")[row]),
                        np.stack([d(S.path(S.PROBES, n))[row] for n in PROBE_NAMES]),
                    )
                    self._cache[row] = got
                    if len(self._cache) > self._cache_rows:
                        self._cache.popitem(last=False)
                else:
                    self._cache.move_to_end(row)
                return got
            except (RunFileError, OSError, ValueError):
                return None

    def scalars_at(self, step: int) -> dict[str, float] | None:
        with self.lock:
            if self.rf._f is None:
                return None
            try:
                n = self.rf.n_steps
                row = search_steps(self.rf._d("steps/step"), n, step, right=True) - 1
                if row < 0:
                    return None
                return {k: float(self.rf._d(S.path(S.STEPS, k))[row]) for k in SCALAR_COLUMNS}
            except (RunFileError, OSError, ValueError):
                return None

    def __repr__(self) -> str:
        return (
            f"<FileSource {self.rf.path} follow={self.follow} strides={self.step_stride}/{self.probe_stride}>"
        )
