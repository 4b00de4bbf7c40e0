"""A numpy rasteriser for the training chart: the subset of plotext that :class:`LossChart` uses (one
framed plot with given x/y limits and ticks; braille or one-character lines; one-character scatter
markers), drawn cell for cell as plotext 5.3 draws it, at a fraction of the cost.

Why not plotext itself: it builds a chart point by point in Python lists (every interpolated line
pixel goes through several list comprehensions, a ``set``, a transposition and an ``insert_element``
call), so a 100x37 chart of a noisy loss took 40-70 ms, and these builds were the slow tail of the
200x60 dashboard's frames (p95 60-100 ms). Here the data take a few vectorised numpy passes; only the
frame and the tick labels are placed cell by cell. ``tests/ui/test_ui_fast_paths.py`` checks the
output against plotext's own matrices on random charts and on the app's chart.

Coordinates follow plotext: a value maps to ``floor(round8(0.5 + (bins - 1) * (v - lo) / (hi - lo)))``
on a canvas of ``bins`` dots (2x4 dots per cell for braille); lines join consecutive points with
``max(|dx|, |dy|) + 1`` evenly spaced dots truncated toward zero; dots outside the canvas are dropped
per cell; a later series overwrites an earlier one cell by cell. One deliberate difference: x tick
labels are placed in ascending order, where plotext uses a ``set``'s order (random per process), so
when two labels collide the surviving one no longer depends on the hash seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from plotext._dict import braille_codes

RGB = tuple[int, int, int]
_ROUND8 = 10**8
_UNROUND8 = 10.0**-8  # what plotext's round(n, 8) multiplies back by


def _braille_table() -> np.ndarray:
    """Codepoint for each 8-bit dot pattern; bit ``p`` is plotext's code tuple position ``p`` (rows
    top to bottom, left dot then right dot), so plotext's own glyph choices are kept."""
    table = np.zeros(256, dtype=np.uint32)
    for code, char in braille_codes.items():
        table[sum(bit << p for p, bit in enumerate(code))] = ord(char)
    return table


BRAILLE = _braille_table()
SPACE = ord(" ")


@dataclass
class Series:
    """One plotted series. ``marker`` is "braille" or one character; ``lines`` joins the points
    (plotext's ``plot``), else only the points are drawn (``scatter``)."""

    x: np.ndarray
    y: np.ndarray
    color: RGB
    marker: str = "braille"
    lines: bool = True


@dataclass
class Raster:
    """The chart as screen lines (top first) and a colour index per cell: 0 none, 1 the ticks
    colour, ``2 + i`` the colour of series ``i``."""

    lines: list[str]
    fg: np.ndarray  # (height, width) int16
    colors: list[RGB | None]


