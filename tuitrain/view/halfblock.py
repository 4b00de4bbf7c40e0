"""Pictures as coloured half-block characters: what the Images screen draws in any terminal.

A terminal cell is about twice as tall as it is wide, so one cell can hold two square pixels: the upper
one as the foreground colour of ``▀`` (upper half block), the lower one as its background. That needs
nothing but truecolor styles (rich downgrades them on terminals with fewer colours), so it works over
plain SSH, in tmux and at 80x24. Terminal graphics protocols (sixel, kitty, iTerm2) would draw real
pixels, but only some terminals have them; an option for them is out of scope here.

numpy and rich only (no textual, no torch): the pictures come from :mod:`tuitrain.view.images`.
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text

UPPER = "▀"  # fg = the upper pixel, bg = the lower one
RGB = tuple[int, int, int]
LOWER = "▄"  # for a cell whose upper pixel lies outside the picture (fg = the lower pixel)


def fit(shape: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """(pixel rows, pixel columns) of a picture of ``shape`` (h, w) scaled (up or down) to fit in
    ``width`` cells x ``2 * height`` pixel rows with its aspect ratio kept (at least 1 x 1)."""
    h, w = max(1, int(shape[0])), max(1, int(shape[1]))
    width, rows = max(1, int(width)), max(1, 2 * int(height))
    scale = min(width / w, rows / h)
    return max(1, min(rows, round(h * scale))), max(1, min(width, round(w * scale)))


def resample(rgb: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour resampling of (H, W, 3) to (rows, cols, 3): every output pixel is one input
    pixel (no blending, so a kernel's or a class's colour stays exact)."""
    h, w = rgb.shape[:2]
    i = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(np.int64), h - 1)
    j = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(np.int64), w - 1)
    return rgb[i[:, None], j[None, :]]


def to_bytes(rgb: np.ndarray) -> np.ndarray:
    """(…, 3) float in [0, 1] -> uint8 0-255 (NaN as 0, values clipped)."""
    x = np.nan_to_num(np.asarray(rgb, dtype=np.float32), nan=0.0)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def halfblock(rgb: np.ndarray, width: int, height: int) -> Text:
    """``height`` lines of ``width`` cells showing ``rgb`` ((H, W, 3) float in [0, 1]).

    The picture is resampled (nearest) to fit ``width`` x ``2 * height`` pixels keeping its aspect
    ratio and centred; each cell is ``▀`` with fg = its upper pixel and bg = its lower one. Cells
    wholly outside the picture are plain spaces (the terminal's own background); a cell with only its
    lower pixel inside (an odd vertical offset) is ``▄`` in that pixel's colour."""
    width, height = max(1, int(width)), max(1, int(height))
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return Text("\n".join(" " * width for _ in range(height)))
    ph, pw = fit(rgb.shape[:2], width, height)
    pix = to_bytes(resample(rgb, ph, pw))
    top, left = (2 * height - ph) // 2, (width - pw) // 2
    canvas = np.zeros((2 * height, width, 3), dtype=np.uint8)
    inside = np.zeros((2 * height, width), dtype=bool)
    canvas[top : top + ph, left : left + pw] = pix
    inside[top : top + ph, left : left + pw] = True
    styles: dict[tuple[int, ...], Style] = {}
    text = Text(no_wrap=True, overflow="crop")
    for line in range(height):
        up, lo = canvas[2 * line], canvas[2 * line + 1]
        up_in, lo_in = inside[2 * line], inside[2 * line + 1]
        run_key: tuple[int, ...] | None = None
        run_chars: list[str] = []
        for col in range(width):
            if up_in[col]:
                ch = UPPER
                key: tuple[int, ...] = (*up[col].tolist(), *(lo[col].tolist() if lo_in[col] else ()))
            elif lo_in[col]:
                ch, key = LOWER, tuple(lo[col].tolist())
            else:
                ch, key = " ", ()
            if key != run_key and run_chars:
                text.append("".join(run_chars), _style(styles, run_key))
                run_chars = []
            run_key = key
            run_chars.append(ch)
        if run_chars:
            text.append("".join(run_chars), _style(styles, run_key))
        if line < height - 1:
            text.append("\n")
    return text


def _style(cache: dict[tuple[int, ...], Style], key: tuple[int, ...] | None) -> Style | None:
    """fg (and bg) of a run of cells: key is () for blanks, (r, g, b) fg only, (r, g, b, r, g, b) both."""
    if not key:
        return None
    got = cache.get(key)
    if got is None:
        fg = Color.from_rgb(*key[:3])
        bg = Color.from_rgb(*key[3:]) if len(key) == 6 else None
        got = cache[key] = Style(color=fg, bgcolor=bg)
    return got


def cell_colors(text: Text) -> list[list[tuple[RGB | None, RGB | None]]]:
    """Per line, per cell, (fg, bg) as (r, g, b) or None: what a test (or a screenshot check) reads
    back from a :func:`halfblock` picture (its spans are Style objects, never markup)."""
    out: list[list[tuple[RGB | None, RGB | None]]] = []
    for line in text.split("\n", allow_blank=True):
        row: list[tuple[RGB | None, RGB | None]] = [(None, None)] * len(line.plain)
        for span in line.spans:
            st = span.style if isinstance(span.style, Style) else Style.parse(str(span.style))
            cell = (_triplet(st.color), _triplet(st.bgcolor))
            row[span.start : span.end] = [cell] * (span.end - span.start)
        out.append(row)
    return out


def _triplet(color: Color | None) -> RGB | None:
    if color is None or color.triplet is None:
        return None
    t = color.triplet
    return (t.red, t.green, t.blue)
