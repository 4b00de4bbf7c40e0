"""The gradient-flow view: header, the layers x time heatmap with per-layer mean and spread, footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer

from tuitrain.ui.history import History, ViewState
from tuitrain.ui.screens.base import DataScreen
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.heatmap import HeatmapPanel


class HeatmapScreen(DataScreen):
    def compose(self) -> ComposeResult:
        self.paced = ((RunHeader(id="header"), 0.1), (HeatmapPanel(id="heatmap"), 1.0))
        yield from (w for w, _ in self.paced)
        yield Footer()

    def refresh_data(self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0) -> bool:
        deferred = False
        for widget, interval in self.paced:
            if self.due(widget, interval * pace, force):
                widget.update_data(history, view)
            else:
                deferred = True
        return deferred
