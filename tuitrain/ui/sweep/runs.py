"""The runs of a sweep folder as the app's :class:`~tuitrain.ui.replay.runs.RunSet`: one slot per variant,
in manifest order, from the start, so colours, ``r`` and the table rows never reshuffle.

A variant whose run file does not exist yet (queued, or failed before it made one) holds a
:class:`PendingSource` that delivers nothing and an empty history; the table shows its manifest status.
When its file appears and opens, :meth:`SweepRuns.poll` (called ~1/s from the app's folder worker, off
the UI thread: opening an HDF5 file is file I/O) returns a :class:`~tuitrain.ui.replay.file_source.FileSource`
following it and a history backed by it; the app puts both into the slot (:meth:`RunSet.attach`) and
starts the source. **The run file owns its status**: once a variant's file is open its status is the
history's (fed from the file's events), before that the manifest's (:mod:`tuitrain.sweep.manifest`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuitrain.sweep.manifest import STARTING, Manifest, ManifestError, load, variant_path
from tuitrain.ui.history import History
from tuitrain.ui.replay.file_source import FileSource
from tuitrain.ui.replay.runs import RunSet, RunSlot
from tuitrain.ui.source import MessageTarget, Source

NO_FINDING = "-"


class PendingSource(Source):
    """The source of a variant without a run file yet: delivers nothing, until replaced."""

    live = False
    description = "queued"

    def start(self, target: MessageTarget) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Opened:
    """A variant's run file, opened: the slot index, its source (not started) and its history."""

    index: int
    source: FileSource
    history: History


def file_history(source: FileSource) -> History:
    """A history that looks steps up in ``source``'s file, as ``tuitrain replay`` builds it."""
    history = History(clock=time.time)
    history.backing = source
    history.row_stride = float(source.step_stride)
    history.findings.stored = source.rf.has_findings
    return history


class SweepRuns:
    """The sweep folder, its latest manifest and the run set the app shows."""

    def __init__(self, folder: Path, poll_seconds: float = 0.25) -> None:
        self.folder = Path(folder)
        self.manifest: Manifest = load(self.folder)  # ManifestError: not a sweep folder
        if not self.manifest.variants:
            raise ManifestError(f"{self.folder}: the sweep manifest lists no variants.")
        self.poll_seconds = poll_seconds  # each FileSource's SWMR refresh
        slots = [
            RunSlot(PendingSource(), History(clock=time.time), name=v.name, path=str(variant_path(v, folder)))
            for v in self.manifest.variants
        ]
        self.runs = RunSet(slots)
        self.opened: set[int] = set()  # slots whose file is open (the app attached its source)
        self.claimed: set[int] = set()  # slots poll() opened a file for (attached or on their way)
        self.waiting: set[int] = set()  # a file exists but does not open yet (just created)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.manifest.variants]

    def poll(self) -> tuple[Manifest | None, list[Opened]]:
        """One look at the folder (worker thread): the manifest if it changed (None otherwise) and the
        run files that appeared and opened since the last look. Touches no slot: the app does that."""
        changed: Manifest | None = None
        try:
            m = load(self.folder)
            if m.to_json() != self.manifest.to_json() and len(m.variants) == len(self.manifest.variants):
                changed = m
        except ManifestError:
            m = self.manifest  # being replaced or gone: keep what was read last
        opened: list[Opened] = []
        for i, v in enumerate(m.variants):
            if i in self.claimed:
                continue
            path = variant_path(v, self.folder)
            if not path.is_file():
                self.waiting.discard(i)
                continue
            try:
                source = FileSource(path, follow=True, poll_seconds=self.poll_seconds)
            except Exception:  # noqa: BLE001 - a file mid-creation fails in many ways: try next time
                self.waiting.add(i)
                continue
            self.waiting.discard(i)
            self.claimed.add(i)
            opened.append(Opened(i, source, file_history(source)))
        return changed, opened

    def attach(self, item: Opened) -> None:
        """Put an opened file's source and history into its slot (UI thread; the app starts it)."""
        self.runs.attach(item.index, item.source, item.history)
        self.opened.add(item.index)

    # -- what the table shows --------------------------------------------------------------------

    def status(self, i: int) -> str:
        """The variant's status: its run file's (the history's) once open, else the manifest's."""
        if i in self.opened:
            return self.runs[i].history.status
        if i in self.waiting:
            return STARTING
        return self.manifest.variants[i].status

    @property
    def statuses(self) -> list[str]:
        return [self.status(i) for i in range(len(self.runs))]

    def worst_finding(self, i: int) -> str:
        """The kind and layer of the variant's highest-ranked open finding, ``-`` when none."""
        if i not in self.opened:
            return NO_FINDING
        return worst_finding(self.runs[i].history)

    @property
    def findings(self) -> list[str]:
        return [self.worst_finding(i) for i in range(len(self.runs))]

    def is_over(self) -> bool:
        """Every variant finished (its file, or the manifest for one that never made a file)."""
        return all(s in FINISHED for s in self.statuses)


FINISHED: Sequence[str] = ("completed", "stopped", "failed", "incomplete")


def worst_finding(history: History) -> str:
    """``kind layer`` of the first open finding in the diagnosis ranking (worst, newest), or ``-``."""
    top = next((f for f in history.findings.current if f.is_open), None)
    if top is None:
        return NO_FINDING
    return f"{top.kind} {top.layer}".strip()
