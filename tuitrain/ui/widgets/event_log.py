"""The run's events, newest at the bottom: epoch summaries, new best validation accuracy, NaN/Inf,
vanishing/exploding gradient alerts, checkpoints, warnings, status changes; coloured by level. Reads
the history's bounded log deque; sticks to the bottom unless the user scrolled up.

A message longer than the panel wraps onto indented continuation lines instead of being cut at the
edge: cut, ``... below 1e-08 for 50 steps`` read ``below 1e-0`` at 80x24, a different number. The text
is laid out one column narrower than the panel, so the scrollbar, when it appears, never covers it."""

from __future__ import annotations

import textwrap

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from tuitrain.ui.history import History, LogEntry
from tuitrain.ui.widgets.titles import set_titles

LEVELS = ("info", "success", "warning", "error")
MARKS = {"info": "·", "success": "✓", "warning": "!", "error": "✗"}


class EventLog(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    EventLog {
        border: round $primary-muted;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    EventLog:focus { border: round $primary; }
    EventLog > .event-log--step { color: $text-muted; }
    EventLog > .event-log--info { color: $foreground; }
    EventLog > .event-log--success { color: $success; }
    EventLog > .event-log--warning { color: $warning; }
    EventLog > .event-log--error { color: $error; text-style: bold; }
    """
    COMPONENT_CLASSES = {
        "event-log--step",
        "event-log--info",
        "event-log--success",
        "event-log--warning",
        "event-log--error",
    }

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.entries: list[LogEntry] = []
        self._key: int | None = None
        self._step_w = 1
        self._base: Style | None = None
        self.lines: list[tuple[int, str]] = []  # (entry index, text) per screen line, wrapped
        self._wrap_cache: dict[tuple[int, str, int, int], list[str]] = {}
        self._wrapped_for: tuple[int | None, int] = (None, 0)

    def on_mount(self) -> None:
        self.border_title = "Events"

    def has_news(self, history: History) -> bool:
        """Whether the history logged something this panel does not show yet."""
        return self._key != history.log_total

    def update_data(self, history: History, view=None) -> None:
        if not self.has_news(history):
            return
        self._key = history.log_total
        at_bottom = self.scroll_y >= self.max_scroll_y
        self.entries = list(history.log)
        self._step_w = max((len(f"{e.step:,}") for e in self.entries), default=1)
        warn = sum(1 for e in self.entries if e.level in ("warning", "error"))
        set_titles(
            self,
            subtitle=f"{len(self.entries)} events"
            + (f" · {warn} warning{'s' if warn > 1 else ''}" if warn else ""),
        )
        self._wrap()
        rows = Size(self.scrollable_content_region.width, len(self.lines))
        if rows != self.virtual_size and hasattr(self, "_scroll_update"):
            # a taller log needs no layout pass (assigning virtual_size asks for one: a full-screen
            # reflow, 10-15 ms at 200x60, on every new entry): set it and update the scrollbars as
            # Textual does for a resize without layout (a scrollbar that appears still relayouts)
            self.set_reactive(Widget.virtual_size, rows)
            self._scroll_update(rows)
        elif rows != self.virtual_size:  # a Textual without that internal: the plain way
            self.virtual_size = rows
        if at_bottom:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def text_width(self) -> int:
        """Columns the text may use: the panel's, less one for a scrollbar (shown or not)."""
        return max(8, self.size.width - 1)

    def _wrap(self) -> None:
        """Lay the entries out as screen lines at the current width (cached per entry and width)."""
        width = self.text_width()
        if self._wrapped_for == (self._key, width):
            return
        self._wrapped_for = (self._key, width)
        indent = self._step_w + 3  # "step m " before the message
        room = max(4, width - indent)
        cache, fresh = self._wrap_cache, {}
        lines: list[tuple[int, str]] = []
        for i, e in enumerate(self.entries):
            key = (id(e), e.message, room, self._step_w)
            parts = cache.get(key)
            if parts is None:
                parts = textwrap.wrap(e.message, room, break_on_hyphens=False) or [""]
            fresh[key] = parts
            lines.extend((i, p) for p in parts)
        self._wrap_cache = fresh
        self.lines = lines

    def on_resize(self) -> None:
        self._wrap()
        rows = Size(self.scrollable_content_region.width, len(self.lines))
        if rows != self.virtual_size:
            self.virtual_size = rows
        self.refresh()

    def text_lines(self) -> list[str]:
        return [f"{e.step:>{self._step_w},} {MARKS.get(e.level, '·')} {e.message}" for e in self.entries]

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base = self.rich_style  # once per render pass
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        base = self._base if self._base is not None else self.rich_style
        _, scroll_y = self.scroll_offset
        width = max(1, self.scrollable_content_region.width)
        i = y + scroll_y
        if i >= len(self.lines):
            if not self.entries and y == 0:
                return (
                    Strip([Segment("no events yet", self._style("step"))])
                    .extend_cell_length(width)
                    .apply_style(base)
                )
            return Strip.blank(width, base)
        k, text = self.lines[i]
        e = self.entries[k]
        level = e.level if e.level in LEVELS else "info"
        st = self._style(level)
        if i and self.lines[i - 1][0] == k:  # a continuation line of the same entry
            segs = [Segment(" " * (self._step_w + 3)), Segment(text, st)]
        else:
            segs = [
                Segment(f"{e.step:>{self._step_w},} ", self._style("step")),
                Segment(f"{MARKS.get(level, '·')} {text}", st),
            ]
        return Strip(segs).adjust_cell_length(width).apply_style(base)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"event-log--{name}")
