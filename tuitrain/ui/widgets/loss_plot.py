"""Training curves: train loss per step (raw min/max envelope, faint, and EMA-smoothed) with the
validation loss per epoch placed at the epoch's last step; a key switches to accuracy, another to a
log y axis. The y range ignores early outliers; x zooms and pans from the keyboard, and the title says
whether the view follows the live run. Two stats lines under the chart always show the latest loss
and accuracy (train, smoothed, validation and best).

Data are downsampled before plotext sees them (min/max per column for the raw curve, bucket means
for the smoothed one: at most two points per column), and plotext builds are cached and rate-limited
by their own cost (the chart spends ~3% of a core, and is never more than 1 s stale), since a build
costs 5-40 ms; its output is parsed into strips once per build and served through the line API.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import plotext._utility as pt_ut
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

from tuitrain.ui.history import (
    History,
    ViewState,
    bucket_mean,
    fmt_si,
    log_ticks,
    minmax_downsample,
    robust_range,
)
from tuitrain.ui.widgets.titles import set_titles

STATS_SECONDS = 0.5  # the numbers under the chart refresh at 2 Hz while streaming
CHART_CPU_SHARE = 0.03  # a chart rebuild waits until its last build cost is this share of the time
CHART_MAX_STALE = 1.0  # ... but never longer than this while data arrives


@dataclass
class ChartSpec:
    """Everything one chart build needs, already downsampled."""

    raw_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    raw_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sm_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sm_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] | None = None
    yticks: list[float] = field(default_factory=list)
    ylabels: list[str] = field(default_factory=list)
    message: str = ""


def nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    if not (hi > lo) or count < 2:
        return [lo]
    raw = (hi - lo) / (count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [v for v in np.arange(start, hi + step * 0.001, step)]


def step_label(v: float) -> str:
    v = float(v)
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{int(round(v))}"


def build_spec(history: History, view: ViewState, columns: int) -> ChartSpec:
    """The chart's data for the current view: pure numpy, unit-testable without a terminal."""
    metric = view.metric
    x = history.column("step")
    spec = ChartSpec()
    if x.shape[0] == 0:
        spec.message = "waiting for the first steps…" if not history.is_finished else "no steps recorded"
        return spec
    y = history.column(metric)
    ys = history.smoothed(metric, view.smoothing)
    first, last = float(x[0]), float(x[-1])
    lo, hi = view.x_window(first, last)
    i0 = int(np.searchsorted(x, lo, "left"))
    i1 = int(np.searchsorted(x, hi, "right"))
    xr, yr, ysr = x[i0:i1], y[i0:i1], ys[i0:i1]
    scale = 100.0 if metric == "acc" else 1.0
    ep = history.epochs
    vx = ep.column("step") if len(ep) else np.zeros(0)
    vy = ep.column("val_acc" if metric == "acc" else "val_loss") if len(ep) else np.zeros(0)
    sel = (vx >= lo) & (vx <= hi) & np.isfinite(vy)
    vx, vy = vx[sel], vy[sel] * scale
    spec.raw_x, spec.raw_y = minmax_downsample(xr, yr * scale, columns)
    if xr.shape[0] > columns:
        both = bucket_mean(np.stack([xr, ysr * scale], axis=1), columns)
        spec.sm_x, spec.sm_y = both[:, 0], both[:, 1]
    else:
        spec.sm_x, spec.sm_y = xr, ysr * scale
    ok = np.isfinite(spec.sm_y)
    spec.sm_x, spec.sm_y = spec.sm_x[ok], spec.sm_y[ok]
    spec.val_x, spec.val_y = vx, vy
    if view.log_y:
        spec.raw_x, spec.raw_y = _log(spec.raw_x, spec.raw_y)
        spec.sm_x, spec.sm_y = _log(spec.sm_x, spec.sm_y)
        spec.val_x, spec.val_y = _log(spec.val_x, spec.val_y)
    skip = 0.05 if i0 == 0 else 0.0
    rng = robust_range(spec.raw_y, spec.sm_y, spec.val_y, skip_frac=skip)
    spec.xlim = (lo, hi if hi > lo else lo + 1)
    if rng is None:
        spec.message = f"no finite {metric} values yet"
        return spec
    spec.ylim = rng
    if view.log_y:
        ticks = log_ticks(*rng, max_ticks=5)
        if len(ticks) < 2:
            ticks = list(np.linspace(rng[0], rng[1], 4)[1:-1])
        spec.yticks = ticks
        spec.ylabels = [fmt_si(10**t, 2) for t in ticks]
    return spec


