"""The run-file sink: every event of a run, appended to one HDF5 file that readers can follow live.

Why it is shaped this way:

* The file is written in SWMR mode (single writer, many readers) so the UI and ``h5py`` users can
  read it while training runs, and so a SIGKILLed trainer leaves a readable file holding everything
  up to the last flush. SWMR forbids creating datasets after the switch, so every dataset is created
  when :class:`~tuitrain.events.RunStarted` arrives (the first moment the layer count is known).
* The file is built under ``<path>.partial`` and renamed into place once it is complete and in SWMR
  mode, so a reader polling for the path never sees a half-initialised file.
* ``emit`` only copies rows into growable numpy buffers (:mod:`tuitrain.runfile.columns`; a few
  microseconds per step); the HDF5 work happens in :meth:`flush`, at most about once every
  ``flush_seconds``. A background thread flushes rows that would otherwise wait for the next emit
  (e.g. during validation), so rows reach readers within about ``flush_seconds`` however the training
  loop is paced.
* Nothing is compressed: see :mod:`tuitrain.runfile.schema` for the measurements.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tuitrain import __version__
from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    Event,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
    TestResult,
)
from tuitrain.runfile import schema as S
from tuitrain.runfile.columns import Column, fixed_bytes, h5dtype
from tuitrain.runfile.opening import start_ticks


class RunFileWriter:
    """A :class:`~tuitrain.events.Sink` that records a run to one HDF5 file (layout: docs/run-file.md).

    ``flush_seconds`` bounds how stale the file may be for readers and how much a SIGKILL can lose.
    ``background`` runs a small thread that flushes pending rows when no emit comes to do it.
    ``clock`` exists so benchmarks and tests can simulate time; ``max_pending_bytes`` caps memory
    held between flushes (beyond it rows are written to HDF5 early, without a file flush).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        flush_seconds: float = 1.0,
        *,
        background: bool = True,
        clock: Callable[[], float] = time.monotonic,
        max_pending_bytes: int = 64 << 20,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_seconds = float(flush_seconds)
        self._clock = clock
        self._max_pending = int(max_pending_bytes)
        self._lock = threading.RLock()
        self._f: h5py.File | None = None
        self._cols: dict[str, Column] = {}
        self._early: list[Event] = []  # events before RunStarted
        self._n_layers = 0
        self._status = "starting"
        self._last_step = -1
        self._last_step_attr = -1
        self._pending_bytes = 0
        self._dirty = False
        self._done = False  # RunFinished seen or close() called
        self._last_flush = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background and math.isfinite(self.flush_seconds):
            self._thread = threading.Thread(target=self._flusher, name="tuitrain-runfile-flush", daemon=True)

    # -- Sink protocol ------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Record one event. Cheap for StepBatch (a buffer copy); flushes when the period is up."""
        with self._lock:
            if self._done:
                return
            if self._f is None:
                if isinstance(event, RunStarted):
                    self._start(event)
                else:
                    self._early.append(event)
                return
            self._record(event)
            if self._f is None:  # RunFinished closed the file
                return
            if self._clock() - self._last_flush >= self.flush_seconds:
                self.flush()
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
            if self._f is None:
                return
            if self._status not in S.FINAL_STATUSES:
                self._finish("failed", time.time(), error="the run ended without a RunFinished event")
            self._close_file()

    # -- public helpers -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write every pending row and make it visible to SWMR readers (and durable past a SIGKILL)."""
        with self._lock:
            if self._f is None:
                return
            self._write_columns()
            if self._last_step != self._last_step_attr:
                self._f.attrs["last_step"] = self._last_step
                self._last_step_attr = self._last_step
            self._f.flush()
            self._dirty = False
            self._last_flush = self._clock()

    @property
    def n_layers(self) -> int:
        return self._n_layers

    def __enter__(self) -> RunFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _flusher(self) -> None:
        period = min(max(self.flush_seconds / 4, 0.05), 1.0)
        while not self._stop.wait(period):
            with self._lock:
                if (
                    self._f is not None
                    and self._dirty
                    and self._clock() - self._last_flush >= self.flush_seconds
                ):
                    self.flush()

    def _start(self, ev: RunStarted) -> None:
        tmp = self.path.with_name(self.path.name + ".partial")
        f = h5py.File(tmp, "w", libver="latest")
        try:
            self._create(f, ev)
            f.swmr_mode = True  # flushes everything created so far
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)
        self._f = f
        self._status = "running"
        self._last_flush = self._clock()
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

    def _create(self, f: h5py.File, ev: RunStarted) -> None:
        attrs: dict[str, Any] = dict(S.ROOT_ATTRS)
        attrs.update(
            tuitrain_version=__version__,
            versions=json.dumps(ev.versions, sort_keys=True, default=_jsonable),
            run_name=ev.run_name,
            model_name=ev.model_name,
            dataset=ev.dataset,
            device=ev.device,
            params=int(ev.params),
            flops=int(ev.flops),
            config_toml=ev.config_toml,
            module_summary=json.dumps(ev.module_summary, default=_jsonable),
            epochs=int(ev.epochs),
            steps_per_epoch=int(ev.steps_per_epoch),
            batch_size=int(ev.batch_size),
            num_classes=int(ev.num_classes),
            started_at=float(ev.started_at),
            max_steps=int(ev.max_steps),
            out_path=str(ev.out_path),
            vanishing=float(ev.vanishing),
            exploding=float(ev.exploding),
            status="running",
            writer_pid=os.getpid(),
            writer_host=socket.gethostname(),
            writer_start_ticks=start_ticks("self") or 0,
        )
        for key, value in attrs.items():
            f.attrs[key] = value

        n_layers = len(ev.layers)
        self._n_layers = n_layers
        g = f.create_group(S.LAYERS)
        layer_values: dict[str, list[Any]] = {
            "name": [x.name for x in ev.layers],
            "shape": ["x".join(str(d) for d in x.shape) for x in ev.layers],
            "numel": [int(x.numel) for x in ev.layers],
            "kind": [x.kind for x in ev.layers],
            "module": [x.module for x in ev.layers],
            "module_type": [x.module_type for x in ev.layers],
        }
        for name, dt in S.LAYER_FIELDS.items():
            g.create_dataset(
                name, data=np.array(layer_values[name], dtype=dt).reshape(n_layers), dtype=h5dtype(dt)
            )

        def table(group: str, fields: dict[str, np.dtype], chunk: int) -> None:
            grp = f.create_group(group)
            for name, dt in fields.items():
                ds = grp.create_dataset(name, (0,), dtype=h5dtype(dt), maxshape=(None,), chunks=(chunk,))
                self._cols[S.path(group, name)] = Column(ds, ds.dtype)  # keeps the UTF-8 tag

        table(S.STEPS, {**S.STEP_FIELDS, **S.OPTIONAL_STEP_FIELDS}, S.STEP_CHUNK)
        table(S.EPOCHS, S.EPOCH_FIELDS, S.EPOCH_CHUNK)
        table(S.EVENTS, S.EVENT_FIELDS, S.EVENT_CHUNK)

        pg = f.create_group(S.PROBES)
        ds = pg.create_dataset(
            "step", (0,), dtype=S.PROBE_STEP_DTYPE, maxshape=(None,), chunks=(S.STEP_CHUNK,)
        )
        self._cols[S.path(S.PROBES, "step")] = Column(ds, S.PROBE_STEP_DTYPE)
        rows = S.probe_chunk_rows(n_layers)
        for name in PROBE_NAMES:
            ds = pg.create_dataset(
                name,
                (0, n_layers),
                dtype=S.PROBE_DTYPE,
                maxshape=(None, n_layers if n_layers else None),
                chunks=(rows, max(n_layers, 1)),
            )
            self._cols[S.path(S.PROBES, name)] = Column(ds, S.PROBE_DTYPE, (n_layers,), cap=rows)

        tg = f.create_group(S.TEST)
        for key, value in S.TEST_ATTRS.items():
            tg.attrs[key] = value

    def _record(self, event: Event) -> None:
        f = self._f
        assert f is not None
        self._dirty = True
        if isinstance(event, StepBatch):
            self._steps(event)
        elif isinstance(event, EpochEnd):
            for name in S.EPOCH_FIELDS:
                self._cols[S.path(S.EPOCHS, name)].put_one(getattr(event, name))
        elif isinstance(event, Alert):
            self._event_row(event.step, event.time, event.level, event.kind, event.message)
        elif isinstance(event, StatusChanged):
            self._event_row(event.step, event.time, "info", S.KIND_STATUS, event.status)
            self._status = event.status
            f.attrs["status"] = event.status
        elif isinstance(event, TestResult):
            tg = f[S.TEST]
            tg.attrs["loss"] = float(event.loss)
            tg.attrs["acc"] = float(event.acc)
            tg.attrs["time"] = float(event.time)
        elif isinstance(event, RunFinished):
            self._finish(event.status, event.time, event.step, event.error, event.traceback, event.checkpoint)
            self._close_file()
        elif isinstance(event, RunStarted):
            raise ValueError(f"{self.path}: a second RunStarted event; one run file holds one run")
        else:  # pragma: no cover - the Event union is closed
            raise TypeError(f"{self.path}: not a tuitrain event: {type(event).__name__}")

    def _steps(self, b: StepBatch) -> None:
        n = len(b)
        if n:
            c = self._cols
            c["steps/step"].put(b.steps)
            c["steps/epoch"].put(b.epochs)
            c["steps/time"].put(np.full(n, b.time, np.float64))
            for j, name in enumerate(STEP_SCALARS):
                c[S.path(S.STEPS, name)].put(b.scalars[:, j])
            self._last_step = int(b.steps[-1])
            self._pending_bytes += n * 40
        m = int(b.probe_steps.shape[0])
        if m:
            if b.probes.shape != (m, len(PROBE_NAMES), self._n_layers):
                raise ValueError(
                    f"{self.path}: StepBatch.probes has shape {b.probes.shape}, expected "
                    f"({m}, {len(PROBE_NAMES)}, {self._n_layers}) for this run's {self._n_layers} layers"
                )
            self._cols["probes/step"].put(b.probe_steps)
            for j, name in enumerate(PROBE_NAMES):
                self._cols[S.path(S.PROBES, name)].put(b.probes[:, j, :])
            self._pending_bytes += m * (8 + 4 * len(PROBE_NAMES) * self._n_layers)

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
        self.flush()
        self._event_row(
            self._last_step if step is None else step, when, _level(status), S.KIND_FINISHED, status
        )
        self._done = True

    def _write_columns(self) -> None:
        for col in self._cols.values():
            col.write()
        self._pending_bytes = 0

    def _close_file(self) -> None:
        if self._f is None:
            return
        try:
            self.flush()
        finally:
            self._f.close()
            self._f = None
            self._stop.set()


def _jsonable(o: Any) -> Any:
    """numpy scalars (params, flops counted with numpy) as numbers, anything else as its text."""
    return o.item() if isinstance(o, np.generic) else str(o)


def _level(status: str) -> str:
    return {"completed": "info", "stopped": "warning"}.get(status, "error")
