"""Gradient flow as a heatmap: layers (rows, input at the top) x time (columns, the run bucketed to
the available width), each cell coloured by the log10 of the selected quantity (grad L2 norm by
default); beside each row the layer's mean over time and its spread (std of log10) as small bars; under
it a colour legend with the decade scale. The terminal version of the gradient-flow figures in the
course reports (heatmap plus mean/std bars per layer). With the time cursor set, a marker column
crosses the map at the cursor's step (a ▼ on the axis) and the bar beside each row shows the layer's
value at the cursor instead of its mean."""

from __future__ import annotations

import functools
import math

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Vertical
from textual.widgets import Static

from tuitrain.events import PROBE_LABELS
from tuitrain.ui.downsample import bucket_mean
from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.layer_rows import LayerRows, decade_label, frac_bar
from tuitrain.ui.widgets.titles import set_titles
from tuitrain.ui.widgets.update_sparklines import cursor_column

# viridis, sampled: dark blue-purple (small) -> green -> yellow (large)
_VIRIDIS = [
    (68, 1, 84),
    (72, 35, 116),
    (64, 67, 135),
    (52, 94, 141),
    (41, 120, 142),
    (32, 144, 140),
    (34, 167, 132),
    (68, 190, 112),
    (121, 209, 81),
    (189, 222, 38),
    (253, 231, 37),
]
LEVELS = 32


def colormap(levels: int = LEVELS) -> list[tuple[int, int, int]]:
    anchors = np.array(_VIRIDIS, dtype=np.float64)
    pos = np.linspace(0, len(anchors) - 1, levels)
    out = []
    for p in pos:
        i = min(int(p), len(anchors) - 2)
        f = p - i
        c = anchors[i] * (1 - f) + anchors[i + 1] * f
        out.append(tuple(int(round(v)) for v in c))
    return out


COLORS = colormap()
STYLES = [Style(bgcolor=f"rgb({r},{g},{b})") for r, g, b in COLORS]
BAR_STYLES = [Style(color=f"rgb({r},{g},{b})") for r, g, b in COLORS]


NONFINITE_LEVEL = -1
ZERO_LEVEL = -2  # an exact zero (log10 = -inf): drawn as zero, not as the smallest colour


