"""plotext's character and colour matrices straight into Textual strips, skipping plotext's ANSI canvas
and rich's ANSI parser (two thirds of a chart build's cost)."""

from __future__ import annotations

import plotext._utility as pt_ut
from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style


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
    key = (fg if not isinstance(fg, list) else tuple(fg), style, bg if not isinstance(bg, list) else tuple(bg))
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
