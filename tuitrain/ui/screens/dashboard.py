"""The main screen: header, cursor bar (replay), loss/accuracy chart, per-layer gradient bars, update
sparklines, events, diagnosis (``d`` puts it in the events' place; from 36 rows both show).

Layout lives in app.tcss; this screen only sets size classes on resize (``-narrow``/``-wide``,
``-short``/``-tall``) so the stylesheet can rearrange the panels: at 80x24 the chart and the bars
share the screen and the events are compressed, at 200x60 everything is visible.
"""

from __future__ import annotations

import time

from textual import events
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Footer

from tuitrain.ui.history import History
from tuitrain.ui.screens.base import DataScreen
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.cursor_bar import CursorBar
from tuitrain.ui.widgets.diagnosis_panel import DiagnosisPanel
from tuitrain.ui.widgets.event_log import EventLog
from tuitrain.ui.widgets.grad_bars import GradBars
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.loss_plot import LossPanel
from tuitrain.ui.widgets.update_sparklines import UpdateSparklines

# seconds between data refreshes while streaming (times the CPU governor's factor), and the most that
# factor may stretch them to: the newest step is on screen within 0.5 s however loaded the process
PACE = {RunHeader: 0.1, EventLog: 0.25, DiagnosisPanel: 0.25, GradBars: 0.5, UpdateSparklines: 1.0}
STALE = {RunHeader: 0.5, EventLog: 1.0, DiagnosisPanel: 1.0, GradBars: 1.0, UpdateSparklines: 2.0}
WIDE = 120  # columns from which the sparklines get their own column
TALL = 36  # rows from which the event log gets room


def size_classes(width: int, height: int) -> tuple[str, str]:
    return ("-wide" if width >= WIDE else "-narrow", "-tall" if height >= TALL else "-short")


class DashboardScreen(DataScreen):
    def compose(self) -> ComposeResult:
        self.header, self.loss = RunHeader(id="header"), LossPanel(id="loss")
        self.cursor_bar = CursorBar(id="cursor")
        self.diagnosis = DiagnosisPanel(id="diagnosis")  # the event log's place at 80x24 (key d)
        self.paced = (
            self.header,
            EventLog(id="events"),
            GradBars(id="grads"),
            UpdateSparklines(id="updates"),
        )
        yield self.header
        yield self.cursor_bar
        with Container(id="main"):
            yield self.loss
            yield self.paced[2]
            yield self.paced[3]
            yield self.diagnosis
            yield self.paced[1]
        yield Footer()

    def on_mount(self) -> None:
        self._apply_size(self.app.size.width, self.app.size.height)

    def on_resize(self, event: events.Resize) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        w, h = size_classes(width, height)
        for cls in ("-wide", "-narrow", "-tall", "-short"):
            self.set_class(cls in (w, h), cls)

    def refresh_data(
        self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0
    ) -> bool:
        """The header follows every tick; the other panels are paced (a 200x60 repaint of all of
        them at 10 Hz would cost a third of a core) and staggered: the bars, the sparklines, the
        event log (when it has news) and a chart rebuild each get a frame of their own, the most
        overdue first, so that no frame pays for two of them (several at once made the slow
        frames). A key press (``force``) redraws everything at once."""
        deferred = False
        self.set_class(view.diagnosis, "-diagnosis")
        if self.show_cursor_bar(view):
            self.cursor_bar.update_data(history, view)
        header, events, grads, updates = self.paced
        if self.due(header, self.interval(header, pace), force):
            header.update_data(history, view)
        else:
            deferred = True
        runs = self.overlay()
        # the one big panel of this frame: the most overdue of those due
        now = time.monotonic()
        panels = (grads, updates, events, self.diagnosis)
        news = {events: events.has_news(history), self.diagnosis: self.diagnosis.has_news(history, view)}
        due = [
            (self.due_at(w), i, w)
            for i, w in enumerate(panels)
            if w.display and self.due_at(w) <= now and news.get(w, True)
        ]
        chart_due = self.loss.build_due(history, view, runs)
        if chart_due is not None and chart_due <= now:
            due.append((chart_due, len(panels), self.loss))
        first = min(due)[2] if due else None
        drawn = history.findings.drawn
        for widget in panels:
            if force or widget is first:
                self.due(widget, self.interval(widget, pace), force=True)
                widget.update_data(history, view)
            elif widget.display:
                deferred = True
        if history.findings.drawn != drawn:  # the panel showed new findings: the header stops pointing
            header.update_data(history, view)
        deferred |= self.loss.update_data(
            history, view, force=force, pace=pace, runs=runs, build=first is self.loss
        )
        return deferred or len(due) > 1

    @staticmethod
    def interval(widget: object, pace: float) -> float:
        """Seconds until ``widget``'s next refresh: its pace times the governor's, within its staleness cap."""
        return min(STALE[type(widget)], PACE[type(widget)] * pace)
