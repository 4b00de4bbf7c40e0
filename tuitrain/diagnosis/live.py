"""Live diagnosis: the rules of :mod:`tuitrain.diagnosis` run over a run while it trains, and the
findings they find are sent on as events (to the run file, the dashboard, the console).

:class:`Diagnosed` wraps a run's sinks. It forwards every event to them unchanged and in order, and
keeps the run so far as a :class:`~tuitrain.diagnosis.data.RunData` in bounded memory (the same data
``tuitrain diagnose`` builds from the finished file, so the last pass finds what ``diagnose`` finds).
About every ``seconds`` it runs every rule and sends the findings that changed since the last pass: a
new one when it opens, a known one when it closes (the same key, now with ``last_step``), so a
finding that stops holding is closed, not repeated.

The rules run in the training loop's thread, between steps, so their cost is the run's cost: a pass
waits at least 100 times the last pass's duration (at most ~1% of wall time, however long the run
gets), and never raises into the loop: a rule that fails is skipped and said once on stderr (the
training log). Numpy only, like the rules."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tuitrain.diagnosis.data import RunData
from tuitrain.diagnosis.engine import RULES
from tuitrain.diagnosis.finding import Finding, Skipped, current
from tuitrain.diagnosis.sofar import RunSoFar
from tuitrain.events import EpochEnd, Event, RunFinished, RunStarted, Sink, StepBatch

COST_FACTOR = 100.0  # the next pass waits at least this many times the last pass's duration: <= ~1%

Rule = Callable[[RunData], list[Finding]]


def _overlap(a: Finding, b: Finding) -> bool:
    """Whether two episodes of a condition share a step (an open one lasts to the end)."""
    inf = np.iinfo(np.int64).max
    a_end = inf if a.last_step is None else a.last_step
    b_end = inf if b.last_step is None else b.last_step
    return a.first_step <= b_end and b.first_step <= a_end


class Findings:
    """The findings sent so far (the latest state of each, by key) and the diff of a new pass against
    them. A pass's finding is the same finding as a sent one of the same kind and layer when it has the
    same first step or, failing that, when their episodes overlap (first steps move when a rolling
    window grows or the rows get thinned): it keeps the sent one's key. Pure: no events, no time."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, str, int], Finding] = {}
        self.last_at = -1  # the step of the last pass
        self.held = 0  # new findings the last pass kept for the final one

    def diff(
        self, found: Iterable[Finding], at_step: int, frozen: Iterable[str] = (), final: bool = False
    ) -> list[Finding]:
        """The findings to send after a pass that found ``found`` at ``at_step``: new ones (opened, or
        opened and closed since the last pass), known open ones now closed (or gone: closed at
        ``at_step``), known closed ones open again, and open ones whose severity changed. Sent findings
        of a kind in ``frozen`` (its rule failed this pass) stay as they are.

        A new finding that had already ended by the last pass, which did not see it, is an artifact of
        a window that grew (plateau's is a tenth of the run) more often than news: it waits for the
        ``final`` pass, which sends every finding it finds, so the run ends with what ``diagnose`` finds."""
        frozen = set(frozen)
        before, held = self.last_at, 0
        sent = dict(self.sent)  # updated at the end only: an interrupted diff leaves no trace
        groups: dict[tuple[str, str], list[Finding]] = {}
        for f in found:
            groups.setdefault((f.kind, f.layer), []).append(f)
        by_group: dict[tuple[str, str], list[Finding]] = {}
        for e in sent.values():
            by_group.setdefault((e.kind, e.layer), []).append(e)
        out: list[Finding] = []
        matched: set[tuple[str, str, int]] = set()
        for group, fs in groups.items():
            fs.sort(key=lambda f: f.first_step)
            known = sorted(by_group.get(group, []), key=lambda e: e.first_step)
            pairs: list[tuple[Finding, Finding | None]] = []
            rest: list[Finding] = []
            for f in fs:  # the same key first
                if f.key in sent and f.key not in matched:
                    matched.add(f.key)
                    pairs.append((f, sent[f.key]))
                else:
                    rest.append(f)
            for f in rest:  # then the first unmatched sent episode that overlaps it
                e = next((e for e in known if e.key not in matched and _overlap(e, f)), None)
                if e is not None:
                    matched.add(e.key)
                elif f.key in sent:  # a second finding of one key in a pass: the same finding
                    continue
                pairs.append((f, e))
            for f, e in pairs:
                if e is None:
                    if not final and f.last_step is not None and f.last_step < before:
                        held += 1
                        continue
                    new = dataclasses.replace(f, at_step=at_step)
                    out.append(new)
                    sent[new.key] = new
                    matched.add(new.key)
                    continue
                new = dataclasses.replace(f, first_step=e.first_step, at_step=at_step)
                if new.last_step is not None and new.last_step < new.first_step:
                    new = dataclasses.replace(new, last_step=new.first_step)
                if e.is_open != new.is_open or (e.is_open and e.severity != new.severity):
                    out.append(new)
                    sent[e.key] = new
        for key, e in list(sent.items()):
            if e.is_open and key not in matched and e.kind not in frozen:
                new = dataclasses.replace(e, last_step=max(at_step, e.first_step), at_step=at_step)
                out.append(new)
                sent[key] = new
        self.sent, self.last_at, self.held = sent, at_step, held
        return out


