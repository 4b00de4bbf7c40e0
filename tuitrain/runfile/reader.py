"""Read a run file: finished, still being written, or left behind by a killed trainer.

Everything is lazy: opening reads the root attributes and checks the layout, nothing more, so the UI
can open a 1,000,000-step file in milliseconds and slice only what it draws. Opening and errors live
in :mod:`tuitrain.runfile.opening`, the check of the whole file against the schema (types, shapes,
links, the small tables) in :mod:`tuitrain.runfile.validate`, run once at open; every failure
surfaces as one :class:`RunFileError` whose message starts with the path and names the element.

What a file holds is what it declares (:mod:`tuitrain.runfile.declaration`): its probes
(:attr:`RunFile.probe_specs`), its step columns (:attr:`RunFile.step_scalars`); a schema-1 file reads
as one gradient probe and the standard columns. The derived views (events again, ``info``'s summary)
are :mod:`tuitrain.runfile.replay`'s, built on this public API only.

Live files are opened with SWMR; :meth:`RunFile.writer_alive` tells a live writer from a killed one
when the file is on the same host. A live reader does not see root attributes change (HDF5 has no
group refresh), so the current status of a live run comes from the last status row of ``/events``,
which does refresh.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tuitrain.events import (
    GRAD,
    Event,
    Finding,
    LayerInfo,
    ModuleInfo,
    RunStarted,
    Snapshot,
    SnapshotSpec,
    StepBatch,
)
from tuitrain.runfile import replay, tables
from tuitrain.runfile import schema as S
from tuitrain.runfile import snapshots as snaps
from tuitrain.runfile.attrs import RunAttrs
from tuitrain.runfile.metrics_read import MetricsView
from tuitrain.runfile.opening import RunFileError, guard, one_line, open_checked, open_h5
from tuitrain.runfile.search import search_steps
from tuitrain.runfile.validate import validate

__all__ = ["RunFile", "RunFileError", "open_run"]


def open_run(path: str | os.PathLike[str]) -> RunFile:
    """Open a run file for reading. Raises :class:`RunFileError` for anything that is not a readable run."""
    p = Path(path)
    f, swmr = open_checked(p)
    try:
        return RunFile(p, f, swmr)
    except BaseException:
        f.close()
        raise


class RunFile(RunAttrs):
    """A lazily read run file; use :func:`open_run` to make one, and ``with`` (or ``close``) to end it.

    Row arguments (``start``/``stop``/``rows``) index rows of a table, not step values; steps start at 0
    and are consecutive in runs written by tuitrain, so the two coincide there. Use
    :meth:`read_batches` and :meth:`probe_at_step` to address data by step value.
    """

    def __init__(self, path: Path, f: h5py.File, opened_swmr: bool) -> None:
        self.path = path
        self.opened_swmr = opened_swmr  # the file was still marked open by a writer (live or killed)
        self._f = f
        self._ds: dict[str, h5py.Dataset] = {}
        self._metrics = MetricsView()
        self._load_attrs()
        self._live_status = self._status_from_events() if opened_swmr else None

    # -- opening and following ------------------------------------------------------------------

    def _load_attrs(self) -> None:
        # Validated against the schema once, here: every property below may trust types and ranges.
        checked = validate(self.path, self._f)
        self._attrs = checked.attrs
        self._decl = checked.declaration
        self._tables = checked.tables
        self._ds.update(checked.datasets)

    def _guard(self, what: str) -> contextlib.AbstractContextManager[None]:
        return guard(self.path, what)

    def _d(self, path: str) -> h5py.Dataset:
        ds = self._ds.get(path)
        if ds is None:
            with self._guard(f"/{path}"):
                ds = self._ds[path] = self._f[path]
        return ds

    def _read(self, path: str, sel: Any = None) -> Any:
        ds = self._d(path)
        with self._guard(f"/{path}"):
            return ds[()] if sel is None else ds[sel]

    def refresh(self) -> bool:
        """Pick up rows flushed since the last look; returns True if any table grew or the status changed.

        A no-op for files opened without SWMR (already finished). When a live run reaches a final
        status, the file is reopened so that final attributes (error, checkpoint, test) are current.
        """
        if not self.opened_swmr or self._f is None:
            return False
        before = self._sizes()
        with self._guard("the file while following it"):
            for paths in self._tables.values():
                for p in paths:
                    self._d(p).refresh()
            for name in S.OPTIONAL_STEP_FIELDS:
                ds = self._ds.get(S.path(S.STEPS, name))
                if ds is not None:
                    ds.refresh()
        self._live_status = self._status_from_events()
        if self._live_status in S.FINAL_STATUSES and self._attrs["status"] not in S.FINAL_STATUSES:
            self._reopen()
        return before != self._sizes()

    def _sizes(self) -> tuple[int | str | None, ...]:
        probes = tuple(self.probe_rows(p.name) for p in self._decl.probes)
        tail = (self.n_epochs, self.n_events, self.n_metrics, self.n_findings, self._live_status)
        return (self.n_steps, *probes, *tail, *(self.n_snapshot_rows(s.name) for s in self._decl.snapshots))

    def _reopen(self) -> None:
        # Close first: HDF5 shares one file object (and its stale metadata cache) between handles of the
        # same file in one process, so opening before closing would read the old attributes again.
        self._f.close()
        self._ds = {}
        try:
            self._f, self.opened_swmr = open_h5(self.path)
        except RunFileError:
            try:
                self._f, self.opened_swmr = h5py.File(self.path, "r", swmr=True, libver="latest"), True
            except OSError as e:
                raise RunFileError(f"{self.path}: cannot reopen the run file: {one_line(e)}") from None
        self._load_attrs()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None  # type: ignore[assignment]

    @property
    def is_open(self) -> bool:
        """False once :meth:`close` ran (or a reopen failed): nothing can be read any more."""
        return self._f is not None

    def __enter__(self) -> RunFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _status_from_events(self) -> str | None:
        n = self.n_events
        if not n:
            return None
        kinds = self._read("events/kind", slice(0, n))
        for i in range(n - 1, -1, -1):
            if _s(kinds[i]) in (S.KIND_STATUS, S.KIND_FINISHED):
                return _s(self._read("events/message", i))
        return None

    # -- attributes (tuitrain.runfile.attrs) and layers ---------------------------------------------

    @property
    def layers(self) -> list[LayerInfo]:
        return tables.layers(self._read)

    @property
    def n_layers(self) -> int:
        return int(self._d("layers/name").shape[0])

    @property
    def modules(self) -> list[ModuleInfo]:
        """The probed modules (/modules: the columns of axis "module"); [] when the file has no table."""
        return tables.modules(self._read) if self._decl.has_table(S.MODULES) else []

    # -- findings (/findings: tuitrain.runfile.tables) ------------------------------------------------

    has_findings = property(lambda self: self._decl.has_table(S.FINDINGS))  # the file declares the table
    n_findings = property(lambda self: self._rows(S.FINDINGS))  # rows: openings and closings; 0 if none

    def findings(self, start: int = 0) -> list[Finding]:
        """The stored Finding events from row ``start`` on, in order (``tuitrain.diagnosis.current`` gives
        each one's latest state); [] for a file without the table."""
        n = self.n_findings
        with self._guard("/findings"):
            return tables.findings(self._read, max(0, start), n)

    # -- snapshots (/snapshots: tuitrain.runfile.snapshots) --------------------------------------------

    @property
    def snapshot_specs(self) -> dict[str, SnapshotSpec]:
        """The declared snapshots by name, in declared order; {} for a file without (before issue 12)."""
        return {s.name: s for s in self._decl.snapshots}

    def n_snapshot_rows(self, name: str) -> int:
        """Rows of snapshot ``name`` on disk now (a live file: after :meth:`refresh`); 0 if undeclared."""
        return self._rows(snaps.group(name)) if any(s.name == name for s in self._decl.snapshots) else 0

    def snapshot_rows(self, name: str, start: int = 0) -> snaps.SnapshotRows | None:
        """Rows ``start..`` of snapshot ``name`` (epoch, step and every field, whole); None when the file
        does not declare it or holds no row from ``start`` on."""
        spec = self.snapshot_specs.get(name)
        n = self.n_snapshot_rows(name)
        if spec is None or n <= max(0, start):
            return None
        with self._guard(f"/{snaps.group(name)}"):
            return snaps.read_rows(self._read, spec, max(0, start), n)

    def snapshot(self, name: str, start: int = 0) -> Snapshot | None:
        """Rows ``start..`` of snapshot ``name`` as ONE Snapshot event (arrays with every row; epoch and
        step of the last row; time: the run's start, not stored per row); None when there is no row. A
        "start" or "end" snapshot gives its last group of rows (a resumed run's file has one per part)."""
        r = self.snapshot_rows(name, start)
        if r is None:
            return None
        if r.spec.when != "epoch":
            r = r.latest()
        return Snapshot(name, int(r.epoch[-1]), int(r.step[-1]), r.arrays, self.started_at)

    # -- tables ---------------------------------------------------------------------------------

    def _rows(self, group: str) -> int:
        # Under SWMR the columns of a table can be seen mid-flush at different lengths: use the shortest.
        paths = self._tables.get(group)
        return min(int(self._d(p).shape[0]) for p in paths) if paths else 0

    n_steps = property(lambda self: self._rows(S.STEPS))
    n_epochs = property(lambda self: self._rows(S.EPOCHS))
    n_events = property(lambda self: self._rows(S.EVENTS))
    n_metrics = property(lambda self: self._rows(S.METRICS))  # 0 for schema-1 files

    @property
    def n_probe_rows(self) -> int:
        """Rows of the gradient probe; 0 when the file has none (a loop that never called watch)."""
        return self.probe_rows(GRAD) if self.has_probe(GRAD) else 0

    def probe_rows(self, probe: str = GRAD) -> int:
        self._decl.probe(probe)  # KeyError naming the declared probes
        return self._rows(self._decl.probe_group(probe))

    @property
    def last_step(self) -> int:
        n = self.n_steps
        return int(self._read("steps/step", n - 1)) if n else int(self.attr("last_step"))

    def scalar(
        self, name: str, start: int | None = None, stop: int | None = None, stride: int = 1
    ) -> np.ndarray:
        """One /steps column (``step``, ``epoch``, ``time`` where the file has it, or a declared step
        scalar: :attr:`step_scalars`) over rows ``[start, stop)``, every ``stride``-th row (a thinned view
        of a long run in one read). ``time`` may be a row short of the others in a live file."""
        known = ("step", "epoch", *self.step_scalars)
        path = S.path(S.STEPS, name)
        if name == "time" and self.has(path):
            n = min(self.n_steps, int(self._d(path).shape[0]))
        elif name in known:
            n = self.n_steps
        else:
            raise KeyError(f"unknown step column {name!r}; this file has: {', '.join(known)}")
        a, b, _ = slice(start, stop).indices(n)
        return self._read(path, slice(a, max(a, b), max(1, int(stride))))

    def steps(self, start: int | None = None, stop: int | None = None) -> dict[str, np.ndarray]:
        """Every /steps column but ``time`` over rows ``[start, stop)`` (negative values count from the end)."""
        return {n: self.scalar(n, start, stop) for n in ("step", "epoch", *self.step_scalars)}

    def step_row_at(self, step: int) -> int | None:
        """Row of the last /steps row at or before ``step``, or None."""
        with self._guard("/steps/step"):
            row = search_steps(self._d("steps/step"), self.n_steps, step, right=True) - 1
        return row if row >= 0 else None

    def probe_steps(self, rows: slice | None = None, probe: str = GRAD) -> np.ndarray:
        """The steps of a probe's rows (``probe`` must be declared: KeyError otherwise)."""
        n = self.probe_rows(probe)
        return self._read(self._decl.probe_path(probe, "step"), _clip(rows, n))

    def probe(
        self, name: str, rows: slice | None = None, layers: slice | None = None, probe: str = GRAD
    ) -> np.ndarray:
        """``(rows, n_axis)`` float32 of one quantity of ``probe`` (columns: layers for the gradient
        probe); ``rows`` may be strided (``slice(0, None, 1000)``). KeyError for an undeclared one."""
        spec = self._decl.probe(probe)
        if name not in spec.names:
            raise KeyError(f"probe {probe!r} has no quantity {name!r}; it has: {', '.join(spec.names)}")
        n = self.probe_rows(probe)
        return self._read(self._decl.probe_path(probe, name), (_clip(rows, n), layers or slice(None)))

    def probe_row_at(self, step: int, probe: str = GRAD) -> int | None:
        """Row of the last probe taken at or before ``step``, or None if there is none (or no such probe)."""
        if not self.has_probe(probe):
            return None
        path = self._decl.probe_path(probe, "step")
        with self._guard(f"/{path}"):
            row = search_steps(self._d(path), self.probe_rows(probe), step, right=True) - 1
        return row if row >= 0 else None

    def probe_row(self, row: int, probe: str = GRAD) -> tuple[int, np.ndarray]:
        """(step, ``(n_quantities, n_axis)`` float32) of one probe row."""
        spec = self._decl.probe(probe)
        step = int(self._read(self._decl.probe_path(probe, "step"), row))
        return step, np.stack([self._read(self._decl.probe_path(probe, q), row) for q in spec.names])

    def probe_at_step(self, step: int, probe: str = GRAD) -> np.ndarray:
        """``(n_quantities, n_axis)`` float32 at the last probe at or before ``step``; NaN if none
        (also for the gradient probe of a file without one: 4 quantities x the layers)."""
        row = self.probe_row_at(step, probe)
        if row is None:
            from tuitrain.events import GRAD_PROBE

            spec = self._decl.probe(probe) if self.has_probe(probe) else GRAD_PROBE
            width = self.n_layers if spec.axis == "tensor" else self._width(spec.name)
            return np.full((len(spec.quantities), width), np.nan, np.float32)
        return self.probe_row(row, probe)[1]

    def _width(self, probe: str) -> int:
        if not self.has_probe(probe):
            return 0
        spec = self._decl.probe(probe)
        return int(self._d(self._decl.probe_path(probe, spec.names[0])).shape[1])

    def epochs(self) -> dict[str, np.ndarray]:
        n = self.n_epochs
        return {k: self._read(S.path(S.EPOCHS, k), slice(0, n)) for k in S.EPOCH_FIELDS}

    def test(self) -> dict[str, float]:
        """Test-set loss/acc/time; NaN when the test never ran (live files: visible once finished)."""
        with self._guard("/test"):
            attrs = self._f[S.TEST].attrs
            return {k: float(attrs.get(k, math.nan)) for k in S.TEST_ATTRS}

    def metrics(self, scope: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The /metrics rows of ``scope`` (``step``: keys logged beyond the declared columns; ``epoch``:
        EpochEnd.metrics; ``test``: TestResult.metrics) by key, in first-seen order: (steps int64,
        epochs int32, values float64). ``{}`` for schema-1 files."""
        if scope not in S.METRIC_SCOPES:
            raise KeyError(f"unknown metrics scope {scope!r}; known: {', '.join(S.METRIC_SCOPES)}")
        n = self.n_metrics
        if not n:
            return {}
        with self._guard("/metrics"):
            return self._metrics.scope(scope, n, lambda name: self._d(S.path(S.METRICS, name)))

    def epoch_metrics(self) -> list[dict[str, float]]:
        """One dict per row of :meth:`epochs`: the EpochEnd.metrics of that epoch ({} for none)."""
        return replay.epoch_metrics(self)

    def test_metrics(self) -> dict[str, float]:
        """TestResult.metrics of the last test ({} when none was logged)."""
        return {k: float(v[2][-1]) for k, v in self.metrics("test").items()}

    def events(self) -> list[dict[str, Any]]:
        """Alerts and status changes in order: dicts with step, time, level, kind, message."""
        return tables.events(self._read, self.n_events)

    def has(self, path: str) -> bool:
        """Whether the file holds dataset ``path`` (optional columns of newer files)."""
        with self._guard(f"/{path}"):
            return path in self._f

    def final_metrics(self) -> dict[str, float | None]:
        """Last-epoch train/val metrics, test metrics and parameter count: a row of a results table.
        None where missing (no epoch yet; no test, whose time stays NaN until it runs), NaN where the
        run itself produced NaN (tuitrain.view.table shows the two differently)."""
        return replay.final_metrics(self)

    # -- back to events (tuitrain.runfile.replay) ------------------------------------------------

    def read_batches(self, start_step: int, stop_step: int) -> StepBatch:
        """The steps in ``[start_step, stop_step)`` with their probes, as one StepBatch (scalars float64).

        ``time`` is the run's start time: per-batch emit times are not stored.
        """
        with self._guard(f"steps {start_step}..{stop_step}"):
            return replay.read_batches(self, start_step, stop_step)

    def run_started(self) -> RunStarted:
        """The RunStarted event this file began with (``out_path`` is this file)."""
        return replay.run_started(self)

    def to_events(self, batch_steps: int = 1000) -> Iterator[Event]:
        """Replay the whole run through the live event vocabulary, in recorded order: RunStarted,
        StepBatches of ``batch_steps`` steps interleaved with EpochEnd/Alert/Finding/StatusChanged/Snapshot, then
        TestResult and RunFinished when the run got that far."""
        return replay.to_events(self, batch_steps)

    def first_nonfinite(self, metric: str) -> int | None:
        """The first step at which ``metric`` is NaN or Inf (the run diverged there), or None."""
        return replay.first_nonfinite(self, metric)

    def summary(self) -> dict[str, Any]:
        """Attributes, sizes, status and final metrics in one JSON-able dict (``tuitrain info``)."""
        return replay.summary(self)

    def __repr__(self) -> str:
        return f"<RunFile {str(self.path)!r} {self.status} steps={self.n_steps} layers={self.n_layers}>"


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _clip(rows: slice | None, n: int) -> slice:
    """Clip a row slice to the first ``n`` rows (the length every column of the table has)."""
    a, b, st = (rows or slice(None)).indices(n)
    if st < 1:
        raise ValueError("row slices must step forwards")
    return slice(a, max(a, b), st)
