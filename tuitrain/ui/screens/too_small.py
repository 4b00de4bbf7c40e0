"""What a terminal smaller than the dashboard's minimum shows: one clear message instead of panels
squeezed past reading (at 60x20 the chart was 14 columns wide and the numbers cut).

The minimum is 80x24, the size the README promises and every panel is laid out for. Training is not
affected: the message goes as soon as the terminal is large enough again, and ``q`` still quits."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Size
from textual.screen import ModalScreen
from textual.widgets import Static

MIN_WIDTH, MIN_HEIGHT = 80, 24


def too_small(size: Size) -> bool:
    return size.width < MIN_WIDTH or size.height < MIN_HEIGHT


def message(size: Size) -> str:
    return (
        f"terminal too small: {size.width}x{size.height}\n"
        f"the dashboard needs at least {MIN_WIDTH}x{MIN_HEIGHT}\n\n"
        "enlarge the window to see it again (training goes on)\n"
        "q quits"
    )


class TooSmallScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    TooSmallScreen { align: center middle; background: $background; }
    TooSmallScreen > Static { width: 100%; height: auto; text-align: center; color: $warning; }
    """
    BINDINGS = [Binding("q", "app.request_quit", "Quit")]  # a modal screen: the app's q would not reach

    def __init__(self, size: Size) -> None:
        super().__init__()
        self.text = Static(message(size), id="too-small", markup=False)

    def compose(self) -> ComposeResult:
        yield self.text

    def show(self, size: Size) -> None:
        self.text.update(message(size))