def color_levels(logs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """log10 values -> colour level 0..LEVELS-1, ZERO_LEVEL for an exact zero (-inf), NONFINITE_LEVEL
    for NaN/Inf."""
    with np.errstate(invalid="ignore"):
        frac = (logs - lo) / max(1e-9, hi - lo)
        lv = np.clip(np.floor(frac * LEVELS), 0, LEVELS - 1)
    lv = np.where(np.isfinite(logs), lv, NONFINITE_LEVEL)
    return np.where(np.isneginf(logs), ZERO_LEVEL, lv).astype(np.int16)


class HeatmapRows(LayerRows):
    DEFAULT_CSS = """
    HeatmapRows { height: 1fr; background: $surface; }
    """
    MEAN_W = 8
    SPREAD_W = 4
    STAT_W = MEAN_W + 9 + SPREAD_W + 6  # "▇▇▇▇▇▇   1.2e-3 ▇▇ ±0.42"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.levels = np.zeros((0, 0), dtype=np.int16)
        self.mean = np.zeros(0)
        self.std = np.zeros(0)
        self.scale = (-9.0, 0.0)
        self.steps = np.zeros(0)
        self.cursor_col: int | None = None  # map column of the time cursor; None: no cursor
        self.at_cursor: np.ndarray | None = None  # log10 value per row at the cursor
        self.empty_text = "waiting for the first probes…"
        self._key: tuple | None = None

    def map_width(self, width: int) -> int:
        return max(4, width - self.name_width(width) - self.STAT_W - 2)

    def name_width(self, width: int) -> int:
        return int(min(26, max(8, width * 0.22)))

    def update_data(self, history: History, view: ViewState) -> None:
        if not self.showing:
            return
        width = self.content_width
        key = (
            id(history),
            history.version,
            view.quantity,
            view.hide_bias_norm,
            width,
            len(history.layers),
            view.cursor,
        )
        if key == self._key:
            return
        self._key = key
        self.set_layers(history, view)
        steps, logs = history.probe_long(view.quantity)
        self.steps = steps
        mw = self.map_width(width)
        self.cursor_col = cursor_column(steps, mw, view.cursor, stretch=True)
        self.at_cursor = None
        got = history.probes_at(view.cursor) if view.cursor is not None else None
        if got is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = got[1][view.quantity][self.layer_index].astype(np.float64)
                self.at_cursor = np.where(np.isfinite(v), np.log10(np.abs(v)), np.nan)  # 0 -> -inf: zero
        if logs.shape[0] == 0 or not self.layer_index.size:
            self.levels = np.zeros((len(self.layer_index), 0), dtype=np.int16)
            self.mean = self.std = np.full(len(self.layer_index), np.nan)
            self.refresh()
            return
        sel = logs[:, self.layer_index].astype(np.float64)
        cols = bucket_mean(sel, mw, stretch=True)  # (mw, rows)
        fin = cols[np.isfinite(cols)]
        if fin.size:
            lo, hi = math.floor(float(np.percentile(fin, 0.5))), math.ceil(float(np.percentile(fin, 99.5)))
            self.scale = (float(lo), float(max(hi, lo + 1)))
        self.levels = color_levels(cols.T, *self.scale)
        with np.errstate(invalid="ignore"), _quiet():
            self.mean = np.nanmean(sel, axis=0)
            self.std = np.nanstd(sel, axis=0)
        self.refresh()

    def render_row(self, row: int, width: int) -> list[Segment]:
        name_w = self.name_width(width)
        mw = self.map_width(width)
        segs = self.name_segments(row, name_w)
        segs.append(self.gap)
        lv = self.levels[row] if row < self.levels.shape[0] else np.zeros(0, dtype=np.int16)
        segs.extend(map_segments(self, lv, self.cursor_col, mw))
        segs.append(self.gap)
        vals = self.mean if self.at_cursor is None else self.at_cursor
        m = float(vals[row]) if row < vals.shape[0] else float("nan")
        sd = float(self.std[row]) if row < self.std.shape[0] else float("nan")
        segs.extend(self.stat_segments(m, sd))
        return segs

    def stat_segments(self, m: float, sd: float) -> list[Segment]:
        """mean bar (MEAN_W) on the colour scale, its value, spread bar (SPREAD_W, 0..1 decade), ±std."""
        lo, hi = self.scale
        if m == -math.inf:  # exactly zero: an empty bar and the value 0
            return [Segment(" " * self.MEAN_W), Segment(f" {'0':>7} ", self.style("name"))]
        if not math.isfinite(m):
            return [Segment("—".center(self.STAT_W), self.style("dim"))]
        frac = (m - lo) / max(1e-9, hi - lo)
        level = int(np.clip(frac * LEVELS, 0, LEVELS - 1))
        col = self.styled(BAR_STYLES[level])
        value = f"{10**m:.1e}".replace("e-0", "e-").replace("e+0", "e+")
        segs = [
            Segment(frac_bar(frac, self.MEAN_W), col),
            Segment(f" {value:>7} ", self.style("name")),
        ]
        if math.isfinite(sd):
            segs.append(Segment(frac_bar(min(1.0, sd), self.SPREAD_W), self.style("dim")))
            segs.append(Segment(f" ±{sd:.2f}", self.style("dim")))
        return segs


def map_segments(rows: LayerRows, lv: np.ndarray, cursor_col: int | None, width: int) -> list[Segment]:
    """One row of a heatmap, ``width`` cells: colour ``levels`` (:func:`color_levels`), runs of equal
    colour as one segment, the time cursor's cell as a ``┃`` of its own, ``0`` for exact zeros and ``×``
    for non-finite cells; styled through ``rows`` (the gradient-flow map and the Signal view's map)."""
    if lv.size == 0:
        return [Segment(" " * width, rows.styled(None))]
    segs: list[Segment] = []
    cuts = np.flatnonzero(np.diff(lv)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [lv.size]])
    c = cursor_col if cursor_col is not None and cursor_col < lv.size else -1
    if c >= 0:  # the cursor's cell is a run of its own
        starts = np.unique(np.concatenate([starts, [c, c + 1]]))
        starts = starts[starts < lv.size]
        ends = np.append(starts[1:], lv.size)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        v = int(lv[s])
        if s == c:
            segs.append(Segment("┃", rows.styled(_cursor_style(v))))
        elif v == ZERO_LEVEL:
            segs.append(Segment("0" * (e - s), rows.style("dim")))
        elif v < 0:
            segs.append(Segment("×" * (e - s), rows.style("nonfinite")))
        else:
            segs.append(Segment(" " * (e - s), rows.styled(STYLES[v])))
    if lv.size < width:
        segs.append(Segment(" " * (width - lv.size), rows.styled(None)))
    return segs


