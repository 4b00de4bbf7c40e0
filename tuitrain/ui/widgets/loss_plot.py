"""Training curves: train loss per step (raw min/max envelope, faint, and EMA-smoothed) with the
validation loss per epoch placed at the epoch's last step; a key switches to accuracy, another to a
log y axis. The y range ignores early outliers; x zooms and pans from the keyboard, and the title says
whether the view follows the live run. Two stats lines under the chart always show the latest loss
and accuracy (train, smoothed, validation and best). With several runs (replay), one line per run in
its colour and a legend with each run's value at the cursor instead of the stats; the time cursor is
a vertical line.

Data are downsampled before drawing (:mod:`tuitrain.ui.widgets.chart_spec`: min/max per column for
the raw curve, bucket means for the smoothed one, at most two points per column), then rasterised
with numpy exactly as plotext would draw them (:mod:`tuitrain.ui.widgets.chart_raster`; plotext's
own build took 40-70 ms at 200x60 and made the slow frames). A rebuild is rate-limited by its cost
(spec and drawing: ~3% of a core, at most 5 a second, never more than 0.5 s stale while data
arrive); its output is turned into strips once per build and served through the line API.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
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
from tuitrain.ui.replay.compare import LABELS, hex_rgb
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.chart_raster import Series, rasterize
from tuitrain.ui.widgets.chart_spec import (
    ChartSpec,
    build_overlay_spec,
    build_spec,
    data_extent,
    distinct_labels,
    nice_ticks,
    per_epoch,
    step_label,
)
from tuitrain.ui.widgets.chart_stats import legend_markup, stats_markup
from tuitrain.ui.widgets.finding_marks import legend as marks_legend
from tuitrain.ui.widgets.finding_marks import mark_series
from tuitrain.ui.widgets.plotext_strips import draw_figure, matrix_strips, raster_segments
from tuitrain.ui.widgets.titles import set_titles

__all__ = ["ChartSpec", "LossChart", "LossPanel", "StatsLines", "build_spec", "legend_markup", "stats_markup"]

STATS_SECONDS = 0.5  # the numbers under the chart refresh at 2 Hz while streaming ...
STATS_MAX_STALE = 1.0  # ... at least once a second however loaded the process
CHART_CPU_SHARE = 0.03  # a chart rebuild waits until its last cost is this share of the time ...
CHART_HZ = 5.0  # ... rebuilds at most this often ...
CHART_MAX_STALE = 0.5  # ... but the newest step is never older than this on screen while data arrive


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
        """Draw the spec with the numpy rasteriser (:mod:`~tuitrain.ui.widgets.chart_raster`: what
        plotext would draw, cell for cell, at a small fraction of its cost); plotext itself for what
        that does not cover (a Plotext theme, no room for a canvas), its matrices read straight into
        strips, or its ANSI canvas if its internals are not what we expect."""
        base = self.rich_style
        width, height = self.size.width, self.size.height
        spec = self.spec
        if width < 8 or height < 4 or spec.message:
            msg = spec.message or "too small"
            return self._to_strips(
                Text(("\n" * max(0, height // 2 - 1)) + msg.center(max(0, width)), style="dim")
            )
        series, ticks, colors = self._series(), self._ticks(), self._colors()
        if self.theme == "auto" and spec.ylim is not None:
            raster = rasterize(width, height, series, spec.xlim, spec.ylim, *ticks, colors["ticks"])
            if (
                raster is not None
            ):  # lines of exactly ``width`` cells, the widget's style folded in per colour
                return [Strip(segs, width) for segs in raster_segments(raster, colors["bg"], base)]
        plt = self.plt
        draw_figure(
            plt,
            width,
            height,
            self._get_plotext_theme_name(self.app.theme),
            series,
            spec.xlim,
            spec.ylim,
            ticks,
        )
        try:
            m = plt.monitor.matrix
            rows = matrix_strips(m.marker, m.fullground, m.style, m.background, self._style_cache)
        except Exception:
            plt.monitor.matrix.set_canvas()
            return self._to_strips(Text.from_ansi(plt.monitor.matrix.get_canvas()))
        return [Strip(segs).adjust_cell_length(width).apply_style(base) for segs in rows[:height]]

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
        fg = Color.parse(tv.get("foreground", "#e0e0e0"))
        return {
            "smooth": prim.lighten(0.1).rgb,
            "raw": prim.blend(bg, 0.45).rgb,
            "val": Color.parse(tv.get("warning", "#ffa62b")).rgb,
            "nan": Color.parse(tv.get("error", "#ba3c5b")).rgb,
            "cursor": fg.blend(bg, 0.35).rgb,
            "bg": bg.rgb,  # the auto theme's canvas and axes (textual-plotext: the surface colour)
            "ticks": fg.rgb,  # ... and its frame and labels (the foreground)
        }

    def _series(self) -> list[Series]:
        """What is drawn, in drawing order (later series on top): overlaid runs, the raw envelope
        (a faint band of ``·`` at cell resolution; braille there made a plotext build 4x dearer),
        the EMA, the validation line and its dots."""
        spec, c = self.spec, self._colors()
        out = []
        for ln in spec.lines:
            rgb = hex_rgb(ln.color)
            if ln.x.size > 1 or not ln.points:
                out.append(Series(ln.x, ln.y, rgb))
            if ln.points:
                out.append(Series(ln.x, ln.y, rgb, "●", lines=False))
        if spec.raw_x.size:
            out.append(Series(spec.raw_x, spec.raw_y, c["raw"], "·"))
        out += mark_series(spec.marks, spec.ylim, self.size.height, c)  # findings: over raw, under the EMA
        if spec.sm_x.size:
            out.append(Series(spec.sm_x, spec.sm_y, c["smooth"]))
        if spec.val_x.size:
            if spec.val_x.size > 1:
                out.append(Series(spec.val_x, spec.val_y, c["val"]))
            out.append(Series(spec.val_x, spec.val_y, c["val"], "●", lines=False))
        if spec.nan_x is not None and spec.ylim is not None:  # a red dashed column where NaN began
            rows = 4 * max(1, self.size.height)
            ys = np.linspace(spec.ylim[0], spec.ylim[1], rows)
            out.append(Series(np.full(rows, spec.nan_x), ys, c["nan"], "┊", lines=False))
        return out

    def _ticks(self) -> tuple[list[float], list[str], list[float], list[str]]:
        """x ticks and labels, y ticks and labels for the spec at the current size."""
        w, h = self.size.width, self.size.height
        spec = self.spec
        xt = nice_ticks(*spec.xlim, max(2, min(6, w // 12)), min_step=1.0)  # steps are whole numbers
        xl = distinct_labels(xt, step_label)
        if spec.yticks:
            return xt, xl, list(spec.yticks), list(spec.ylabels)
        y0, y1 = spec.ylim or (0.0, 1.0)
        yt = nice_ticks(y0, y1, max(2, min(6, h // 3)))
        return xt, xl, yt, distinct_labels(yt, fmt_si)


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
        self.spec_s = 0.0  # seconds the last chart spec took (its drawing: chart.last_build_s)
        self.deferred = False

    def compose(self) -> ComposeResult:
        yield self.chart
        yield self.stats

    def on_mount(self) -> None:
        self.border_title = "Loss"

    def _keys(
        self, history: History, view: ViewState, runs: Sequence[tuple[str, str, History]]
    ) -> tuple[tuple, tuple, list[History]]:
        """(view key, data key, histories drawn): a rebuild is wanted when either key changed."""
        self.overlay = len(runs) > 1
        view_key = (
            view.metric,
            view.log_y,
            round(view.smoothing, 4),
            view.follow,
            view.span,
            view.end,
            view.selected,
            self.chart.size.width,
            self.chart.size.height,
        )
        hists = [h for _, _, h in runs] if self.overlay else [history]
        return view_key, tuple((h.version, h.scalars.n, len(h.epochs)) for h in hists), hists

    def build_due(
        self, history: History, view: ViewState, runs: Sequence[tuple[str, str, History]] = ()
    ) -> float | None:
        """When the chart wants its next rebuild (a ``time.monotonic`` time, 0.0 when the view changed:
        at once), or None when nothing changed; lets the screen give each frame one big panel."""
        view_key, data_key, _ = self._keys(history, view, runs)
        if view_key != self._view_key:
            return 0.0
        return None if data_key == self._data_key else self._next_build

    def update_data(
        self,
        history: History,
        view: ViewState,
        *,
        force: bool = False,
        pace: float = 1.0,
        runs: Sequence[tuple[str, str, History]] = (),
        build: bool = True,
    ) -> bool:
        """Refresh title and stats; rebuild the chart spec if data or view changed and the chart's
        CPU budget allows (or ``force``); ``build=False``: not in this frame (another panel has it),
        unless the view changed. ``runs``: (name, colour, history) of every run, to overlay when
        there are several. Returns True when a rebuild was deferred."""
        view_key, data_key, hists = self._keys(history, view, runs)
        self._set_title(hists, view, len(runs))
        self.chart.set_cursor(None if view.cursor is None else float(view.cursor))
        now = time.monotonic()
        if force or now >= self._next_stats or view_key != self._view_key:
            self._set_stats(history, view, runs)
            self._next_stats = now + min(STATS_MAX_STALE, STATS_SECONDS * pace)
        changed_view = view_key != self._view_key
        if not changed_view and data_key == self._data_key:
            self.deferred = False
            return False
        if not (force or changed_view) and (now < self._next_build or not build):
            self.deferred = True
            return True
        self._view_key, self._data_key = view_key, data_key
        cols = max(8, self.chart.size.width - 8)
        t0 = time.perf_counter()
        if self.overlay:
            spec = build_overlay_spec(hists, [c for _, c, _ in runs], view, cols)
        else:
            spec = build_spec(history, view, cols)
        self.spec_s = time.perf_counter() - t0
        self.chart.set_spec(spec)
        # the next rebuild waits until the last one's cost (spec and drawing) is CHART_CPU_SHARE of the
        # time, at most CHART_HZ a second, and never longer than CHART_MAX_STALE while data arrive
        cost = self.spec_s + self.chart.last_build_s
        self._next_build = now + min(CHART_MAX_STALE, pace * max(1.0 / CHART_HZ, cost / CHART_CPU_SHARE))
        self.deferred = False
        return False

    def _set_title(self, histories: list[History], view: ViewState, n_runs: int) -> None:
        epochs = per_epoch(view.metric, histories)
        name = LABELS.get(view.metric, f"{view.metric} (epochs)" if epochs else view.metric)
        parts = [name] + ([f"{n_runs} runs"] if self.overlay else [])
        if not epochs:
            parts.append(f"EMA {view.smoothing:.3g}")
        if view.log_y:
            parts.append("log y")
        if view.follow:
            parts.append(
                "[$success]following[/]"
                if view.span is None
                else f"[$success]following[/] last {step_label(view.span)}"
            )
        else:
            ext = data_extent(histories, view.metric)
            if ext is not None:
                lo, hi = view.x_window(*ext)
                # "panned", not "paused": a live run goes on training while the chart stays put
                parts.append(f"[$accent]panned[/] {step_label(lo)}–{step_label(hi)}; f follows")
            else:
                parts.append("[$accent]panned[/]; f follows")
        set_titles(self, title=" · ".join(parts))
        if self.overlay:
            sub = "● one per epoch" if epochs else "━ ema, one colour per run"
        elif epochs:
            sub = "[$warning]●[/] per epoch"
        elif view.metric in ("loss", "acc"):
            sub = "[$primary]━[/] ema [$primary-muted]·[/] raw [$warning]●[/] val"
        else:
            sub = "[$primary]━[/] ema [$primary-muted]·[/] raw"
        nan_step = histories[0].nan_step if len(histories) == 1 else None
        if nan_step is not None and not epochs:
            sub += f" [b $error]┊ nan from step {nan_step:,}[/]"
        sub += marks_legend(histories) if not epochs else ""
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
