"""Shared base for the per-layer panels (gradient bars, update sparklines, heatmap rows): one line per
parameter tensor in model order, rendered through Textual's line API so that hundreds of layers cost
only the lines on screen, scrolling when the model has more tensors than rows."""

from __future__ import annotations

import math
import re
import textwrap

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tuitrain.ui.history import History, ViewState

HEALTH_CLASSES = ("normal", "vanishing", "exploding", "nonfinite")
BLOCKS = " ▏▎▍▌▋▊▉█"
SPARKS = "▁▂▃▄▅▆▇█"

# What the per-layer panels say for a run without per-layer probes (a user's loop that never called
# run.watch), instead of waiting for gradients that will never come.
NO_PROBES = "no per-layer probes: call run.watch(model, optimizer)"

_PAIR = re.compile(r"(?<![A-Za-z0-9_])([A-Za-z_]+)\.(\d+)(?=\.|$)")


def short_name(name: str, width: int) -> str:
    """Fit a parameter name into ``width`` cells: first ``.weight``→``.w`` / ``.bias``→``.b``, then
    ``stages.0.blocks.1``→``s0.b1``, then cut on the left with an ellipsis (the end is the informative
    part)."""
    if width <= 0:
        return ""
    if len(name) <= width:
        return name
    n = re.sub(r"\.weight$", ".w", name)
    n = re.sub(r"\.bias$", ".b", n)
    if len(n) > width:
        n = _PAIR.sub(lambda m: f"{m.group(1)[0]}{m.group(2)}", n)
    if len(n) > width:  # s0.b1.conv0.w -> s0b1.conv0.w: the abbreviated path needs no dots
        n = re.sub(r"(?<=\d)\.(?=[a-z]\d)", "", n)
    if len(n) > width:  # s2.reduce.conv1.w -> s2.r.conv1.w: initials for the path, the leaf stays
        parts = n.split(".")
        parts[:-2] = [
            "".join(w[:1] for w in p.split("_")) if p.replace("_", "").isalpha() else p for p in parts[:-2]
        ]
        n = ".".join(parts)
    if len(n) > width:  # l0.linear.w -> l0.lin.w: three letters name a layer type well enough
        parts = n.split(".")
        if len(parts) >= 2:
            parts[-2] = re.sub(r"^([a-z]{3})[a-z_]+", r"\1", parts[-2])
            n = ".".join(parts)
    if len(n) > width:
        n = "…" + n[-(width - 1) :] if width > 1 else n[-1:]
    return n


def log_bar(value: float, lo: float, hi: float, width: int) -> str:
    """A left-aligned bar of ``width`` cells for ``log10(value)`` on the decade scale [lo, hi]."""
    if width <= 0:
        return ""
    if not (value > 0 and math.isfinite(value)):
        return " " * width
    frac = (math.log10(value) - lo) / max(1e-9, hi - lo)
    return frac_bar(frac, width)


def frac_bar(frac: float, width: int) -> str:
    frac = min(1.0, max(0.0, frac))
    eighths = int(round(frac * width * 8))
    full, part = divmod(eighths, 8)
    if full == 0 and part == 0 and frac > 0:
        part = 1  # anything above the floor shows at least a sliver
    bar = "█" * full + (BLOCKS[part] if part and full < width else "")
    return bar.ljust(width)


def decade_range(values: np.ndarray, min_span: float = 1.0) -> tuple[float, float] | None:
    v = values[np.isfinite(values) & (values > 0)]
    if not v.size:
        return None
    lo = math.floor(math.log10(float(v.min())))
    hi = math.ceil(math.log10(float(v.max())))
    if hi - lo < min_span:
        hi = lo + min_span
    return float(lo), float(hi)


def decade_label(d: float) -> str:
    return f"1e{int(d)}" if d != 0 else "1"


