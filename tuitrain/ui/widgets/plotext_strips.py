"""Chart cells into rich segments: plotext's character and colour matrices (the fallback path, skipping
plotext's ANSI canvas and rich's ANSI parser) and :class:`~tuitrain.ui.widgets.chart_raster.Raster`
output (the usual path)."""

from __future__ import annotations

import numpy as np
import plotext._utility as pt_ut
from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style

from tuitrain.ui.widgets.chart_raster import Raster, Series


def draw_figure(
    plt,
    width: int,
    height: int,
    theme: str,
    series: list[Series],
    xlim: tuple[float, float],
    ylim: tuple[float, float] | None,
    ticks: tuple[list[float], list[str], list[float], list[str]],
) -> None:
    """Draw a chart with plotext into ``plt.monitor.matrix`` (what ``plt.build()`` does, minus the
    ANSI canvas): the fallback for what :func:`~tuitrain.ui.widgets.chart_raster.rasterize` does not
    cover, and the reference it is tested against."""
    plt.clear_data()
    plt.plotsize(width, height)
    plt._set_size(width, height)  # see textual-plotext issue #5: plotsize alone does not always take
    plt.theme(theme)
    for s in series:
        draw = plt.plot if s.lines else plt.scatter
        draw(np.asarray(s.x).tolist(), np.asarray(s.y).tolist(), marker=s.marker, color=s.color)
    xt, xl, yt, yl = ticks
    plt.xlim(*xlim)
    plt.xticks(xt, xl)
    if ylim is not None:
        plt.ylim(*ylim)
    plt.yticks(yt, yl)
    plt._set_sizes()
    plt._build_matrix()


def plotext_color(color) -> RichColor | None:
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


def plotext_style(fg, style, bg, cache: dict) -> Style:
    key = (
        fg if not isinstance(fg, list) else tuple(fg),
        style,
        bg if not isinstance(bg, list) else tuple(bg),
    )
    st = cache.get(key)
    if st is None:
        attrs = {}
        if style != pt_ut.no_color and pt_ut.is_style(style):
            for code in pt_ut.get_style_codes(style):
                if code in _SGR:
                    attrs[_SGR[code]] = True
        st = Style(color=plotext_color(fg), bgcolor=plotext_color(bg), **attrs)
        cache[key] = st
    return st


def matrix_strips(marker, fullground, style, background, cache: dict) -> list[list[Segment]]:
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
                segs.append(Segment("".join(run), plotext_style(*prev, cache)))
                run = []
            prev = key
            run.append(chars[c])
        if run:
            segs.append(Segment("".join(run), plotext_style(*prev, cache)))
        out.append(segs)
    return out


def raster_segments(
    raster: Raster, background: tuple[int, int, int], base: Style | None = None
) -> list[list[Segment]]:
    """One list of segments per screen line, one segment per run of equal colour, every cell on
    ``background`` (what plotext's matrices give for the same cells: no attributes, the colour or
    none) under ``base`` (the widget's style, applied once per colour rather than per segment)."""
    bg = RichColor.from_rgb(*background)
    styles = [Style(color=None if c is None else RichColor.from_rgb(*c), bgcolor=bg) for c in raster.colors]
    if base is not None:
        styles = [base + st for st in styles]
    out = []
    for line, fg in zip(raster.lines, raster.fg, strict=True):
        cuts = (np.flatnonzero(fg[1:] != fg[:-1]) + 1).tolist()
        out.append(
            [
                Segment(line[a:b], styles[int(fg[a])])
                for a, b in zip([0, *cuts], [*cuts, len(line)], strict=True)
            ]
        )
    return out
