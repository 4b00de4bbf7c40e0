"""What the Pilot tests read off the app: the screen as text, and a wait for a condition."""

from __future__ import annotations

import time


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def until(pilot, cond, timeout: float = 3.0) -> bool:
    """Let the app run until ``cond()`` holds or ``timeout`` seconds pass; the last answer of ``cond``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await pilot.pause(0.05)
    return cond()
