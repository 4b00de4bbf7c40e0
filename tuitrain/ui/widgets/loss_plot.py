"""Training curves: train loss per step (raw min/max envelope, faint, and EMA-smoothed) with the
validation loss per epoch placed at the epoch's last step; a key switches to accuracy, another to a
log y axis. The y range ignores early outliers; x zooms and pans from the keyboard, and the title says
whether the view follows the live run. Two stats lines under the chart always show the latest loss
and accuracy (train, smoothed, validation and best). With several runs (replay), one line per run in
its colour and a legend with each run's value at the cursor instead of the stats; the time cursor is
a vertical line.

Data are downsampled before plotext sees them (:mod:`tuitrain.ui.widgets.chart_spec`: min/max per
column for the raw curve, bucket means for the smoothed one, at most two points per column), and
plotext builds are cached and rate-limited by their own cost (the chart spends ~3% of a core, and is
never more than 1 s stale), since a build costs 5-40 ms; its output is parsed into strips once per
build and served through the line API.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Vertical
from textual.content import Content
from textual.strip import Strip
from textual.widget import Widget
from textual_plotext import PlotextPlot

from tuitrain.ui.fmt import fmt_si
from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import EPOCH_METRICS, LABELS, hex_rgb
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.chart_spec import (
    ChartSpec,
    build_overlay_spec,
    build_spec,
    data_extent,
    nice_ticks,
    step_label,
)
from tuitrain.ui.widgets.chart_stats import legend_markup, stats_markup
from tuitrain.ui.widgets.plotext_strips import matrix_strips
from tuitrain.ui.widgets.titles import set_titles

__all__ = ["ChartSpec", "LossChart", "LossPanel", "StatsLines", "build_spec", "legend_markup", "stats_markup"]

STATS_SECONDS = 0.5  # the numbers under the chart refresh at 2 Hz while streaming
CHART_CPU_SHARE = 0.03  # a chart rebuild waits until its last build cost is this share of the time
CHART_MAX_STALE = 1.0  # ... but never longer than this while data arrives


class LossChart(PlotextPlot):
    """A PlotextPlot that rebuilds only when its spec, size or theme changed."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec = ChartSpec(message="waiting for the first steps…")
        self.spec_version = 0
        self.last_build_s = 0.0
        self.builds = 0
        self._cache_key: tuple | None = None
        self._strips: list[Strip] = []
        self._style_cache: dict = {}
        self.cursor_x: float | None = None  # the time cursor's step, drawn as a vertical line
        self._frame: tuple[int, int, int, int] | None = None  # plot area: top, bottom, left, right
        self._texts: list[str] = []  # the built lines as plain text
        self._cursor_style: Style | None = None
        self._cursor_strips: dict[tuple[int, int], Strip] = {}  # (line, column) -> line with the cursor

    def set_spec(self, spec: ChartSpec) -> None:
        self.spec = spec
        self.spec_version += 1
        self.refresh()

    def set_cursor(self, x: float | None) -> None:
        """Move the vertical cursor line. Drawn over the cached build, so no plotext rebuild."""
        if x != self.cursor_x:
            self.cursor_x = x
            self.refresh()

    def cursor_column(self) -> int | None:
        """The screen column of the cursor inside the plot frame (plotext's x mapping), or None."""
        fr, x = self._frame, self.cursor_x
        x0, x1 = self.spec.xlim
        if fr is None or x is None or self.spec.message or not (x0 <= x <= x1) or x1 <= x0:
            return None
        _, _, left, right = fr
        return left + 1 + int(math.floor((x - x0) / (x1 - x0) * (right - left - 2) + 0.5))

    def render_line(self, y: int) -> Strip:
        """Line API: plotext's output is parsed into strips once per build, not laid out as rich
        Text on every repaint (that costs more than the build itself)."""
        key = (self.spec_version, self.size.width, self.size.height, self.app.theme)
        if key != self._cache_key:
            t0 = time.perf_counter()
            self._strips = self._build_strips()
            self._texts = [s.text for s in self._strips]
            self._frame = self._find_frame()
            self._cursor_style = None
            self._cursor_strips = {}
            self.last_build_s = time.perf_counter() - t0
            self.builds += 1
            self._cache_key = key
        width = self.size.width
        if y >= len(self._strips):
            return Strip.blank(width, self.rich_style)
        strip = self._strips[y]
        c = self.cursor_column()
        if c is not None and self._frame is not None and self._frame[0] < y < self._frame[1]:
            got = self._cursor_strips.get((y, c))
            if got is None:
                if len(self._cursor_strips) > 4 * self.size.height:
                    self._cursor_strips = {}
                got = self._cursor_strips[(y, c)] = self._with_cursor(y, strip, c, width)
            strip = got
        return strip

    def _find_frame(self) -> tuple[int, int, int, int] | None:
        top = bottom = None
        for i, text in enumerate(self._texts):
            if top is None and "┌" in text and "┐" in text:
                top, left, right = i, text.index("┌"), text.index("┐")
            elif top is not None and "└" in text:
                bottom = i
                break
        return None if top is None or bottom is None else (top, bottom, left, right)

    def _with_cursor(self, y: int, strip: Strip, c: int, width: int) -> Strip:
        """``strip`` with a cursor mark in column ``c`` where the chart has nothing drawn."""
        text = self._texts[y]
        if c >= len(text) or text[c] not in (" ", "\u2800"):
            return strip  # the curves stay on top of the cursor
        if self._cursor_style is None:
            self._cursor_style = self.rich_style + Style(color=RichColor.from_rgb(*self._colors()["cursor"]))
        mark = Strip([Segment("│", self._cursor_style)], 1)
        return Strip.join([strip.crop(0, c), mark, strip.crop(c + 1, width)])

    def _build_strips(self) -> list[Strip]:
        """Build the figure and read plotext's character/colour matrix straight into strips,
        skipping its ANSI canvas and rich's ANSI parser (two thirds of the cost). Falls back to
        the ANSI route if plotext's internals are not what we expect."""
        text = self._build(matrix_only=True)
        if text is not None:
            return self._to_strips(text)
        try:
            m = self.plt.monitor.matrix
            rows = matrix_strips(m.marker, m.fullground, m.style, m.background, self._style_cache)
        except Exception:
            self.plt.monitor.matrix.set_canvas()
            return self._to_strips(Text.from_ansi(self.plt.monitor.matrix.get_canvas()))
        base = self.rich_style
        width = self.size.width
        return [Strip(segs).adjust_cell_length(width).apply_style(base) for segs in rows[: self.size.height]]

    def _to_strips(self, text: Text) -> list[Strip]:
        console = self.app.console
        base = self.rich_style
        width = self.size.width
        strips = []
        for line in text.split("\n", allow_blank=True)[: self.size.height]:
            segs = [s for s in line.render(console) if s.text != "\n"]
            strips.append(Strip(segs).simplify().adjust_cell_length(width).apply_style(base))
        return strips

    def _colors(self) -> dict[str, tuple[int, int, int]]:
        tv = self.app.theme_variables
        bg = Color.parse(tv.get("surface", "#1e1e1e"))
        prim = Color.parse(tv.get("primary", "#0178D4"))
        return {
            "smooth": prim.lighten(0.1).rgb,
            "raw": prim.blend(bg, 0.45).rgb,
            "val": Color.parse(tv.get("warning", "#ffa62b")).rgb,
            "cursor": Color.parse(tv.get("foreground", "#e0e0e0")).blend(bg, 0.35).rgb,
        }

    def _build(self, matrix_only: bool = False) -> Text | None:
        """Draw the spec with plotext. Returns the chart as Text, or None with ``matrix_only``
        (the figure is then left built in ``plt.monitor.matrix``); a message is always Text."""
        w, h = self.size.width, self.size.height
        spec = self.spec
        if w < 8 or h < 4 or spec.message:
            msg = spec.message or "too small"
            return Text(("\n" * max(0, h // 2 - 1)) + msg.center(max(0, w)), style="dim")
        plt = self.plt
        plt.clear_data()
        plt.plotsize(w, h)
        plt._set_size(w, h)  # see textual-plotext issue #5: plotsize alone does not always take
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        c = self._colors()
        x0, x1 = spec.xlim
        for ln in spec.lines:
            rgb = hex_rgb(ln.color)
            if ln.x.size > 1 or not ln.points:
                plt.plot(ln.x.tolist(), ln.y.tolist(), marker="braille", color=rgb)
            if ln.points:
                plt.scatter(ln.x.tolist(), ln.y.tolist(), marker="●", color=rgb)
        if spec.raw_x.size:
            # the raw min/max envelope at cell resolution: a faint band; braille here costs 4x the build
            plt.plot(spec.raw_x.tolist(), spec.raw_y.tolist(), marker="·", color=c["raw"])
        if spec.sm_x.size:
            plt.plot(spec.sm_x.tolist(), spec.sm_y.tolist(), marker="braille", color=c["smooth"])
        if spec.val_x.size:
            if spec.val_x.size > 1:
                plt.plot(spec.val_x.tolist(), spec.val_y.tolist(), marker="braille", color=c["val"])
            plt.scatter(spec.val_x.tolist(), spec.val_y.tolist(), marker="●", color=c["val"])
        plt.xlim(x0, x1)
        xt = nice_ticks(x0, x1, max(2, min(6, w // 12)))
        plt.xticks(xt, [step_label(v) for v in xt])
        if spec.ylim is not None:
            plt.ylim(*spec.ylim)
        if spec.yticks:
            plt.yticks(spec.yticks, spec.ylabels)
        else:
            y0, y1 = spec.ylim or (0.0, 1.0)
            yt = nice_ticks(y0, y1, max(2, min(6, h // 3)))
            plt.yticks(yt, [fmt_si(v, 3) for v in yt])
        if matrix_only:
            plt._set_sizes()  # what plt.build() does, minus the ANSI canvas
            plt._build_matrix()
            return None
        return Text.from_ansi(plt.build())


class StatsLines(Widget):
    """Two fixed lines of markup; an update repaints them without a relayout (unlike Static)."""

    DEFAULT_CSS = "StatsLines { height: 2; width: 1fr; padding: 0 1; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.markup = ""
        self.lines = 2
        self._content = Content("")

    def set_markup(self, markup: str) -> None:
        if markup != self.markup:
            self.markup = markup
            self._content = Content.from_markup(markup)
            self.refresh()

    def render(self) -> Content:
        return self._content


class LossPanel(Vertical):
    """The chart, its title (metric, smoothing, follow state) and the two stats lines (several runs:
    the legend)."""

    DEFAULT_CSS = """
    LossPanel {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        height: 1fr;
    }
    """
    LEGEND_LINES = 4  # at most, under the chart

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.chart = LossChart(id="loss-chart")
        self.stats = StatsLines(id="loss-stats")
        self.overlay = False
        self._data_key: tuple | None = None
        self._view_key: tuple | None = None
        self._next_build = 0.0
        self._next_stats = 0.0
        self.deferred = False

    def compose(self) -> ComposeResult:
        yield self.chart
        yield self.stats

    def on_mount(self) -> None:
        self.border_title = "Loss"

    def update_data(self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0,
                    runs: Sequence[tuple[str, str, History]] = ()) -> bool:
        """Refresh title and stats; rebuild the chart spec if data or view changed and the chart's
        CPU budget allows (or ``force``). ``runs``: (name, colour, history) of every run, to overlay
        when there are several. Returns True when a rebuild was deferred."""
        self.overlay = len(runs) > 1
        view_key = (view.metric, view.log_y, round(view.smoothing, 4), view.follow, view.span, view.end,
                    view.selected, self.chart.size.width, self.chart.size.height)
        hists = [h for _, _, h in runs] if self.overlay else [history]
        data_key = tuple((h.version, h.scalars.n, len(h.epochs)) for h in hists)
        self._set_title(hists, view, len(runs))
        self.chart.set_cursor(None if view.cursor is None else float(view.cursor))
        now = time.monotonic()
        if force or now >= self._next_stats or view_key != self._view_key:
            self._set_stats(history, view, runs)
            self._next_stats = now + STATS_SECONDS * pace
        changed_view = view_key != self._view_key
        if not changed_view and data_key == self._data_key:
            self.deferred = False
            return False
        if not (force or changed_view) and now < self._next_build:
            self.deferred = True
            return True
        self._view_key, self._data_key = view_key, data_key
        cols = max(8, self.chart.size.width - 8)
        if self.overlay:
            spec = build_overlay_spec(hists, [c for _, c, _ in runs], view, cols)
        else:
            spec = build_spec(history, view, cols)
        self.chart.set_spec(spec)
        self._next_build = now + pace * min(CHART_MAX_STALE, max(0.1, self.chart.last_build_s / CHART_CPU_SHARE))
        self.deferred = False
        return False

    def _set_title(self, histories: list[History], view: ViewState, n_runs: int) -> None:
        name = LABELS.get(view.metric, view.metric)
        parts = [name] + ([f"{n_runs} runs"] if self.overlay else [])
        if view.metric not in EPOCH_METRICS:
            parts.append(f"EMA {view.smoothing:.3g}")
        if view.log_y:
            parts.append("log y")
        if view.follow:
            parts.append("[$success]following[/]" if view.span is None else f"[$success]following[/] last {step_label(view.span)}")
        else:
            ext = data_extent(histories, view.metric)
            if ext is not None:
                lo, hi = view.x_window(*ext)
                parts.append(f"[$warning]paused view[/] {step_label(lo)}–{step_label(hi)} (f: follow)")
            else:
                parts.append("[$warning]paused view[/]")
        set_titles(self, title=" · ".join(parts))
        if self.overlay:
            sub = "● one per epoch" if view.metric in EPOCH_METRICS else "━ ema, one colour per run"
        elif view.metric in EPOCH_METRICS:
            sub = "[$warning]●[/] per epoch"
        elif view.metric in ("loss", "acc"):
            sub = "[$primary]━[/] ema [$primary-muted]·[/] raw [$warning]●[/] val"
        else:
            sub = "[$primary]━[/] ema [$primary-muted]·[/] raw"
        set_titles(self, subtitle=sub)

    def _set_stats(self, history: History, view: ViewState, runs: Sequence[tuple[str, str, History]]) -> None:
        width = self.stats.content_region.width or 40
        if self.overlay:
            markup = legend_markup(runs, view, width, self.LEGEND_LINES)
        else:
            markup = stats_markup(history, view, width)
        lines = markup.count("\n") + 1 if self.overlay else 2
        if lines != self.stats.lines:  # a relayout: only when the legend grows or shrinks
            self.stats.lines = lines
            self.stats.styles.height = lines
        self.stats.set_markup(markup)