def to_cells(v: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """plotext's ``get_matrix_data``: values to dot indices, rounding half up at 8 decimals first
    (so that 9.99999999 lands on 10) and then flooring."""
    c = 0.5 + (bins - 1) * (np.asarray(v, dtype=np.float64) - lo) / (hi - lo)
    n = c * _ROUND8
    f = np.floor(n)
    r = np.where(n - f < 0.5, f, np.ceil(n)) * _UNROUND8
    return np.floor(r).astype(np.int64)


def join_points(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """plotext's ``get_lines``: each pair of consecutive points joined by ``max(|dx|, |dy|) + 1``
    evenly spaced dots (truncated toward zero), the pair's last dot being the next pair's first."""
    if x.shape[0] < 2:
        return x, y
    dx, dy = np.diff(x), np.diff(y)
    steps = np.maximum(np.abs(dx), np.abs(dy))  # dots per segment, its end excluded
    total = int(steps.sum())
    seg = np.repeat(np.arange(steps.shape[0]), steps)
    k = (np.arange(total) - np.repeat(np.cumsum(steps) - steps, steps)).astype(np.float64)
    div = np.where(steps > 0, steps, 1).astype(np.float64)[seg]
    xs = (x[:-1][seg] + k * (dx[seg] / div)).astype(np.int64)  # astype truncates toward zero, like int()
    ys = (y[:-1][seg] + k * (dy[seg] / div)).astype(np.int64)
    return np.append(xs, x[-1]), np.append(ys, y[-1])


def _correct_coord(row: list[int], label: str, coord: int) -> int:
    """plotext's ``correct_coord``: shift a label off its tick so that it sits in free space."""
    n = len(label)
    b, e = max(coord - n + 1, 0), min(coord + n, len(row) - 1)
    free = [i for i in range(b, e) if row[i] == SPACE]
    b, e = min(free, default=coord - n + 1), max(free, default=coord + n)
    b, e = e - n + 1, b + n
    return (b + e - n) // 2


class _Matrix:
    """Cells with plotext's row numbering (row 0 at the bottom) while the frame is laid out."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.chars = np.full((height, width), SPACE, dtype=np.uint32)
        self.fg = np.zeros((height, width), dtype=np.int16)

    def put(self, col: int, row: int, text: str, fg: int = 1) -> None:
        for i, ch in enumerate(text):
            c = col + i
            if 0 <= c < self.w and 0 <= row < self.h:
                self.chars[row, c] = ord(ch)
                self.fg[row, c] = fg

    def put_vertical(self, col: int, row: int, text: str, fg: int = 1) -> None:
        for i, ch in enumerate(text):
            self.put(col, row + i, ch, fg)

    def put_label(self, col: int, row: int, label: str) -> bool:
        """A tick label centred on ``col`` where it fits with a blank cell either side (plotext's
        "dynamic" alignment with ``check_space``); returns whether it was placed."""
        if not 0 <= row < self.h:
            return True  # plotext reports success and draws nothing
        line = self.chars[row].tolist()
        col = _correct_coord(line, label, col)
        n = len(label)
        b, e = max(col - 1, 0), min(col + n + 1, self.w)
        if not (all(line[c] == SPACE for c in range(b, e)) and col >= 0 and col + n <= self.w):
            return False
        self.put(col, row, label)
        return True


def rasterize(
    width: int,
    height: int,
    series: Sequence[Series],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    xticks: Sequence[float],
    xlabels: Sequence[str],
    yticks: Sequence[float],
    ylabels: Sequence[str],
    ticks_color: RGB,
) -> Raster | None:
    """The chart plotext would build for these calls, or None for a layout this does not cover (no
    room for a canvas, empty or non-finite limits): the caller then asks plotext."""
    x0, x1 = min(xlim), max(xlim)
    y0, y1 = min(ylim), max(ylim)
    xt = sorted({(float(t), str(s)) for t, s in zip(xticks, xlabels, strict=True)})
    yt = sorted({(float(t), str(s)) for t, s in zip(yticks, ylabels, strict=True)})
    if not (x1 > x0 and y1 > y0) or not all(math.isfinite(v) for v in (x0, x1, y0, y1)):
        return None
    ylab_w = max((len(s) for _, s in yt), default=0)
    xlab_h = 1 if xt else 0
    wc, hc = width - 2 - ylab_w, height - 2 - xlab_h  # canvas: the frame round it, the labels left and under
    if wc < 1 or hc < 1:
        return None
    col0, row0 = ylab_w + 1, 1 + xlab_h
    col1, row1 = col0 + wc, row0 + hc
    m = _Matrix(width, height)
    # lower x tick labels, then the frame (plotext's order: labels decide which ticks get a mark)
    cticks = to_cells(np.array([t for t, _ in xt]), x0, x1, wc).tolist() if xt else []
    marked = [c for c, (_, s) in zip(cticks, xt, strict=True) if m.put_label(col0 + c, row0 - 2, s)]
    m.put(col0, row1, "─" * wc)
    rticks = to_cells(np.array([t for t, _ in yt]), y0, y1, hc).tolist() if yt else []
    for r, (_, s) in zip(rticks, yt, strict=True):
        m.put(0, r + row0, s.rjust(ylab_w))
    m.put_vertical(ylab_w, row0, "".join("┤" if i in rticks else "│" for i in range(hc)))
    m.put_vertical(col1, row0, "│" * hc)
    m.put(col0 - 1, row0 - 1, "└")
    m.put(col1, row0 - 1, "┘")
    m.put(col0 - 1, row1, "┌")
    m.put(col1, row1, "┐")
    m.put(col0, row0 - 1, "".join("┬" if i in marked else "─" for i in range(wc)))
    canvas_chars = m.chars[row0:row1, col0:col1]  # views: the data go straight into the matrix
    canvas_fg = m.fg[row0:row1, col0:col1]
    for i, s in enumerate(series):
        _draw(canvas_chars, canvas_fg, s, (x0, x1), (y0, y1), 2 + i)
    lines = [m.chars[r].tobytes().decode("utf-32-le") for r in range(height - 1, -1, -1)]
    return Raster(lines, m.fg[::-1].copy(), [None, ticks_color, *(s.color for s in series)])


def _draw(
    chars: np.ndarray,
    fg: np.ndarray,
    s: Series,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    color: int,
) -> None:
    """One series onto the canvas cells (row 0 at the bottom), overwriting what is there."""
    hc, wc = chars.shape
    x = np.asarray(s.x, dtype=np.float64)
    y = np.asarray(s.y, dtype=np.float64)
    n = min(x.shape[0], y.shape[0])
    if not n:
        return
    braille = s.marker == "braille"
    xf, yf = (2, 4) if braille else (1, 1)
    cx, cy = to_cells(x[:n], *xlim, wc * xf), to_cells(y[:n], *ylim, hc * yf)
    if s.lines:
        cx, cy = join_points(cx, cy)
    if braille:
        bit = ((3 - cy % 4) * 2 + cx % 2).astype(np.uint8)
        cx, cy = cx // 2, cy // 4
    inside = (cx >= 0) & (cx < wc) & (cy >= 0) & (cy < hc)
    cx, cy = cx[inside], cy[inside]
    if braille:
        codes = np.zeros((hc, wc), dtype=np.uint8)
        np.bitwise_or.at(codes, (cy, cx), np.left_shift(1, bit[inside]).astype(np.uint8))
        hit = codes > 0
        chars[hit] = BRAILLE[codes[hit]]
        fg[hit] = color
    else:
        chars[cy, cx] = ord(s.marker[0])
        fg[cy, cx] = color