def _log(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(y) & (y > 0)
    return x[ok], np.log10(y[ok])


def _plotext_color(color) -> RichColor | None:
    if color is None or color == pt_ut.no_color:
        return None
    if isinstance(color, (tuple, list)) and len(color) == 3:
        return RichColor.from_rgb(*color)
    if isinstance(color, int):
        return RichColor.from_ansi(color)
    if isinstance(color, str) and pt_ut.is_string_color(color):
        return RichColor.from_ansi(pt_ut.get_color_code(color))
    return None


_SGR = {1: "bold", 2: "dim", 3: "italic", 4: "underline", 5: "blink", 7: "reverse", 9: "strike"}


def _plotext_style(fg, style, bg, cache: dict) -> Style:
    key = (fg if not isinstance(fg, list) else tuple(fg), style, bg if not isinstance(bg, list) else tuple(bg))
    st = cache.get(key)
    if st is None:
        attrs = {}
        if style != pt_ut.no_color and pt_ut.is_style(style):
            for code in pt_ut.get_style_codes(style):
                if code in _SGR:
                    attrs[_SGR[code]] = True
        st = Style(color=_plotext_color(fg), bgcolor=_plotext_color(bg), **attrs)
        cache[key] = st
    return st


def _matrix_strips(marker, fullground, style, background, cache: dict) -> list[list[Segment]]:
    """plotext's matrices (row 0 at the bottom) -> one list of segments per screen line, merging
    runs of equal colours."""
    out = []
    for r in range(len(marker) - 1, -1, -1):
        chars, fgs, sts, bgs = marker[r], fullground[r], style[r], background[r]
        segs: list[Segment] = []
        run: list[str] = []
        prev = None
        for c in range(len(chars)):
            key = (fgs[c], sts[c], bgs[c])
            if key != prev and run:
                segs.append(Segment("".join(run), _plotext_style(*prev, cache)))
                run = []
            prev = key
            run.append(chars[c])
        if run:
            segs.append(Segment("".join(run), _plotext_style(*prev, cache)))
        out.append(segs)
    return out


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

    def set_spec(self, spec: ChartSpec) -> None:
        self.spec = spec
        self.spec_version += 1
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """Line API: plotext's output is parsed into strips once per build, not laid out as rich
        Text on every repaint (that costs more than the build itself)."""
        key = (self.spec_version, self.size.width, self.size.height, self.app.theme)
        if key != self._cache_key:
            t0 = time.perf_counter()
            self._strips = self._build_strips()
            self.last_build_s = time.perf_counter() - t0
            self.builds += 1
            self._cache_key = key
        width = self.size.width
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)

    def _build_strips(self) -> list[Strip]:
        """Build the figure and read plotext's character/colour matrix straight into strips,
        skipping its ANSI canvas and rich's ANSI parser (two thirds of the cost). Falls back to
        the ANSI route if plotext's internals are not what we expect."""
        text = self._build(matrix_only=True)
        if text is not None:
            return self._to_strips(text)
        try:
            m = self.plt.monitor.matrix
            rows = _matrix_strips(m.marker, m.fullground, m.style, m.background, self._style_cache)
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
        if spec.raw_x.size:
            # the raw min/max envelope at cell resolution: a faint band; braille here costs 4x the build
            plt.plot(spec.raw_x.tolist(), spec.raw_y.tolist(), marker="·", color=c["raw"])
        if spec.sm_x.size:
            plt.plot(spec.sm_x.tolist(), spec.sm_y.tolist(), marker="braille", color=c["smooth"])
        if spec.val_x.size:
            if spec.val_x.size > 1:
                plt.plot(spec.val_x.tolist(), spec.val_y.tolist(), marker="braille", color=c["val"])
            plt.scatter(spec.val_x.tolist(), spec.val_y.tolist(), marker="●", color=c["val"])
        x0, x1 = spec.xlim
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
        self._content = Content("")

    def set_markup(self, markup: str) -> None:
        if markup != self.markup:
            self.markup = markup
            self._content = Content.from_markup(markup)
            self.refresh()

    def render(self) -> Content:
        return self._content


