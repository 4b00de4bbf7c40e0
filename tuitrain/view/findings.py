"""The findings a dashboard knows of one run: every Finding event as it arrived (a finding is sent when
it opens and once more when it closes), the current state of each, which of them are new since the
Diagnosis panel last drew, and which held at a given step (the replay cursor).

Textual-free and torch-free: :class:`~tuitrain.ui.history.History` holds one and feeds it the Finding
events of the live stream or of a run file; the panel, the header, the event log and the chart read it.
The ranking (open first, worst first, newest first) is :func:`tuitrain.diagnosis.finding.current`'s,
never a second sort here."""

from __future__ import annotations

from collections import deque

import tomllib

from tuitrain.diagnosis.finding import current
from tuitrain.events import Finding, RunStarted

ROW_CAP = 10_000  # rows kept (a flapping rule is closed, not repeated, so a run has few)
WARN = ("error", "warning")  # the severities the header, the chart marks and the chip count


class FindingsStore:
    """What the dashboard knows about one run's findings.

    ``rows`` are the Finding events in arrival order (bounded); :attr:`current` is the latest state per
    :attr:`Finding.key`, ranked. :meth:`at` answers "what held at this step, as far as it was known
    then" for the time cursor. ``total`` counts rows ever added and ``drawn`` is ``total`` when the
    Diagnosis panel last drew on screen: the rows after it are *news* (the header asks the user to
    press ``d`` for them)."""

    def __init__(self, cap: int = ROW_CAP) -> None:
        self.rows: deque[Finding] = deque(maxlen=cap)
        self.total = 0
        self.drawn = 0
        self._latest: dict[tuple[str, str, int], tuple[int, Finding]] = {}  # key -> (row number, state)
        self._current: list[Finding] | None = None
        self._at: tuple[int, int, list[Finding]] | None = None  # (step, total, answer)
        # Whether the source holds findings at all: None live (the training process sends them) or
        # unknown; False for a run file that declares no findings table (written before diagnosis).
        self.stored: bool | None = None
        self.off = False  # the run's config says monitor.diagnose_seconds = 0 (no live diagnosis)
        self.no_probes = False  # the run records no probes: only the loss rules can find anything

    # -- feeding ---------------------------------------------------------------------------------

    def configure(self, run: RunStarted) -> None:
        """Read what the run says about its diagnosis: off (``monitor.diagnose_seconds = 0`` in a
        preset's config) and whether it has probes. A user loop's config says nothing: not off."""
        self.no_probes = not run.probes
        try:
            monitor = tomllib.loads(run.config_toml).get("monitor", {}) if run.config_toml else {}
            self.off = float(monitor.get("diagnose_seconds", 1.0)) == 0.0
        except (tomllib.TOMLDecodeError, TypeError, ValueError, AttributeError):
            self.off = False

    def add(self, f: Finding) -> None:
        self.rows.append(f)
        self._latest[f.key] = (self.total, f)
        self.total += 1
        self._current = None

    def mark_drawn(self) -> None:
        """The Diagnosis panel showed everything up to now."""
        self.drawn = self.total

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._latest)

    @property
    def current(self) -> list[Finding]:
        """The latest state of every finding, open first, worst first, newest first."""
        if self._current is None:
            self._current = current(f for _, f in self._latest.values())
        return self._current

    def news(self) -> list[Finding]:
        """The findings (current state) whose latest row arrived after the panel last drew, ranked."""
        fresh = {f.key for n, f in self._latest.values() if n >= self.drawn}
        return [f for f in self.current if f.key in fresh]

    def unseen(self) -> list[Finding]:
        """Open warnings and errors the panel has not shown yet (what the header points at)."""
        return [f for f in self.news() if f.is_open and f.severity in WARN]

    def open(self, severities: tuple[str, ...] = WARN) -> list[Finding]:
        """The open findings of ``severities`` now, ranked."""
        return [f for f in self.current if f.is_open and f.severity in severities]

    def at(self, step: int) -> list[Finding]:
        """The findings known by ``step`` (``at_step <= step``, or found offline: ``at_step == -1``),
        in the last state known then, that held at ``step``; ranked. Needs the rows kept (all of them
        unless a run sent more than ``cap``)."""
        got = self._at
        if got is not None and got[0] == step and got[1] == self.total:
            return got[2]
        known = (f for f in self.rows if f.at_step <= step)  # -1 (offline) is always known
        answer = [f for f in current(known) if f.holds_at(step)]
        self._at = (step, self.total, answer)
        return answer

    def shown(self, cursor: int | None) -> list[Finding]:
        """What a view shows: the current state (``cursor`` None: the latest), else :meth:`at`."""
        return self.current if cursor is None else self.at(cursor)

    def first_steps(self, lo: float, hi: float, severities: tuple[str, ...] = WARN) -> list[tuple[int, str]]:
        """(first_step, severity) of every finding of ``severities`` that began inside [lo, hi], one per
        step (the worst there), for the chart's marks."""
        out: dict[int, str] = {}
        for f in reversed(self.current):  # ranked worst first: the worst at a step is written last
            if f.severity in severities and lo <= f.first_step <= hi:
                out[f.first_step] = f.severity
        return sorted(out.items())
