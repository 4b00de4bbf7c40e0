"""The final table of a comparison, as in the course reports: one row per run with Train Loss, Val Loss,
Train Acc, Val Acc, Test Loss, Test Acc and Params, then the config keys that differ between the runs
(and the status when a run is not completed). The best value of each metric column is bold; the
selected run's row is highlighted. Rows come from :mod:`tuitrain.ui.replay.compare` and cells from
:mod:`tuitrain.view.table`, the same ones ``tuitrain replay --print``, ``info`` and the headless run print.

Why every column gets an explicit width: Textual's DataTable measures auto-width columns lazily, on
idle, and never invalidates the cells it rendered in between. A frame drawn after the rows were added
but before that idle (a busy live follow) cached cells cut to the header's width (``■ v`` for a run
name, ``332.97`` for ``332.97K``); after ``r`` only the re-rendered rows came back full width, so rows
no longer lined up. Widths computed here from the finished cells are known before the first render.
When the table is wider than the panel the run names (then the config values) are elided with ``…``
down to a floor; numbers are never cut; what still does not fit scrolls sideways.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import rows_from_histories
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.titles import set_titles
from tuitrain.view.table import CHIP, column_widths, header_justify, styled_cells, table_header

GAP = 1  # one blank cell before every column (no DataTable padding: two cells a column did not fit 80)
NAME_FLOOR = 12  # the run column is never elided below this (chip included)
KEY_FLOOR = 8  # nor a config-value column below this


def fit_widths(widths: list[int], n_metrics: int, n_keys: int, available: int) -> list[int]:
    """Shrink the run column, then the config-key columns, until the row fits ``available`` cells (or
    they hit their floors). Metric and status columns keep their full width: numbers are never cut."""
    out = list(widths)

    def total() -> int:
        return sum(w + GAP for w in out)

    excess = total() - available
    if excess > 0 and out[0] > NAME_FLOOR:
        cut = min(excess, out[0] - NAME_FLOOR)
        out[0] -= cut
        excess -= cut
    for j in range(1 + n_metrics, 1 + n_metrics + n_keys):
        if excess <= 0:
            break
        if out[j] > KEY_FLOOR:
            cut = min(excess, out[j] - KEY_FLOOR)
            out[j] -= cut
            excess -= cut
    return out


def _fit(text: Text, width: int) -> Text:
    """``text`` in ``width`` cells (elided with … only if longer), after the column gap."""
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return Text(" " * GAP, justify=text.justify) + text


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
        self.table: DataTable = DataTable(
            cursor_type="row", zebra_stripes=True, show_cursor=True, cell_padding=0
        )
        self.table.can_focus = False  # the arrows belong to the time cursor; r picks the run
        self.header: list[str] = []
        self.cells: list[list[str]] = []
        self.widths: list[int] = []  # content width of each column, as drawn
        self._key: tuple | None = None
        self._drawn: tuple | None = None

    def compose(self) -> ComposeResult:
        yield self.table

    def on_mount(self) -> None:
        self.border_title = "Final metrics"

    def on_resize(self) -> None:
        self._key = None  # the widths depend on the panel's width

    def update_data(
        self,
        runs: Sequence[tuple[str, str, History]],
        view: ViewState,
        statuses: Sequence[str] | None = None,
        columns: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``statuses`` replace the histories' (a sweep's queued variants have none of their own);
        ``columns`` are extra text columns after the config keys (a sweep's worst finding)."""
        available = max(0, self.content_size.width - 1)  # one cell spare: a vertical scrollbar's edge
        key = (
            tuple((id(h), h.version) for _, _, h in runs),
            tuple(n for n, _, _ in runs),
            view.selected,
            available,
            tuple(statuses or ()),
            tuple((k, tuple(v)) for k, v in (columns or {}).items()),
        )
        if key == self._key:
            return
        self._key = key
        rows, keys = rows_from_histories(
            [h for _, _, h in runs], [n for n, _, _ in runs], [c for _, c, _ in runs]
        )
        n_diff = len(keys)
        for i, r in enumerate(rows):
            if statuses is not None and i < len(statuses):
                r.status = statuses[i]
            for name, values in (columns or {}).items():
                r.config[name] = values[i] if i < len(values) else ""
        keys = [*keys, *(columns or {})]
        header = table_header(rows, keys)
        styled = styled_cells(rows, keys)
        cells = [[c.text for c in row] for row in styled]
        widths = column_widths(header, cells)
        n_metrics = len(header) - 1 - len(keys) - (1 if header[-1] == "Status" else 0)
        if available:
            widths = fit_widths(widths, n_metrics, len(keys), available)
        self.header, self.cells = header, cells
        drawn = (tuple(header), tuple(map(tuple, cells)), tuple(widths), tuple(r.color for r in rows))
        if drawn != self._drawn:
            self._drawn = drawn
            self.widths = widths
            t = self.table
            t.clear(columns=True)
            for col, just, w in zip(header, header_justify(rows, keys), widths, strict=True):
                t.add_column(_fit(Text(col, justify=just), w), width=w + GAP)
            for r, row in zip(rows, styled, strict=True):
                out = [_fit(Text.assemble((CHIP, r.color), row[0].text), widths[0])]
                out += [
                    _fit(Text(c.text, style=c.style, justify=c.justify), w)
                    for c, w in zip(row[1:], widths[1:], strict=True)
                ]
                t.add_row(*out)
        if self.table.row_count:
            self.table.move_cursor(row=min(view.selected, self.table.row_count - 1), animate=False)
        diff = f"{n_diff} config key{'s differ' if n_diff != 1 else ' differs'}" if n_diff else ""
        set_titles(
            self,
            title=f"Final metrics · {len(runs)} run{'s' if len(runs) != 1 else ''}",
            subtitle=" · ".join(p for p in (diff, "bold: best") if p) if len(runs) > 1 else "",
        )

    def text_rows(self) -> list[str]:
        """The table as plain text lines (header first), for tests and logs."""
        return ["  ".join(self.header)] + ["  ".join(r) for r in self.cells]
