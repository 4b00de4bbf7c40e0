"""One panel of the Images screen: a bordered box with a title ("kernels · epoch 3 · step 120"), a
subtitle (the module, what the colours mean) and a picture drawn in coloured half-block characters
(:mod:`tuitrain.view.halfblock`) at whatever size the panel has, or one line saying why there is none.

The picture is given as a *drawer*: a function of the content's (width, height) in cells that returns
the rich Text, so a resize redraws it at the new size with its aspect ratio kept (no rescaling of a
drawn Text). The last drawn Text stays on :attr:`ImagePanel.text` (tests read its cells back)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual.widget import Widget

from tuitrain.ui.widgets.titles import set_titles
from tuitrain.view.halfblock import halfblock

Drawer = Callable[[int, int], Text]


def picture_drawer(rgb: np.ndarray) -> Drawer:
    """A drawer of an (H, W, 3) picture fitted (aspect kept, centred) to the panel."""
    return lambda width, height: halfblock(rgb, width, height)


class ImagePanel(Widget):
    """A picture (or a message) with a title and subtitle in its border."""

    DEFAULT_CSS = """
    ImagePanel {
        border: round $primary-darken-1;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        padding: 0 0;
        height: 1fr;
        width: 1fr;
        min-width: 12;
    }
    ImagePanel.-message { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.drawer: Drawer | None = None
        self.message = ""
        self.text: Text | None = None  # the last picture drawn
        self._key: object = None
        self._drawn: tuple[object, int, int] | None = None
        self._titles = ("", "")

    def _fit_title(self) -> None:
        full, short = self._titles
        room = self.size.width - 4  # the corners and a space each side
        set_titles(self, title=full if room <= 0 or len(full) <= room else short)

    def on_resize(self) -> None:
        self._fit_title()

    def show(
        self,
        key: object,
        title: str,
        subtitle: str,
        drawer: Drawer | None,
        message: str = "",
        short_title: str = "",
    ) -> None:
        """Show ``drawer``'s picture (or ``message`` when it is None). ``key`` names what is shown: the
        same key again redraws nothing (the screen refreshes ten times a second). ``short_title``
        replaces ``title`` in a panel too narrow for it (at 80x24 three panels are 26 columns wide:
        "epoch 3 · step 120" must stay readable rather than be cut after "kernels · epoch 3")."""
        self._titles = (title, short_title or title)
        self._fit_title()
        set_titles(self, subtitle=subtitle)
        if key == self._key:
            return
        self._key = key
        self.drawer, self.message = drawer, message
        self.set_class(drawer is None, "-message")
        self.refresh()

    def render(self) -> Text:
        if self.drawer is None:
            self.text = None
            return Text(self.message)
        w, h = self.content_size.width, self.content_size.height
        if w <= 0 or h <= 0:
            return Text("")
        if self._drawn != (self._key, w, h) or self.text is None:
            self.text = self.drawer(w, h)
            self._drawn = (self._key, w, h)
        return self.text
