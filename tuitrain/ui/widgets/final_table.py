"""The final table of a comparison, as in the course reports: one row per run with Train Loss, Val Loss,
Train Acc, Val Acc, Test Loss, Test Acc and Params, then the config keys that differ between the runs
(and the status when a run is not completed). The best value of each metric column is bold; the
selected run's row is highlighted. Rows come from :mod:`tuitrain.ui.replay.compare`, the same ones
``tuitrain replay --print`` prints."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import COLUMNS, best_rows, rows_from_histories, table_cells, table_header
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.titles import set_titles


class FinalTable(Vertical):
    DEFAULT_CSS = """
    FinalTable {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        height: auto;
        max-height: 50%;
    }
    FinalTable > DataTable { height: auto; max-height: 100%; background: $surface; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.table: DataTable = DataTable(cursor_type="row", zebra_stripes=True, show_cursor=True)
        self.table.can_focus = False  # the arrows belong to the time cursor; r picks the run
        self.header: list[str] = []
        self.cells: list[list[str]] = []
        self._key: tuple | None = None

    def compose(self) -> ComposeResult:
        yield self.table

    def on_mount(self) -> None:
        self.border_title = "Final metrics"

    def update_data(self, runs: Sequence[tuple[str, str, History]], view: ViewState) -> None:
        key = (tuple((id(h), h.version) for _, _, h in runs), tuple(n for n, _, _ in runs), view.selected)
        if key == self._key:
            return
        self._key = key
        rows, keys = rows_from_histories(
            [h for _, _, h in runs], [n for n, _, _ in runs], [c for _, c, _ in runs]
        )
        header, cells = table_header(rows, keys), table_cells(rows, keys)
        if header != self.header or cells != self.cells:
            self.header, self.cells = header, cells
            t = self.table
            t.clear(columns=True)
            for col in header:
                t.add_column(
                    Text(col, justify="left" if col in ("Run", "Status") or col in keys else "right")
                )
            best = best_rows(rows)
            metric_keys = list(COLUMNS)
            for i, (r, row) in enumerate(zip(rows, cells, strict=True)):
                styled = [Text.assemble(("■ ", r.color), row[0])]
                for j, cell in enumerate(row[1:], start=1):
                    is_metric = j <= len(metric_keys)
                    bold = is_metric and best.get(metric_keys[j - 1]) == i
                    styled.append(
                        Text(cell, style="bold" if bold else "", justify="right" if is_metric else "left")
                    )
                t.add_row(*styled)
        if self.table.row_count:
            self.table.move_cursor(row=min(view.selected, self.table.row_count - 1), animate=False)
        diff = f"{len(keys)} config key{'s differ' if len(keys) != 1 else ' differs'}" if keys else ""
        set_titles(
            self,
            title=f"Final metrics · {len(runs)} run{'s' if len(runs) != 1 else ''}",
            subtitle=" · ".join(p for p in (diff, "bold: best") if p) if len(runs) > 1 else "",
        )

    def text_rows(self) -> list[str]:
        """The table as plain text lines (header first), for tests and logs."""
        return ["  ".join(self.header)] + ["  ".join(r) for r in self.cells]
