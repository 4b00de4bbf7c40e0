"""The live sweep dashboard (``tuitrain sweep`` in a terminal, ``tuitrain sweep --attach DIR``).

* :mod:`~tuitrain.ui.sweep.runs` - the sweep folder as the app's run set: a slot per variant, a file
  source once its run file appears, statuses (file first, manifest otherwise) and worst findings;
* :mod:`~tuitrain.ui.sweep.app` - the app: the compare view first, the folder worker, per-variant and
  all-variant pause/stop, the detach / stop all / cancel quit dialog.

Importing this package imports nothing heavy: the CLI calls :func:`run_sweep_dashboard` lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuitrain.ui.sweep.app import Control


def run_sweep_dashboard(folder: Path, control: Control | None = None) -> str | None:
    """Show the sweep in ``folder`` until the user quits. Returns "detach" (the sweep keeps running),
    "stop" (the user chose to stop every variant: the caller calls stop_all and waits; the dashboard
    has not sent it, so that no child gets a second SIGINT) or "done" (the sweep was over, or
    there was nothing to control). Raises :class:`tuitrain.sweep.manifest.ManifestError` for a folder
    that is not a sweep."""
    from tuitrain.ui.sweep.app import sweep_app

    return sweep_app(Path(folder), control).run()