def stat_header(at_cursor: bool = False) -> str:
    w = HeatmapRows
    return (
        ("at cursor" if at_cursor else "mean").ljust(w.MEAN_W)
        + " "
        + "value".rjust(7)
        + " "
        + "spread".ljust(w.SPREAD_W + 6)
    )


@functools.lru_cache(maxsize=LEVELS + 1)
def _cursor_style(level: int) -> Style:
    """The cursor mark over a cell: dark on the light end of the colour map, light on the dark end."""
    if level < 0:
        return Style(color="white", bold=True)
    fg = "black" if level > LEVELS * 0.6 else "white"
    r, g, b = COLORS[level]
    return Style(color=fg, bgcolor=f"rgb({r},{g},{b})", bold=True)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


class HeatmapPanel(Vertical):
    """Column headings, the scrolling rows and the colour legend."""

    DEFAULT_CSS = """
    HeatmapPanel {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        height: 1fr;
    }
    HeatmapPanel > .heatmap-head { height: 1; width: 1fr; color: $text-muted; }
    HeatmapPanel > #heatmap-legend { height: 2; width: 1fr; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rows = HeatmapRows(id="heatmap-rows")
        self.head = Static("", classes="heatmap-head", markup=False)
        self.legend = Static("", id="heatmap-legend")
        self._head_text = self._legend_text = ""

    def compose(self) -> ComposeResult:
        yield self.head
        yield self.rows
        yield self.legend

    def on_mount(self) -> None:
        self.border_title = "Gradient flow"

    def update_data(self, history: History, view: ViewState) -> None:
        self.rows.update_data(history, view)
        q = view.quantity_name
        set_titles(self, title=f"Gradient flow · log10 {PROBE_LABELS[q]} per layer over time")
        n = len(self.rows.layer_index)
        set_titles(
            self,
            subtitle=f"{n}/{len(history.layers)} tensors"
            + (" (bias/norm hidden)" if view.hide_bias_norm else ""),
        )
        if not history.has_grad:  # no axis, scale or legend for a map that is not there
            set_titles(self, subtitle="")
            if self._head_text or self._legend_text:
                self._head_text = self._legend_text = ""
                self.head.update("")
                self.legend.update("")
            return
        width = self.rows.content_width
        name_w = self.rows.name_width(width)
        mw = self.rows.map_width(width)
        steps = self.rows.steps
        span = f"step {int(steps[0]):,}" if steps.size else "time"
        end = f"step {int(steps[-1]):,} →" if steps.size else "→"
        axis = (span + " " + "─" * max(1, mw - len(span) - len(end) - 2) + " " + end)[:mw].ljust(mw)
        c = self.rows.cursor_col
        if c is not None and c < mw:
            axis = axis[:c] + "▼" + axis[c + 1 :]
        head = " " * (name_w + 1) + axis + " " + stat_header(self.rows.at_cursor is not None)
        if head != self._head_text:
            self._head_text = head
            self.head.update(head)
        legend = self._legend(history, view, width)
        if legend.plain != self._legend_text:  # Static.update relayouts: only when it changed
            self._legend_text = legend.plain
            self.legend.update(legend)

    def _legend(self, history: History, view: ViewState, width: int) -> Text:
        lo, hi = self.rows.scale
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{decade_label(lo)} ")
        bar_w = max(8, min(40, width // 3))
        for i in range(bar_w):
            t.append(" ", style=STYLES[int(i / bar_w * LEVELS)])
        t.append(f" {decade_label(hi)}  ")
        t.append(f"{int(hi - lo)} decades · a cell is the mean of log10 over its steps", style="dim")
        t2 = Text(no_wrap=True, overflow="ellipsis")
        th = history.thresholds
        err = Style(color=Color.parse(self.app.theme_variables.get("error", "red")).rich_color, bold=True)
        parts = [
            ("input at the top · spread: std of log10 over time · ", "dim"),
            ("×", err),
            (" non-finite · ", "dim"),
            ("0", "dim"),
            (" zero · ", "dim"),
            (f"vanishing: mean |grad| < {th.vanishing:g} · exploding: grad norm > {th.exploding:g}", "dim"),
        ]
        for text, style in parts:
            t2.append(text, style=style)
        for line in (t, t2):
            line.truncate(max(1, width - 2), overflow="ellipsis")
        return Text("\n").join([t, t2])
