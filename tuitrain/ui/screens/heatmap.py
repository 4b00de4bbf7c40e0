"""The gradient-flow view: header, cursor bar (replay), the layers x time heatmap with per-layer mean
and spread, footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer

from tuitrain.ui.history import History
from tuitrain.ui.screens.base import DataScreen
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.cursor_bar import CursorBar
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.heatmap import HeatmapPanel


class HeatmapScreen(DataScreen):
    def compose(self) -> ComposeResult:
        self.cursor_bar = CursorBar(id="cursor")
        # (widget, seconds between refreshes, the most the CPU governor may stretch that to)
        self.paced = ((RunHeader(id="header"), 0.1, 0.5), (HeatmapPanel(id="heatmap"), 1.0, 2.0))
        yield self.paced[0][0]
        yield self.cursor_bar
        yield self.paced[1][0]
        yield Footer()

    def refresh_data(
        self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0
    ) -> bool:
        deferred = False
        if self.show_cursor_bar(view):
            self.cursor_bar.update_data(history, view)
        for widget, interval, stale in self.paced:
            if self.due(widget, min(stale, interval * pace), force):
                widget.update_data(history, view)
            else:
                deferred = True
        return deferred
