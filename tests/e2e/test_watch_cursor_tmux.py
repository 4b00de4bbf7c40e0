"""The real `tuitrain watch` in tmux at 80x24: the time-cursor keys move the cursor in a live run.

The fault: in a live watch the gradient panel has focus and its scroll bindings took Left, Home and End,
so the cursor stayed put (`step 0/6` never moved) while the same keys worked in replay."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.e2e.tmux import descendants, needs_tmux, quit_and_stop, step_of, watch_in_tmux

pytestmark = needs_tmux

CURSOR = re.compile(r"◆ step ([\d,]+)/([\d,]+)")


def cursor_at(screen: str) -> int | None:
    m = CURSOR.search(screen)
    return int(m.group(1).replace(",", "")) if m else None


def test_live_watch_cursor_keys_at_80x24(tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    # a small, slow-enough run: many epochs of toy2d, one thread
    args = f"toy2d_mlp --epochs 400 --set train.threads=1 --out {out}"
    with watch_in_tmux(args, width=80, height=24) as (t, pane, workers):
        t.wait_for(
            lambda s: "RUNNING" in s and step_of(s) > 50 and "Gradients" in s, 150, "a running dashboard"
        )
        workers.extend(descendants(pane))
        t.keys("Left")
        s = t.wait_for(lambda s: cursor_at(s) is not None, 10, "the cursor bar after Left")
        behind = cursor_at(s)
        assert behind is not None and behind < step_of(s)
        t.keys("Home")
        t.wait_for(lambda s: cursor_at(s) == 0, 10, "the cursor at step 0 after Home")
        t.keys("Right")
        t.wait_for(lambda s: (cursor_at(s) or 0) > 0, 10, "the cursor forward after Right")
        t.keys("End")  # back to the latest step: the cursor bar goes, the run is followed again
        t.wait_for(lambda s: cursor_at(s) is None, 10, "the cursor back at the latest step after End")
        time.sleep(0.5)
        assert cursor_at(t.screen()) is None
        quit_and_stop(t, pane)
