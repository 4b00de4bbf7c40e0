"""The Signal view (key ``v``, ``v``/escape back): the forward signal of the run, per probed module from
input to output. Header, cursor bar (replay), the bars of one probed step (activation std as log bars,
dead and saturated fractions: :mod:`tuitrain.ui.widgets.signal_bars`) and the modules x time heatmap of
activation std (:mod:`tuitrain.ui.widgets.signal_map`), footer. Stacked at 80x24 (they scroll
together, a module per row in both); side by side from :data:`WIDE` columns. Live it shows the latest
probed step, with the time cursor the row at the cursor."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Footer

from tuitrain.ui.history import History
from tuitrain.ui.screens.base import DataScreen
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.cursor_bar import CursorBar
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.signal_bars import SignalPanel
from tuitrain.ui.widgets.signal_map import SignalMapPanel

WIDE = 160  # columns from which the bars and the heatmap stand side by side


class SignalScreen(DataScreen):
    DEFAULT_CSS = """
    SignalScreen { layout: vertical; }
    SignalScreen #signal-main { layout: vertical; height: 1fr; }
    SignalScreen.-wide #signal-main { layout: horizontal; }
    SignalScreen.-wide #signal-main > SignalPanel { width: 1fr; height: 1fr; }
    SignalScreen.-wide #signal-main > SignalMapPanel { width: 1fr; height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        self.cursor_bar = CursorBar(id="cursor")
        self.header = RunHeader(id="header")
        self.bars = SignalPanel(id="signal")
        self.map = SignalMapPanel(id="signal-map")
        yield self.header
        yield self.cursor_bar
        with Container(id="signal-main"):
            yield self.bars
            yield self.map
        yield Footer()

    def on_mount(self) -> None:
        self.set_class(self.app.size.width >= WIDE, "-wide")
        # one module per row in both panels: scrolling either scrolls the other to the same modules
        bars, rows = self.bars.bars, self.map.rows
        self.watch(bars, "scroll_y", lambda y: rows.scroll_to(y=y, animate=False), init=False)
        self.watch(rows, "scroll_y", lambda y: bars.scroll_to(y=y, animate=False), init=False)

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")

    def refresh_data(
        self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0
    ) -> bool:
        deferred = False
        if self.show_cursor_bar(view):
            self.cursor_bar.update_data(history, view)
        # (widget, seconds between refreshes, the most the CPU governor may stretch that to)
        for widget, interval, stale in ((self.header, 0.1, 0.5), (self.bars, 0.5, 1.0), (self.map, 1.0, 2.0)):
            if self.due(widget, min(stale, interval * pace), force):
                widget.update_data(history, view)
            else:
                deferred = True
        return deferred
