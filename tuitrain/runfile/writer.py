"""The run-file sink: every event of a run, appended to one HDF5 file that readers can follow live.

Why it is shaped this way:

* The file is written in SWMR mode (single writer, many readers) so the UI and ``h5py`` users can
  read it while training runs, and so a SIGKILLed trainer leaves a readable file holding everything
  up to the last flush. SWMR forbids creating datasets after the switch, so every dataset is created
  when :class:`~tuitrain.events.RunStarted` arrives (the first moment the layer count is known).
* The file is built under a fresh private name beside ``path`` (``.NAME.*.partial``, never a name
  someone could plant a link at) and put in place once it is complete and in SWMR mode, so a reader
  polling for the path never sees a half-initialised file; an existing file is replaced only with
  ``overwrite`` (:mod:`tuitrain.runfile.claim`, which also holds the run's lock).
* ``emit`` only copies rows into growable numpy buffers (:mod:`tuitrain.runfile.columns`; a few
  microseconds per step); the HDF5 work happens in :meth:`flush`, at most about once every
  ``flush_seconds``. A background thread flushes rows that would otherwise wait for the next emit
  (e.g. during validation), so rows reach readers within about ``flush_seconds`` however the training
  loop is paced.
* Nothing is compressed: see :mod:`tuitrain.runfile.schema` for the measurements.
* What the file holds is what RunStarted declares (:mod:`tuitrain.runfile.declaration`); where each
  value of an event goes is :mod:`tuitrain.runfile.rows`'. ``append=True`` continues a finished file
  instead of creating one (:mod:`tuitrain.runfile.append`): same SWMR rules, same lock.
* Snapshot events go straight to /snapshots and are flushed at once (:mod:`tuitrain.runfile.snapshots`,
  which also says why an undeclared or misshapen one is a ValueError from ``emit``).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py

from tuitrain.events import (
    Alert,
    EpochEnd,
    Event,
    Finding,
    RunFinished,
    RunStarted,
    Snapshot,
    StatusChanged,
    StepBatch,
    TestResult,
)
from tuitrain.runfile import schema as S
from tuitrain.runfile.append import reopen
from tuitrain.runfile.claim import RunFileWriteError, RunLock, describe_write_error, overwrite_asked
from tuitrain.runfile.columns import Column, fixed_bytes
from tuitrain.runfile.diskfull import MARGIN_BYTES, Slack, close_h5, free_quietly, space_left
from tuitrain.runfile.layout import create_file
from tuitrain.runfile.rows import Rows
from tuitrain.runfile.snapshots import SnapshotStore


class RunFileWriter:
    """A :class:`~tuitrain.events.Sink` that records a run to one HDF5 file (layout: docs/run-file.md).

    ``flush_seconds`` bounds how stale the file may be for readers and how much a SIGKILL can lose
    (rows: about one period; epochs, alerts, findings, status changes: nothing, each is flushed at
    once, before the console prints it). ``background`` runs a small thread that flushes pending rows when no emit comes to do it.
    ``overwrite``: replace an existing file at ``path`` (else :class:`~tuitrain.runfile.claim.OutTaken`);
    None follows ``--overwrite`` of the command that started this process (``$TUITRAIN_OVERWRITE``).
    ``append``: continue the finished run file at ``path`` (completed, stopped or failed; schema 2, the
    same layers and probes as the new RunStarted) after its last step instead of creating a file; it is
    marked running again, and anything else is :class:`~tuitrain.runfile.append.AppendRefused` (bad
    input, exit 2) at RunStarted. ``overwrite`` does not apply then. ``clock`` exists so benchmarks and tests can simulate time; ``max_pending_bytes`` caps memory
    held between flushes (beyond it rows are written to HDF5 early, without a file flush).

    Creating the file (at RunStarted) takes the run's lock (:class:`~tuitrain.runfile.claim.RunLock`)
    until close, or raises ``OutTaken`` (bad input, exit 2) if another writer holds it. The first failed write (disk full) ends the file:
    the writer finishes it as ``failed`` if it can (:mod:`tuitrain.runfile.diskfull`), closes it once,
    and raises one :class:`~tuitrain.runfile.claim.RunFileWriteError` from the next ``emit``, ``flush``
    or ``close`` (a failure in the background thread waits there); after that it ignores events. The
    error stays in :attr:`error`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        flush_seconds: float = 1.0,
        *,
        overwrite: bool | None = None,
        append: bool = False,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        max_pending_bytes: int = 64 << 20,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_seconds = float(flush_seconds)
        self.overwrite = overwrite_asked() if overwrite is None else overwrite
        self.append = bool(append)
        self._clock = clock
        self._max_pending = int(max_pending_bytes)
        self._lock = threading.RLock()
        self._f: h5py.File | None = None
        self._cols: dict[str, Column] = {}
        self._rows: Rows | None = None
        self._snaps: SnapshotStore | None = None
        self._early: list[Event] = []  # events before RunStarted
        self._n_layers = 0
        self._status = "starting"
        self._last_step = -1
        self._last_step_attr = -1
        self._flushed_step = -1  # last step on disk
        self._pending_bytes = 0
        self._dirty = False
        self._done = False  # RunFinished seen or close() called
        self._error: RunFileWriteError | None = None
        self._raised = False  # the error has been raised to a caller once
        self._slack: Slack | None = None
        self._check_space = True
        self._last_flush = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background and math.isfinite(self.flush_seconds):
            self._thread = threading.Thread(target=self._flusher, name="tuitrain-runfile-flush", daemon=True)
        self._claim = RunLock(self.path)  # taken when the file is created, held until it is closed

    # -- Sink protocol ------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Record one event. Cheap for StepBatch (a buffer copy); flushes when the period is up, and at
        once for an end of epoch, alert, finding or status change (the console prints it next: it must
        not be ahead of the file)."""
        with self._lock:
            self._raise_once()
            if self._done:
                return
            with self._writing():
                if self._f is None:
                    if isinstance(event, RunStarted):
                        self._start(event)
                    else:
                        self._early.append(event)
                    return
                self._record(event)
                if self._f is None:  # RunFinished closed the file
                    return
                if self._clock() - self._last_flush >= self.flush_seconds or (
                    isinstance(event, _SHOWN) and math.isfinite(self.flush_seconds)
                ):
                    self._flush_now()
                elif self._pending_bytes > self._max_pending:
                    self._write_columns()

    def close(self) -> None:
        """Finish the file. Without a prior RunFinished (a crash) a live status becomes "failed"."""
        self._stop.set()
        if (
            self._thread is not None
            and self._thread.is_alive()
            and self._thread is not threading.current_thread()
        ):
            self._thread.join()
        with self._lock:
            self._done = True
            try:
                self._raise_once()
                if self._f is None:
                    return
                with self._writing():
                    if self._status not in S.FINAL_STATUSES:
                        self._finish("failed", time.time(), error="the run ended without a RunFinished event")
                    self._close_file()
            finally:
                free_quietly(self._slack)
                self._claim.release()

    # -- public helpers -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write every pending row and make it visible to SWMR readers (and durable past a SIGKILL)."""
        with self._lock:
            self._raise_once()
            if self._f is not None:
                with self._writing():
                    self._flush_now()

    @property
    def error(self) -> RunFileWriteError | None:
        """Why the file could not be written, once a write failed; None while all is well."""
        return self._error

    @property
    def n_layers(self) -> int:
        return self._n_layers

    def __enter__(self) -> RunFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _flush_now(self) -> None:
        f = self._f
        assert f is not None
        self._write_columns()
        if self._last_step != self._last_step_attr:
            f.attrs["last_step"] = self._last_step
            self._last_step_attr = self._last_step
        f.flush()
        self._flushed_step = self._last_step
        self._dirty = False
        self._last_flush = self._clock()

    def _flusher(self) -> None:
        period = min(max(self.flush_seconds / 4, 0.05), 1.0)
        while not self._stop.wait(period):
            with self._lock:
                if (
                    self._f is not None
                    and self._dirty
                    and self._clock() - self._last_flush >= self.flush_seconds
                ):
                    try:
                        self._flush_now()
                    except Exception as e:  # noqa: BLE001 - kept for the training thread's next emit
                        self._break(e)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """h5py and OS errors while writing break the writer (see the class docstring)."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            err = self._break(e)
            self._raised = True
            raise err from None

    def _raise_once(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def _break(self, e: BaseException) -> RunFileWriteError:
        """Stop writing after the first failure: finish the file as ``failed`` with the space set
        aside if that works, close it exactly once, release the run, and keep the error."""
        if self._error is not None:
            return self._error
        what = describe_write_error(self.path, e)
        steps = self._last_step + 1
        f, saved = self._f, False
        self._done = True
        self._stop.set()
        free_quietly(self._slack)
        self._check_space = False  # finish with the space set aside
        message = (
            f"{what}. The run was stopped after {steps} steps; its run file keeps them all and says failed."
        )
        if f is not None:
            try:
                self._finish("failed", time.time(), error=message)
                self._flush_now()
                saved = True
            except Exception:  # noqa: BLE001 - still full: the last good flush is what the file keeps
                pass
            self._f = None
            saved = close_h5(f, flushed=saved) and saved
        if not saved:
            message = (
                f"{what}. The run was stopped after {steps} steps; its run file keeps what its last good "
                f"flush wrote ({self._flushed_step + 1} steps) and could not be marked failed."
            )
        self._error = RunFileWriteError(message)
        self._claim.release()
        return self._error

    def _start(self, ev: RunStarted) -> None:
        """Take the run's lock, then create the file (:func:`~tuitrain.runfile.layout.create_file`: any
        failure leaves no file and names none but ``path``) or reopen it to append."""
        try:
            self._claim.acquire()  # OutTaken if another run is writing this file
            self._slack = Slack(self.path.parent)
            if self.append:
                f, decl, self._cols, self._last_step = reopen(self.path, ev)  # in SWMR mode
                self._last_step_attr = self._flushed_step = self._last_step
            else:
                f, decl, self._cols = create_file(self.path, ev, self.overwrite)
        except BaseException as e:
            self._done = True
            free_quietly(self._slack)
            self._claim.release()
            if not isinstance(e, (OSError, RuntimeError)):
                raise
            what = "continued" if self.append else "created"
            self._error = RunFileWriteError(
                f"{describe_write_error(self.path, e)}: the run file could not be {what}; nothing was written."
            )
            self._raised = True
            raise self._error from None
        self._f = f
        self._n_layers = len(ev.layers)
        self._rows = Rows(decl, self._cols, str(self.path))
        self._snaps = SnapshotStore(f, tuple(ev.snapshots), decl.snapshots, str(self.path))
        self._rows.last_step = self._last_step
        self._status = "running"
        self._last_flush = self._clock()
        if self.append:  # live readers take the status from the last status row: no longer "finished"
            self._event_row(max(self._last_step, 0), time.time(), "info", S.KIND_STATUS, "running")
        if self._thread is not None:
            self._thread.start()
        early, self._early = self._early, []
        for event in early:
            if self._f is None:  # an early RunFinished already closed the file
                break
            if isinstance(event, StatusChanged):  # before RunStarted: logged, but RunStarted means running
                self._event_row(event.step, event.time, "info", S.KIND_STATUS, event.status)
            else:
                self._record(event)

    def _record(self, event: Event) -> None:
        f = self._f
        assert f is not None
        self._dirty = True
        rows = self._rows
        assert rows is not None
        if isinstance(event, StepBatch):
            if len(event) and int(event.steps[0]) <= self._last_step:
                raise ValueError(
                    f"{self.path}: a StepBatch starts at step {int(event.steps[0])}, not after the last "
                    f"step written ({self._last_step}); a resumed run continues after the file's last step"
                )
            self._pending_bytes += rows.steps(event)
            self._last_step = rows.last_step
        elif isinstance(event, EpochEnd):
            self._pending_bytes += rows.epoch(event)
        elif isinstance(event, Alert):
            self._event_row(event.step, event.time, event.level, event.kind, event.message)
        elif isinstance(event, Finding):
            if rows.keeps_findings:  # a file continued from before issue 11 has no table for them
                self._pending_bytes += rows.finding(event, time.time())
        elif isinstance(event, StatusChanged):
            self._event_row(event.step, event.time, "info", S.KIND_STATUS, event.status)
            self._status = event.status
            f.attrs["status"] = event.status
        elif isinstance(event, Snapshot):  # written at once (flushed below); ValueError if undeclared
            assert self._snaps is not None
            self._snaps.put(event)
        elif isinstance(event, TestResult):
            tg = f[S.TEST]
            tg.attrs["loss"] = float(event.loss)
            tg.attrs["acc"] = float(event.acc)
            tg.attrs["time"] = float(event.time)
            self._pending_bytes += rows.test(event)
        elif isinstance(event, RunFinished):
            self._finish(event.status, event.time, event.step, event.error, event.traceback, event.checkpoint)
            self._close_file()
        elif isinstance(event, RunStarted):
            raise ValueError(f"{self.path}: a second RunStarted event; one run file holds one run")
        else:  # pragma: no cover - the Event union is closed
            raise TypeError(f"{self.path}: not a tuitrain event: {type(event).__name__}")

    def _event_row(self, step: int, when: float, level: str, kind: str, message: str) -> None:
        c = self._cols
        c["events/step"].put_one(step)
        c["events/time"].put_one(when)
        for name, text in (("level", level), ("kind", kind), ("message", message)):
            c[S.path(S.EVENTS, name)].put_one(fixed_bytes(text, S.EVENT_FIELDS[name]))
        self._dirty = True

    def _finish(
        self, status: str, when: float, step: int | None = None, error: str = "", tb: str = "", ckpt: str = ""
    ) -> None:
        f = self._f
        assert f is not None
        self._status = status
        for key, value in (
            ("status", status),
            ("error", error),
            ("traceback", tb),
            ("checkpoint", ckpt),
            ("ended_at", float(when)),
        ):
            f.attrs[key] = value
        # Attributes first, in a flush of their own: a live reader that sees the "finished" row reopens
        # the file for the final attributes, which must already be on disk by then.
        self._flush_now()
        self._event_row(
            self._last_step if step is None else step, when, _level(status), S.KIND_FINISHED, status
        )
        self._done = True

    def _write_columns(self) -> None:
        if self._check_space:  # stop while HDF5 can still finish the file (see runfile/diskfull.py)
            free = space_left(self.path.parent)
            if free is not None and free < MARGIN_BYTES + 2 * self._pending_bytes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        for col in self._cols.values():
            col.write()
        self._pending_bytes = 0

    def _close_file(self) -> None:
        """The last flush, then the one close. If the flush fails, :meth:`_break` does the closing."""
        if self._f is None:
            return
        self._flush_now()
        f, self._f = self._f, None
        self._stop.set()
        if not close_h5(f, flushed=True):
            raise OSError(f"closing {self.path} failed")


# Events a console or dashboard shows as a line of its own: flushed before the next sink hears of them,
# so that a SIGKILL never loses what a person saw. Rare (alerts are said once, at a monitor flush).
# Snapshots too: a few per epoch, small, and the Images screen shows them.
_SHOWN = (EpochEnd, Alert, Finding, StatusChanged, TestResult, Snapshot)


def _level(status: str) -> str:
    return {"completed": "info", "stopped": "warning"}.get(status, "error")
