"""The time cursor's arithmetic: where left/right, shift+left/right, home/end and play move it.

The cursor is a step value in :attr:`ViewState.cursor` (None: the latest step, what a live run shows).
Left/right move one step, or one chart column when the chart shows more steps than it has columns
(zoom in with ``+`` for finer moves); shift moves to the start of the previous/next epoch; playing
advances about a hundredth of the visible window per tick, so a run plays in about ten seconds at
the app's 10 Hz. When the chart is zoomed in, the window pans to keep the cursor in view. Pure: the
app calls these with the histories it holds and redraws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tuitrain.ui.history import History
from tuitrain.ui.view_state import ViewState

PLAY_TICKS = 100  # ticks to play through the visible window


def extent(histories: Sequence[History]) -> tuple[int, int] | None:
    """(first, last) step over every run's stored steps, or None before any step arrived."""
    firsts, lasts = [], []
    for h in histories:
        x = h.column("step")
        if x.shape[0]:
            firsts.append(int(x[0]))
            lasts.append(max(int(x[-1]), h.steps_done - 1))
    return (min(firsts), max(lasts)) if firsts else None


def unit(view: ViewState, first: int, last: int, columns: int) -> int:
    """Steps per arrow press: one step, or one chart column of the visible window."""
    lo, hi = view.x_window(float(first), float(last))
    return max(1, int(round((hi - lo) / max(1, columns))))


def epoch_starts(history: History, last: int) -> np.ndarray:
    """First step of every epoch up to ``last``: from the run's steps per epoch, else the epoch table."""
    spe = history.run.steps_per_epoch if history.run is not None else 0
    if spe > 0:
        return np.arange(0, last + 1, spe, dtype=np.int64)
    return np.array([0, *(r.step for r in history.epochs.rows)], dtype=np.int64)


def keep_visible(view: ViewState, first: int, last: int) -> None:
    """Pan a zoomed-in chart so that the cursor stays inside its window."""
    if view.cursor is None or view.span is None:
        return
    lo, hi = view.x_window(float(first), float(last))
    if lo <= view.cursor <= hi:
        return
    end = view.cursor + (hi - lo) / 2
    if end >= last:
        view.follow, view.end = True, None
    else:
        view.follow, view.end = False, end


def move(view: ViewState, op: str, amount: int, histories: Sequence[History], columns: int) -> bool:
    """Move the cursor: ``op`` is "step" or "epoch" (``amount`` +-1), "home" or "end". Returns False
    when there is nothing to move through yet."""
    ext = extent(histories)
    if ext is None:
        return False
    first, last = ext
    view.playing = False
    if op == "end":
        view.cursor = None
        if view.span is not None:
            view.follow, view.end = True, None
        return True
    cur = last if view.cursor is None else view.cursor
    if op == "home":
        new = first
    elif op == "epoch":
        h = histories[min(view.selected, len(histories) - 1)]
        starts = epoch_starts(h, last)
        if amount > 0:
            later = starts[starts > cur]
            new = int(later[0]) if later.size else last
        else:
            earlier = starts[starts < cur]
            new = int(earlier[-1]) if earlier.size else first
    else:
        new = cur + amount * unit(view, first, last, columns)
    view.cursor = int(min(max(new, first), last))
    keep_visible(view, first, last)
    return True


def toggle_play(view: ViewState, histories: Sequence[History]) -> bool:
    """Start (from the cursor, or from the window's start when the cursor is at the end) or stop."""
    ext = extent(histories)
    if view.playing or ext is None:
        view.playing = False
        return view.playing
    first, last = ext
    if view.cursor is None or view.cursor >= last:
        lo, _ = view.x_window(float(first), float(last))
        view.cursor = int(max(first, lo))
    view.playing = True
    return True


def play_tick(view: ViewState, histories: Sequence[History]) -> bool:
    """Advance a playing cursor by one tick; stops at the last step. Returns True when it moved."""
    ext = extent(histories)
    if not view.playing or ext is None:
        return False
    first, last = ext
    lo, hi = view.x_window(float(first), float(last))
    step = max(1, int(round((hi - lo) / PLAY_TICKS)))
    cur = first if view.cursor is None else view.cursor
    view.cursor = int(min(cur + step, last))
    if view.cursor >= last:
        view.playing = False
    keep_visible(view, first, last)
    return True
