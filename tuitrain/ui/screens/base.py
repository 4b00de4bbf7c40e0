"""What the data screens share: a refresh from the history, paced by a CPU governor."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.screen import Screen

from tuitrain.ui.bindings import screen_bindings
from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState


class Pacer:
    """Keeps the UI process near a CPU budget while events stream in.

    Every ``window`` seconds it compares the process's CPU time (all threads: queue drain,
    unpickling, event loop) with the wall time; above ``budget`` it stretches ``factor`` (which
    multiplies every panel's refresh interval, up to ``max_factor``), well below it relaxes back to 1.
    Key presses are not paced: they force a redraw.
    """

    def __init__(
        self,
        budget: float = 0.08,
        window: float = 2.0,
        max_factor: float = 8.0,
        cpu: Callable[[], float] = time.process_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget, self.window, self.max_factor = budget, window, max_factor
        self.cpu, self.wall = cpu, wall
        self.factor = 1.0
        self.last_load = 0.0
        self._t0, self._c0 = wall(), cpu()

    def update(self) -> float:
        now = self.wall()
        if now - self._t0 >= self.window:
            c = self.cpu()
            self.last_load = (c - self._c0) / (now - self._t0)
            ratio = self.last_load / self.budget
            if ratio > 1.1:
                self.factor = min(self.max_factor, self.factor * min(2.0, ratio))
            elif ratio < 0.6:
                self.factor = max(1.0, self.factor * 0.75)
            self._t0, self._c0 = now, c
        return self.factor


class DataScreen(Screen):
    """A screen that shows the run. The app calls :meth:`refresh_data` up to 10 times a second.

    The time cursor's keys are bound here with priority, ahead of whatever panel has focus."""

    BINDINGS = screen_bindings()

    def overlay(self) -> list[tuple[str, str, History]]:
        """(name, colour, history) of every run the app shows (one on a live dashboard)."""
        runs = getattr(self.app, "runs", None)
        return runs.overlay() if runs is not None else []

    def show_cursor_bar(self, view: ViewState) -> bool:
        """The cursor bar is shown in replay, and live once the cursor left the latest step."""
        show = bool(getattr(self.app, "replay", False)) or view.cursor is not None
        self.set_class(show, "-cursor")
        return show

    def due_at(self, key: object) -> float:
        """When ``key``'s next refresh is due (``time.monotonic`` time; 0.0: never refreshed)."""
        return self.__dict__.setdefault("_due", {}).get(key, 0.0)

    def due(self, key: object, interval: float, force: bool = False) -> bool:
        """True (and re-armed) when ``key``'s refresh interval has passed, or when forced."""
        nxt = self.__dict__.setdefault("_due", {})
        now = time.monotonic()
        if force or now >= nxt.get(key, 0.0):
            nxt[key] = now + interval
            return True
        return False

    def refresh_data(
        self, history: History, view: ViewState, *, force: bool = False, pace: float = 1.0
    ) -> bool:
        """Push the history into the widgets. ``pace`` (>= 1) stretches refresh intervals. Returns
        True if some widget deferred work (it wants another tick even if no new data arrives)."""
        raise NotImplementedError
