"""The dashboard's Screenshot command (``w``, and the command palette's "Screenshot").

Textual's own ``deliver_screenshot`` hands the SVG to the driver, which writes it to the user's
Downloads directory (``platformdirs.user_downloads_path()``). On a training server, in a container or
over SSH that directory usually does not exist, the driver's write fails in a thread, and all the user
sees is "Failed to save screenshot", with no path and no reason. So tuitrain writes the SVG itself, at
once, into the current directory (where ``watch`` / ``replay`` was started, next to the ``runs/`` folder
in the usual layout), and says where in a notification with the full path, or why not.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from textual.app import App


def screenshot_name(title: str, now: datetime | None = None) -> str:
    """``tuitrain-<run>-YYYYmmdd-HHMMSS.svg``: sortable, no characters a shell or a file system minds."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("_.") or "tuitrain"
    return f"{stem}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}.svg"


class ScreenshotMixin:
    """Overrides :meth:`App.deliver_screenshot`, which both the palette's built-in "Screenshot" command
    and ``App.action_screenshot`` (the ``w`` key) call: the file is written synchronously, so the
    notification can name it (or the OS error) and a test can open it right after the action."""

    def screenshot_title(self) -> str:
        """The run's name for the file name; the app's title when there is no run."""
        return "tuitrain"

    def deliver_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str | None:
        """Write an SVG of the current screen to ``path`` (default: the current directory); return its
        absolute path, or None when it could not be written (the notification says why)."""
        app: App = self  # type: ignore[assignment]
        name = filename or screenshot_name(self.screenshot_title())
        target = (Path(path).expanduser() if path else Path.cwd()) / name
        n = 1
        while filename is None and target.exists():  # two in one second: keep both
            n += 1
            target = target.with_name(f"{name.removesuffix('.svg')}-{n}.svg")
        try:
            svg = app.export_screenshot()
            target = target.resolve()
            target.write_text(svg, encoding="utf-8")
        except OSError as e:
            app.notify(
                f"Failed to save screenshot to {target}: {e.strerror or e}",
                title="Screenshot",
                severity="error",
                markup=False,
            )
            return None
        app.notify(f"Saved screenshot to {target}", title="Screenshot", timeout=8, markup=False)
        return str(target)
