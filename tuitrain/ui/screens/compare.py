"""The comparison view (``c``, and the first screen of ``tuitrain replay`` with several runs): the
chosen metric of every run overlaid in one chart with a legend (each run's value at the cursor), and
the final table with the config keys that differ between the runs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer

from tuitrain.ui.history import History
from tuitrain.ui.screens.base import DataScreen
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.cursor_bar import CursorBar
from tuitrain.ui.widgets.final_table import FinalTable
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.loss_plot import LossPanel

TABLE_SECONDS = 1.0  # the table follows a live run at 1 Hz


class CompareScreen(DataScreen):
    def compose(self) -> ComposeResult:
        self.header = RunHeader(id="header")
        self.cursor_bar = CursorBar(id="cursor")
        self.loss = LossPanel(id="compare-loss")
        self.table = FinalTable(id="final-table")
        yield self.header
        yield self.cursor_bar
        yield self.loss
        yield self.table
        yield Footer()

    def refresh_data(
        self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0
    ) -> bool:
        runs = self.overlay()
        if self.show_cursor_bar(view):
            self.cursor_bar.update_data(history, view)
        if self.due(self.header, 0.1 * pace, force):
            self.header.update_data(history, view)
        deferred = False
        if self.due(self.table, TABLE_SECONDS * pace, force):
            extras = getattr(self.app, "final_table_extras", None)  # a sweep: statuses, findings
            self.table.update_data(runs, view, **(extras() if extras else {}))
        else:
            deferred = True
        deferred |= self.loss.update_data(history, view, force=force, pace=pace, runs=runs)
        return deferred
