"""Border titles that repaint only when they change: assigning ``border_title`` in Textual always
refreshes the widget (and, for a container, everything inside it), even with the same text."""

from __future__ import annotations

from textual.widget import Widget


def set_titles(widget: Widget, title: str | None = None, subtitle: str | None = None) -> None:
    cache = widget.__dict__.setdefault("_tuitrain_titles", {})
    if title is not None and cache.get("title") != title:
        cache["title"] = title
        widget.border_title = title
    if subtitle is not None and cache.get("subtitle") != subtitle:
        cache["subtitle"] = subtitle
        widget.border_subtitle = subtitle