class LayerRows(ScrollView, can_focus=True):
    """One line per visible layer; subclasses fill :attr:`rows` in :meth:`update_data` and draw a
    line in :meth:`render_row`."""

    DEFAULT_CSS = """
    LayerRows {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    LayerRows > .layer-rows--name { color: $foreground; }
    LayerRows > .layer-rows--dim { color: $text-muted; }
    LayerRows > .layer-rows--normal { color: $success; }
    LayerRows > .layer-rows--vanishing { color: $warning; }
    LayerRows > .layer-rows--exploding { color: $error; }
    LayerRows > .layer-rows--nonfinite { color: $error; text-style: bold; }
    """
    COMPONENT_CLASSES = {
        "layer-rows--name",
        "layer-rows--dim",
        "layer-rows--normal",
        "layer-rows--vanishing",
        "layer-rows--exploding",
        "layer-rows--nonfinite",
    }

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.layer_index: np.ndarray = np.zeros(0, dtype=np.int64)  # visible layer -> model index
        self.names: list[str] = []
        self.empty_text = "waiting for the first gradients…"
        self._waiting: str | None = None  # the panel's own empty text, for runs that have probes
        self._base: Style | None = None
        self._width = 1  # content width, once per render pass
        self._styled: dict[Style, Style] = {}  # style -> the widget's style + it, for this render pass
        self.gap = Segment(" ")  # one blank cell in the widget's style (set per render pass)
        self._names_cache: dict[tuple[int, int], list[Segment]] = {}  # (row, width) -> name segments
        self._names_key: tuple | None = None

    # -- data --------------------------------------------------------------------------------

    def set_layers(self, history: History, view: ViewState) -> None:
        if self._waiting is None:
            self._waiting = self.empty_text
        self.empty_text = self._waiting if history.has_grad else NO_PROBES
        self.layer_index = history.visible_layers(view.hide_bias_norm)
        names = [history.layers[i].name for i in self.layer_index]
        if names != self.names:  # the same list while unchanged: the name segments stay cached
            self.names = names
        height = max(1, len(self.names))
        if self.virtual_size.height != height:
            self.virtual_size = Size(self.content_width, height)

    def update_data(self, history: History, view: ViewState) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def content_width(self) -> int:
        return max(1, self.scrollable_content_region.width)

    @property
    def showing(self) -> bool:
        """Worth computing for: displayed and with a size."""
        return self.display and self.size.width > 0 and self.size.height > 0

    def name_width(self, width: int) -> int:
        return int(min(28, max(8, width * 0.44)))

    # -- drawing -----------------------------------------------------------------------------

    def style(self, name: str) -> Style:
        """A component style (cached by Textual per CSS update) with the widget's own style folded in."""
        return self.styled(self.get_component_rich_style(f"layer-rows--{name}"))

    def styled(self, style: Style | None) -> Style:
        """``style`` over the widget's style, once per render pass: the segments a row is built from
        are final, so a line needs no ``apply_style`` pass (a new strip and a style sum per segment)."""
        if self._base is None:
            return self.rich_style if style is None else self.rich_style + style
        if style is None:
            return self._base
        got = self._styled.get(style)
        if got is None:
            got = self._styled[style] = self._base + style
        return got

    def render_lines(self, crop: Region) -> list[Strip]:
        base = self.rich_style  # computed once per render pass, not once per line
        if base != self._base:
            self._base, self._styled, self.gap = base, {}, Segment(" ", base)
        self._width = self.content_width
        # names only change with the layer list or the styles: a cursor move repaints the bars only
        key = (id(self.names), len(self.names), self.style("dim"), self.style("name"))
        if key != self._names_key:
            self._names_key, self._names_cache = key, {}
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        base = self._base if self._base is not None else self.rich_style
        scroll_x, scroll_y = self.scroll_offset
        row = y + scroll_y
        width = self._width if self._base is not None else self.content_width
        if not self.names:  # the empty text, wrapped to the panel
            lines = textwrap.wrap(self.empty_text, max(1, width)) or [""]
            text = lines[y] if y < len(lines) else ""
            return Strip([Segment(text[:width], self.style("dim"))]).extend_cell_length(width, base)
        if row >= len(self.names):
            return Strip.blank(width, base)
        return Strip(self.render_row(row, width)).adjust_cell_length(width, base)

    def render_row(self, row: int, width: int) -> list[Segment]:  # pragma: no cover - abstract
        """The segments of one row, every one styled through :meth:`style`, :meth:`styled` or
        :attr:`gap` (they are not restyled afterwards)."""
        raise NotImplementedError

    def name_segments(self, row: int, width: int) -> list[Segment]:
        """``NN name`` with the model index, padded to ``width``."""
        got = self._names_cache.get((row, width))
        if got is None:
            got = self._names_cache[(row, width)] = self._name_segments(row, width)
        return list(got)

    def _name_segments(self, row: int, width: int) -> list[Segment]:
        idx = int(self.layer_index[row])
        digits = len(str(max(1, len(self.layer_index) and int(self.layer_index[-1]))))
        label = f"{idx:>{digits}} "
        nm = short_name(self.names[row], max(1, width - len(label)))
        return [Segment(label, self.style("dim")), Segment(nm.ljust(width - len(label)), self.style("name"))]
