"""Read a run file: finished, still being written, or left behind by a killed trainer.

Everything is lazy: opening reads the root attributes and checks the layout, nothing more, so the UI
can open a 1,000,000-step file in milliseconds and slice only what it draws. Opening and errors live
in :mod:`tuitrain.runfile.opening`, the check of the whole file against the schema (types, shapes,
links, the small tables) in :mod:`tuitrain.runfile.validate`, run once at open; every failure
surfaces as one :class:`RunFileError` whose message starts with the path and names the element.

Live files are opened with SWMR; :meth:`RunFile.writer_alive` tells a live writer from a killed one
when the file is on the same host. A live reader does not see root attributes change (HDF5 has no
group refresh), so the current status of a live run comes from the last status row of ``/events``,
which does refresh.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tuitrain.config import ConfigError, RunConfig, from_toml
from tuitrain.events import PROBE_NAMES, Event, LayerInfo, RunStarted, StepBatch
from tuitrain.runfile import replay
from tuitrain.runfile import schema as S
from tuitrain.runfile.opening import (
    REQUIRED,
    TABLES,
    RunFileError,
    guard,
    one_line,
    open_checked,
    open_h5,
    start_ticks,
)
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


class RunFile:
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
        self._load_attrs()
        self._live_status = self._status_from_events() if opened_swmr else None

    # -- opening and following ------------------------------------------------------------------

    def _load_attrs(self) -> None:
        # Validated against the schema once, here: every property below may trust types and ranges.
        checked = validate(self.path, self._f)
        self._attrs = checked.attrs
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
        before = (self.n_steps, self.n_probe_rows, self.n_epochs, self.n_events, self._live_status)
        with self._guard("the file while following it"):
            for p in REQUIRED[len(S.LAYER_FIELDS) :]:
                self._d(p).refresh()
            for name in S.OPTIONAL_STEP_FIELDS:
                ds = self._ds.get(S.path(S.STEPS, name))
                if ds is not None:
                    ds.refresh()
        self._live_status = self._status_from_events()
        if self._live_status in S.FINAL_STATUSES and self._attrs["status"] not in S.FINAL_STATUSES:
            self._reopen()
        return before != (self.n_steps, self.n_probe_rows, self.n_epochs, self.n_events, self._live_status)

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

    # -- liveness -------------------------------------------------------------------------------

    def writer_alive(self) -> bool | None:
        """Whether the writing process still runs: True/False on the writer's host, None elsewhere."""
        pid, host = int(self._attrs["writer_pid"]), str(self._attrs["writer_host"])
        if pid <= 0 or host != socket.gethostname():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        ticks = int(self._attrs.get("writer_start_ticks", 0))
        # A different start time means the pid was recycled by another process.
        return not (ticks and start_ticks(pid) not in (None, ticks))

    @property
    def is_live(self) -> bool:
        """A writer may still append: the file is SWMR-open, the status not final, the writer not known dead."""
        return self.opened_swmr and self.status not in S.FINAL_STATUSES and self.writer_alive() is not False

    @property
    def incomplete(self) -> bool:
        """The run never finished: its status is still live but no writer is left to finish it."""
        return self.status not in S.FINAL_STATUSES and not self.is_live

    # -- attributes -----------------------------------------------------------------------------

    def attr(self, name: str) -> Any:
        value = self._attrs[name]
        return value.item() if isinstance(value, np.generic) else value

    @property
    def status(self) -> str:
        attr = str(self._attrs["status"])
        return attr if attr in S.FINAL_STATUSES or not self._live_status else self._live_status

    schema_version = property(lambda self: int(self.attr("schema_version")))
    tuitrain_version = property(lambda self: str(self.attr("tuitrain_version")))
    run_name = property(lambda self: str(self.attr("run_name")))
    model_name = property(lambda self: str(self.attr("model_name")))
    dataset = property(lambda self: str(self.attr("dataset")))
    device = property(lambda self: str(self.attr("device")))
    params = property(lambda self: int(self.attr("params")))
    flops = property(lambda self: int(self.attr("flops")))
    config_toml = property(lambda self: str(self.attr("config_toml")))
    epochs_planned = property(lambda self: int(self.attr("epochs")))
    steps_per_epoch = property(lambda self: int(self.attr("steps_per_epoch")))
    batch_size = property(lambda self: int(self.attr("batch_size")))
    num_classes = property(lambda self: int(self.attr("num_classes")))
    started_at = property(lambda self: float(self.attr("started_at")))
    ended_at = property(lambda self: float(self.attr("ended_at")))
    error = property(lambda self: str(self.attr("error")))
    traceback = property(lambda self: str(self.attr("traceback")))
    checkpoint = property(lambda self: str(self.attr("checkpoint")))

    def optional_attr(self, name: str) -> Any:
        """A root attribute newer than some files (:data:`schema.OPTIONAL_ROOT_ATTRS`): its default there."""
        if name not in self._attrs:
            return S.OPTIONAL_ROOT_ATTRS[name]
        return self.attr(name)

    max_steps = property(lambda self: int(self.optional_attr("max_steps")))
    out_path = property(lambda self: str(self.optional_attr("out_path")))

    @property
    def total_steps(self) -> int:
        """Steps the run was planned for: epochs x steps per epoch, capped by max_steps."""
        full = self.epochs_planned * self.steps_per_epoch
        return min(full, self.max_steps) if self.max_steps else full

    @property
    def thresholds(self) -> tuple[float, float]:
        """(monitor.vanishing, monitor.exploding) the run was monitored with. Stored as attributes; a
        file from before they were has them only in its config, and failing that the schema defaults."""
        van, exp = self.optional_attr("vanishing"), self.optional_attr("exploding")
        if van is None or exp is None:
            from tuitrain.config.schema import MonitorConfig

            try:
                mon = self.config.monitor
            except RunFileError:
                mon = MonitorConfig()
            van = mon.vanishing if van is None else van
            exp = mon.exploding if exp is None else exp
        return float(van), float(exp)

    @property
    def versions(self) -> dict[str, str]:
        return dict(json.loads(self.attr("versions") or "{}"))

    @property
    def module_summary(self) -> list[dict[str, Any]]:
        return list(json.loads(self.attr("module_summary") or "[]"))

    @property
    def config(self) -> RunConfig:
        """The run's resolved config, rebuilt from the stored TOML."""
        try:
            return from_toml(self.config_toml)
        except (ConfigError, ValueError) as e:
            raise RunFileError(f"{self.path}: the stored config does not load: {one_line(e)}") from None

    @property
    def layers(self) -> list[LayerInfo]:
        cols = {n: self._read(S.path(S.LAYERS, n)) for n in S.LAYER_FIELDS}
        return [
            LayerInfo(
                name=_s(cols["name"][i]),
                shape=tuple(int(d) for d in _s(cols["shape"][i]).split("x") if d),
                numel=int(cols["numel"][i]),
                kind=_s(cols["kind"][i]),
                module=_s(cols["module"][i]),
                module_type=_s(cols["module_type"][i]),
            )
            for i in range(len(cols["name"]))
        ]

    @property
    def n_layers(self) -> int:
        return int(self._d("layers/name").shape[0])

    # -- tables ---------------------------------------------------------------------------------

    def _rows(self, group: str) -> int:
        # Under SWMR the columns of a table can be seen mid-flush at different lengths: use the shortest.
        return min(int(self._d(S.path(group, n)).shape[0]) for n in TABLES[group])

    n_steps = property(lambda self: self._rows(S.STEPS))
    n_probe_rows = property(lambda self: self._rows(S.PROBES))
    n_epochs = property(lambda self: self._rows(S.EPOCHS))
    n_events = property(lambda self: self._rows(S.EVENTS))

    @property
    def last_step(self) -> int:
        n = self.n_steps
        return int(self._read("steps/step", n - 1)) if n else int(self.attr("last_step"))

    def scalar(
        self, name: str, start: int | None = None, stop: int | None = None, stride: int = 1
    ) -> np.ndarray:
        """One /steps column (``step``, ``epoch`` or a STEP_SCALARS name) over rows ``[start, stop)``,
        every ``stride``-th row (a thinned view of a long run in one read)."""
        if name not in S.STEP_FIELDS:
            raise KeyError(f"unknown step column {name!r}; known: {', '.join(S.STEP_FIELDS)}")
        a, b, _ = slice(start, stop).indices(self.n_steps)
        return self._read(S.path(S.STEPS, name), slice(a, max(a, b), max(1, int(stride))))

    def steps(self, start: int | None = None, stop: int | None = None) -> dict[str, np.ndarray]:
        """Every /steps column over rows ``[start, stop)`` (negative values count from the end)."""
        return {n: self.scalar(n, start, stop) for n in S.STEP_FIELDS}

    def probe_steps(self, rows: slice | None = None) -> np.ndarray:
        return self._read("probes/step", _clip(rows, self.n_probe_rows))

    def probe(self, name: str, rows: slice | None = None, layers: slice | None = None) -> np.ndarray:
        """``(rows, layers)`` float32 of one probe; ``rows`` may be strided (``slice(0, None, 1000)``)."""
        if name not in PROBE_NAMES:
            raise KeyError(f"unknown probe {name!r}; known: {', '.join(PROBE_NAMES)}")
        return self._read(S.path(S.PROBES, name), (_clip(rows, self.n_probe_rows), layers or slice(None)))

    def probe_row_at(self, step: int) -> int | None:
        """Row of the last probe taken at or before ``step``, or None if there is none."""
        with self._guard("/probes/step"):
            row = replay.search_steps(self._d("probes/step"), self.n_probe_rows, step, right=True) - 1
        return row if row >= 0 else None

    def probe_at_step(self, step: int) -> np.ndarray:
        """``(len(PROBE_NAMES), L)`` float32 at the last probe at or before ``step``; NaN if none."""
        row = self.probe_row_at(step)
        if row is None:
            return np.full((len(PROBE_NAMES), self.n_layers), np.nan, np.float32)
        return np.stack([self._read(S.path(S.PROBES, n), row) for n in PROBE_NAMES])

    def epochs(self) -> dict[str, np.ndarray]:
        n = self.n_epochs
        return {k: self._read(S.path(S.EPOCHS, k), slice(0, n)) for k in S.EPOCH_FIELDS}

    def test(self) -> dict[str, float]:
        """Test-set loss/acc/time; NaN when the test never ran (live files: visible once finished)."""
        with self._guard("/test"):
            attrs = self._f[S.TEST].attrs
            return {k: float(attrs.get(k, math.nan)) for k in S.TEST_ATTRS}

    def events(self) -> list[dict[str, Any]]:
        """Alerts and status changes in order: dicts with step, time, level, kind, message."""
        n = self.n_events
        cols = {k: self._read(S.path(S.EVENTS, k), slice(0, n)) for k in S.EVENT_FIELDS}
        return [
            {
                "step": int(cols["step"][i]),
                "time": float(cols["time"][i]),
                "level": _s(cols["level"][i]),
                "kind": _s(cols["kind"][i]),
                "message": _s(cols["message"][i]),
            }
            for i in range(n)
        ]

    def has(self, path: str) -> bool:
        """Whether the file holds dataset ``path`` (optional columns of newer files)."""
        with self._guard(f"/{path}"):
            return path in self._f

    def final_metrics(self) -> dict[str, float | None]:
        """Last-epoch train/val metrics, test metrics and parameter count: a row of a results table.
        None where missing (no epoch yet; no test, whose time stays NaN until it runs), NaN where the
        run itself produced NaN (tuitrain.view.table shows the two differently)."""
        ep = self.epochs()
        last = {k: float(v[-1]) if len(v) else None for k, v in ep.items()}
        t: dict[str, float | None] = dict(self.test())
        if not math.isfinite(t.get("time") or math.nan):  # the test never ran
            t = {k: None for k in t}
        return {
            "train_loss": last["train_loss"],
            "val_loss": last["val_loss"],
            "train_acc": last["train_acc"],
            "val_acc": last["val_acc"],
            "test_loss": t["loss"],
            "test_acc": t["acc"],
            "params": float(self.params),
        }

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
        StepBatches of ``batch_steps`` steps interleaved with EpochEnd/Alert/StatusChanged, then
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