class Diagnosed:
    """A sink that forwards every event to ``sinks`` and diagnoses the run as it goes (module docstring).

    ``window``: the steps a condition must last (``monitor.alert_steps``); ``seconds``: the least time
    between two passes (``monitor.diagnose_seconds``). A pass also runs at each EpochEnd (when the cost
    rule allows) and, always, right before RunFinished is forwarded (:meth:`conclude`)."""

    def __init__(
        self,
        sinks: list[Sink],
        window: int,
        seconds: float,
        *,
        rules: dict[str, Rule] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.sinks = sinks
        self.window = int(window)
        self.seconds = float(seconds)
        self.rules = RULES if rules is None else rules
        self.clock = clock
        self.run: RunSoFar | None = None
        self.findings = Findings()
        self.passes = 0
        self.cost = 0.0  # seconds of the last pass
        self.spent = 0.0  # seconds in all passes
        self._next = 0.0  # no pass before this clock time
        self._last_end = 0.0  # when the last pass ended
        self._dirty = False  # events arrived since the last pass
        self._reported: set[str] = set()
        self.closing: list[Finding] = []  # a resumed run's findings left open, closed at RunStarted
        self._off = False  # live diagnosis broke (a bug here, not in a rule): forward only

    # -- the Sink protocol ------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Forward ``event``; then, past a StepBatch or an EpochEnd, maybe a pass, whose findings are
        forwarded after the event (``at_step`` is the last step seen). Before a RunFinished: the last
        pass. Only the inner sinks' own errors come out of here, as they would without this wrapper."""
        if isinstance(event, RunFinished):
            self.conclude()
        for sink in self.sinks:
            sink.emit(event)
        if self._off or isinstance(event, RunFinished):
            return
        try:
            changes = self._take(event)
        except Exception as e:  # noqa: BLE001 - never into the training loop
            self._broke(e)
            return
        self._send(changes)

    def close(self) -> None:
        """Close every inner sink; the first failure is raised once all were tried."""
        error: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001 - raised below, after the others closed
                error = error or e
        if error is not None:
            raise error

    def conclude(self) -> None:
        """The last pass, on the final state (if anything arrived since the previous one), its findings
        sent before the run's end: the run file's findings are then what ``tuitrain diagnose`` finds."""
        if self._off or self.run is None or not (self._dirty or self.findings.held):
            return
        try:
            changes = self._pass(final=True)
        except Exception as e:  # noqa: BLE001 - never into the training loop
            self._broke(e)
            return
        self._send(changes)

    # -- inside -----------------------------------------------------------------------------
    def _take(self, event: Event) -> list[Finding]:
        if isinstance(event, RunStarted):
            self.run = RunSoFar(event, self.window)
            self.findings = Findings()
            self._next = self.clock() + self.seconds
            closing, self.closing = self.closing, []
            return closing
        if self.run is None:
            return []
        if isinstance(event, StepBatch) and len(event):
            self.run.add(event)
            self._dirty = True
            if self.clock() >= self._next:
                return self._pass()
        elif isinstance(event, EpochEnd):
            self.run.add_epoch(event)
            self._dirty = True
            if self.clock() >= self._last_end + COST_FACTOR * self.cost:  # each epoch, within 1%
                return self._pass()
        return []

    def _pass(self, final: bool = False) -> list[Finding]:
        """Every rule over the run so far; the findings that changed."""
        run = self.run
        assert run is not None
        if run.steps.n == 0:
            return []
        t0 = self.clock()
        data = run.data()
        found: list[Finding] = []
        failed: set[str] = set()
        for name, rule in self.rules.items():
            try:
                with warnings.catch_warnings():  # all-NaN slices (a NaN run) are data, not a fault
                    warnings.simplefilter("ignore", RuntimeWarning)
                    found.extend(rule(data))
            except Skipped:
                pass
            except Exception as e:  # noqa: BLE001 - a rule's bug skips that rule, not the run
                failed.add(name)
                self._report(f"diagnosis rule {name}", e, "skipped")
        changes = self.findings.diff(found, max(run.last_step, 0), failed, final)
        end = self.clock()
        self.cost, self.spent, self.passes = end - t0, self.spent + end - t0, self.passes + 1
        self._last_end = end
        self._next = end + max(self.seconds, COST_FACTOR * self.cost)
        self._dirty = False
        return changes

    def _send(self, changes: list[Finding]) -> None:
        for f in changes:
            for sink in self.sinks:
                sink.emit(f)

    def _broke(self, e: BaseException) -> None:
        self._off = True
        self._report("live diagnosis", e, "it is off for the rest of this run")

    def _report(self, what: str, e: BaseException, then: str) -> None:
        if what in self._reported:
            return
        self._reported.add(what)
        with contextlib.suppress(Exception):  # no stderr left: nobody else to tell
            print(
                f"tuitrain: {what} failed ({type(e).__name__}: {e}); {then}; the run goes on, and"
                " `tuitrain diagnose RUN.h5` recomputes the findings from the run file",
                file=sys.stderr,
                flush=True,
            )


def wrap(sinks: list[Sink], monitor: Any) -> list[Sink]:
    """``sinks`` wrapped in one :class:`Diagnosed` when ``monitor.diagnose_seconds > 0`` (``monitor``
    is the run's MonitorConfig: its ``alert_steps`` is the rules' window), else ``sinks`` as they are.
    No sinks (a data-parallel rank other than 0): nothing to diagnose for."""
    seconds = float(getattr(monitor, "diagnose_seconds", 0.0))
    if seconds <= 0 or not sinks:
        return sinks
    return [Diagnosed(list(sinks), int(monitor.alert_steps), seconds)]


def resumed(sinks: Iterable[Sink], prior: Iterable[Finding], last_step: int) -> None:
    """A resumed run goes on in a file whose findings (``prior``) may have been left open at its last
    step ``last_step``: each :class:`Diagnosed` closes them there when the run starts again. It sees only
    the continuation's steps and finds again what still holds, from the continuation's first step; the
    file then never shows a finding open twice, nor one open forever that nobody looks at any more."""
    still = [f for f in current(prior) if f.is_open]
    for s in sinks:
        if isinstance(s, Diagnosed):
            s.closing = [
                dataclasses.replace(f, last_step=max(last_step, f.first_step), at_step=last_step)
                for f in still
            ]


def inner(sinks: Iterable[Sink]) -> list[Sink]:
    """The sinks themselves, out of any :class:`Diagnosed` around them: for code that looks for one
    kind of sink among a run's (the run-file writer) or must treat them one by one (the run's end)."""
    out: list[Sink] = []
    for s in sinks:
        out.extend(inner(s.sinks) if isinstance(s, Diagnosed) else [s])
    return out


def concluded(sinks: Iterable[Sink]) -> list[Sink]:
    """Each :class:`Diagnosed`'s last pass (its findings sent on), then :func:`inner`: what the run's
    end (tuitrain.train.ending.finish) does before it delivers RunFinished to the sinks one by one."""
    sinks = list(sinks)
    for s in sinks:
        if isinstance(s, Diagnosed):
            with contextlib.suppress(Exception):  # a sink that failed says so again at RunFinished
                s.conclude()
    return inner(sinks)
