"""What the Images screen (key ``i``) remembers of a run's snapshots (issue 12).

A run declares its snapshots up front (``RunStarted.snapshots``: first-layer kernels, Mixer token mixing,
the 2-D decision boundary, the test points, the misclassified samples; see
:mod:`tuitrain.train.snapshots`), then sends Snapshot events: live through the queue as the engine takes
them, in a replay from the run file (:class:`tuitrain.ui.replay.file_source.FileSource`). They are small
and bounded by the spec's ``max_rows`` (the run's ``monitor.snapshot_mb``), so the history keeps every
row in memory: no file lookups are needed for the replay cursor.

Per spec the rows are kept by arrival: an "epoch" spec's events append (one per epoch row, at init
``epoch`` -1); a "start"/"end" spec's latest event IS the whole snapshot (a file source sends it again,
whole, when a live file gains rows), so it replaces the one before. What the screen shows at a step is
the last row at or before it (:meth:`SnapshotHistory.at`; None: the latest). No textual, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tuitrain.events import RunStarted, Snapshot, SnapshotSpec
from tuitrain.view.images import snapshot_at

# Why the screen is empty, one line each (the ways each comes about).
NO_SNAPSHOTS_FILE = (
    "this run file holds no snapshots: files written before tuitrain took them have none, "
    "monitor.snapshot_mb = 0 turns them off, and a loop of your own takes none"
)
NO_SNAPSHOTS_LIVE = (
    "this run takes no snapshots: monitor.snapshot_mb = 0 turns them off, and a loop of your own "
    "(run.watch) takes none; the presets' engine takes them"
)
WAITING_START = "waiting for the run to start"
WAITING_ROWS = "waiting for the first snapshot (taken at init, at each epoch's end and at the end)"


@dataclass
class SnapshotRow:
    """One shown snapshot: its spec, when it was taken and its arrays (``(m, *field.shape)`` each)."""

    spec: SnapshotSpec
    epoch: int  # -1: at init
    step: int
    arrays: dict[str, np.ndarray]
    index: int = 0  # its position among the spec's rows
    count: int = 1  # rows the spec has now

    @property
    def at_init(self) -> bool:
        return self.epoch < 0

    def when(self) -> str:
        """ "at init · step 0", "epoch 3 · step 120" (epochs counted from 1, as the dashboard does:
        the row of the 0-based ``epoch`` 2 was taken when the third epoch ended)."""
        if self.at_init:
            return f"at init · step {self.step:,}"
        return f"epoch {self.epoch + 1} · step {self.step:,}"


@dataclass
class SnapshotSeries:
    """The rows of one spec so far: ``epoch`` / ``step`` arrays (what
    :func:`tuitrain.view.images.snapshot_at` reads) and each row's arrays."""

    spec: SnapshotSpec
    rows: list[Snapshot] = field(default_factory=list)

    @property
    def epoch(self) -> np.ndarray:
        return np.array([r.epoch for r in self.rows], dtype=np.int32)

    @property
    def step(self) -> np.ndarray:
        return np.array([r.step for r in self.rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def index_at(self, step: int | None) -> int | None:
        """Index of the last row with step <= ``step`` (None: the latest), or None before the first."""
        if not self.rows:
            return None
        if step is None:
            return len(self.rows) - 1
        return snapshot_at(self, int(step))  # rows arrive in step order (the report's rule too)


class SnapshotHistory:
    """The snapshots of one run. :meth:`start` at RunStarted, :meth:`feed` per Snapshot event."""

    def __init__(self) -> None:
        self.started = False
        self.specs: dict[str, SnapshotSpec] = {}
        self.series: dict[str, SnapshotSeries] = {}
        self.skipped = 0  # events of a name the run did not declare, or beyond its max_rows
        self.version = 0  # bumped by every change: the screen keys its cache on it

    def start(self, run: RunStarted) -> None:
        self.started = True
        self.specs = {s.name: s for s in run.snapshots}
        self.series = {name: SnapshotSeries(spec) for name, spec in self.specs.items()}
        self.version += 1

    def feed(self, ev: Snapshot) -> None:
        series = self.series.get(ev.name)
        if series is None or not ev.rows:
            self.skipped += 1
            return
        if series.spec.when != "epoch":
            series.rows = [ev]  # the latest event of a start/end spec is the whole snapshot
        elif len(series.rows) >= max(1, series.spec.max_rows):
            self.skipped += 1  # the writer drops rows beyond the cap too
            return
        else:
            series.rows.append(ev)
        self.version += 1

    # -- reading ---------------------------------------------------------------------------------

    @property
    def has_specs(self) -> bool:
        """Whether the run declares snapshots (True until RunStarted says otherwise)."""
        return not self.started or bool(self.specs)

    @property
    def n_rows(self) -> int:
        return sum(len(s) for s in self.series.values())

    def names(self) -> tuple[str, ...]:
        """The declared snapshots, in the run's order."""
        return tuple(self.specs)

    def at(self, name: str, step: int | None) -> SnapshotRow | None:
        """The row of ``name`` shown at ``step`` (None: the latest): the last at or before it."""
        series = self.series.get(name)
        if series is None:
            return None
        i = series.index_at(step)
        if i is None:
            return None
        ev = series.rows[i]
        return SnapshotRow(series.spec, ev.epoch, ev.step, ev.arrays, i, len(series))

    def first_step(self, name: str) -> int | None:
        series = self.series.get(name)
        return series.rows[0].step if series is not None and series.rows else None

    def why_empty(self, replay: bool) -> str:
        """One line on why nothing is shown ("" when there is something)."""
        if not self.started:
            return WAITING_START
        if not self.specs:
            return NO_SNAPSHOTS_FILE if replay else NO_SNAPSHOTS_LIVE
        if not self.n_rows:
            return WAITING_ROWS
        return ""
