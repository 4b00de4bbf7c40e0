"""The Signal view's heatmap: probed modules (rows, input at the top) x time (columns, the whole run
bucketed to the width), each cell the log10 activation std of its module over its steps, on the same
decade scale as the bars above it, so a signal that dies in the first blocks shows as a dark band from
some row down, and BatchNorm's healthy run as an even colour. With the time cursor set, a ``┃`` column
marks the cursor's step (``▼`` on the axis). Colours, the cursor mark and a row's drawing come from the
gradient-flow heatmap (:mod:`tuitrain.ui.widgets.heatmap`): one colour map for both."""

from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from tuitrain.ui.downsample import bucket_mean
from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.heatmap import LEVELS, STYLES, color_levels, map_segments
from tuitrain.ui.widgets.layer_rows import decade_label
from tuitrain.ui.widgets.signal_bars import ModuleRows, std_scale
from tuitrain.ui.widgets.titles import set_titles
from tuitrain.ui.widgets.update_sparklines import cursor_column


class SignalMap(ModuleRows):
    DEFAULT_CSS = """
    SignalMap { height: 1fr; background: $surface; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.levels = np.zeros((0, 0), dtype=np.int16)  # (modules, columns)
        self.steps = np.zeros(0)
        self.scale = (-3.0, 1.0)
        self.cursor_col: int | None = None
        self._key: tuple | None = None

    def name_width(self, width: int) -> int:
        return int(min(26, max(8, width * 0.22)))

    def map_width(self, width: int) -> int:
        return max(4, width - self.name_width(width) - 1)

    def update_data(self, history: History, view: ViewState) -> None:
        width = self.content_width
        key = (id(history), history.version, view.cursor, width)
        if key == self._key:
            return
        self._key = key
        if self.set_modules(history):  # the bars above say why there is nothing; the map only this
            self.empty_text = "the map fills in as probed steps arrive" if history.signal.has_probe else ""
        sig = history.signal
        steps, logs = sig.std_long()
        mw = self.map_width(width)
        self.steps = steps
        self.scale = std_scale(sig)
        self.cursor_col = cursor_column(steps, mw, view.cursor, stretch=True)
        if not self.names or not logs.shape[0]:
            self.levels = np.zeros((len(self.names), 0), dtype=np.int16)
        else:
            cols = bucket_mean(logs.astype(np.float64), mw, stretch=True)  # (mw, modules)
            self.levels = color_levels(cols.T, *self.scale)
        self.refresh()

    def render_row(self, row: int, width: int) -> list[Segment]:
        segs = self.name_segments(row, self.name_width(width))
        segs.append(self.gap)
        lv = self.levels[row] if row < self.levels.shape[0] else np.zeros(0, dtype=np.int16)
        segs.extend(map_segments(self, lv, self.cursor_col, self.map_width(width)))
        return segs


class SignalMapPanel(Vertical):
    """The time axis, the scrolling rows and the colour legend."""

    DEFAULT_CSS = """
    SignalMapPanel {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        height: 1fr;
    }
    SignalMapPanel > .signal-map-head { height: 1; width: 1fr; color: $text-muted; }
    SignalMapPanel > #signal-map-legend { height: 1; width: 1fr; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rows = SignalMap(id="signal-map-rows")
        self.head = Static("", classes="signal-map-head", markup=False)
        self.legend = Static("", id="signal-map-legend")
        self._head_text = self._legend_text = ""

    def compose(self) -> ComposeResult:
        yield self.head
        yield self.rows
        yield self.legend

    def on_mount(self) -> None:
        self.border_title = "Signal over time"

    def update_data(self, history: History, view: ViewState) -> None:
        rows = self.rows
        rows.update_data(history, view)
        set_titles(self, title="Signal over time · log10 activation std per module")
        n = len(rows.names)
        set_titles(self, subtitle=f"{n} modules" if n else "")
        head = legend_plain = ""
        legend = Text()
        if n:
            width = rows.content_width
            mw = rows.map_width(width)
            steps = rows.steps
            span = f"step {int(steps[0]):,}" if steps.size else "time"
            end = f"step {int(steps[-1]):,} →" if steps.size else "→"
            axis = (span + " " + "─" * max(1, mw - len(span) - len(end) - 2) + " " + end)[:mw].ljust(mw)
            c = rows.cursor_col
            if c is not None and c < mw:
                axis = axis[:c] + "▼" + axis[c + 1 :]
            head = " " * (rows.name_width(width) + 1) + axis
            legend = self._legend(rows.scale, width)
            legend_plain = legend.plain
        if head != self._head_text:
            self._head_text = head
            self.head.update(head)
        if legend_plain != self._legend_text:  # Static.update relayouts: only when it changed
            self._legend_text = legend_plain
            self.legend.update(legend)

    @staticmethod
    def _legend(scale: tuple[float, float], width: int) -> Text:
        lo, hi = scale
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{decade_label(lo)} ")
        bar_w = max(8, min(30, width // 4))
        for i in range(bar_w):
            t.append(" ", style=STYLES[int(i / bar_w * LEVELS)])
        t.append(f" {decade_label(hi)}  ")
        t.append("0 zero · × non-finite · a cell: mean of log10 std over its steps", style="dim")
        t.truncate(max(1, width - 2), overflow="ellipsis")
        return t