class LossPanel(Vertical):
    """The chart, its title (metric, smoothing, follow state) and the two stats lines."""

    DEFAULT_CSS = """
    LossPanel {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.chart = LossChart(id="loss-chart")
        self.stats = StatsLines(id="loss-stats")
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

    def update_data(self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0) -> bool:
        """Refresh title and stats; rebuild the chart spec if data or view changed and the chart's
        CPU budget allows (or ``force``). Returns True when a rebuild was deferred."""
        view_key = (view.metric, view.log_y, round(view.smoothing, 4), view.follow, view.span, view.end,
                    self.chart.size.width, self.chart.size.height)
        data_key = (history.version, history.scalars.n, len(history.epochs))
        self._set_title(history, view)
        now = time.monotonic()
        if force or now >= self._next_stats or view_key != self._view_key:
            self._set_stats(history, view)
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
        self.chart.set_spec(build_spec(history, view, cols))
        self._next_build = now + pace * min(CHART_MAX_STALE, max(0.1, self.chart.last_build_s / CHART_CPU_SHARE))
        self.deferred = False
        return False

    def _set_title(self, history: History, view: ViewState) -> None:
        name = "Accuracy %" if view.metric == "acc" else "Loss"
        parts = [name, f"EMA {view.smoothing:.3g}"]
        if view.log_y:
            parts.append("log y")
        if view.follow:
            parts.append("[$success]following[/]" if view.span is None else f"[$success]following[/] last {step_label(view.span)}")
        else:
            x = history.column("step")
            if x.shape[0]:
                lo, hi = view.x_window(float(x[0]), float(x[-1]))
                parts.append(f"[$warning]paused view[/] {step_label(lo)}–{step_label(hi)} (f: follow)")
            else:
                parts.append("[$warning]paused view[/]")
        set_titles(self, title=" · ".join(parts))
        set_titles(self, subtitle="[$primary]━[/] ema [$primary-muted]·[/] raw [$warning]●[/] val")

    def _set_stats(self, history: History, view: ViewState) -> None:
        width = self.stats.content_region.width or 40
        self.stats.set_markup(stats_markup(history, view, width))


def _last_finite(a: np.ndarray) -> float:
    fin = a[np.isfinite(a)]
    return float(fin[-1]) if fin.size else float("nan")


def stats_markup(history: History, view: ViewState, width: int) -> str:
    """Two lines: loss and accuracy (latest, EMA, best step value, validation and best validation)."""
    lines = []
    if history.scalars.n == 0:
        return "[b]loss[/] —\n[b]acc [/] —"
    for metric in ("loss", "acc"):
        y = history.column(metric)
        pct = metric == "acc"
        f = (lambda v: "—" if not math.isfinite(v) else f"{v * 100:.1f}%") if pct else (lambda v: fmt_si(v, 4) if math.isfinite(v) else "—")
        latest = _last_finite(y)
        sm = _last_finite(history.smoothed(metric, view.smoothing)) if y.shape[0] else float("nan")
        fin = y[np.isfinite(y)]
        best = (float(fin.max()) if pct else float(fin.min())) if fin.size else float("nan")
        ep = history.epochs
        val = ep.column("val_acc" if pct else "val_loss") if len(ep) else np.zeros(0)
        vlast = _last_finite(val)
        vbest = history.best_val_acc if pct else history.best_val_loss
        vbest = float("nan") if vbest is None else vbest
        label = "acc " if pct else "loss"
        hl = "[b $primary]" if view.metric == metric else "[b]"
        full = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$text-muted]{'max' if pct else 'min'}[/] {f(best)}  [$warning]val[/] [b]{f(vlast)}[/] [$text-muted]best[/] {f(vbest)}"
        short = f"{hl}{label}[/] [b]{f(latest)}[/] [$text-muted]ema[/] {f(sm)} [$warning]val[/] [b]{f(vlast)}[/] [$text-muted]best[/] {f(vbest)}"
        tiny = f"{hl}{label}[/] [b]{f(latest)}[/] [$warning]val[/] {f(vlast)} [$text-muted]best[/] {f(vbest)}"
        for cand in (full, short, tiny):
            if _plain_len(cand) <= width:
                lines.append(cand)
                break
        else:
            lines.append(tiny)
    return "\n".join(lines)


def _plain_len(markup: str) -> int:
    return Content.from_markup(markup).cell_length
