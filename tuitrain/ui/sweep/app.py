"""The live sweep dashboard: ``tuitrain sweep`` in a terminal, and ``tuitrain sweep --attach DIR``.

The replay app (:class:`~tuitrain.ui.app.TuitrainApp` in replay mode: the compare view first, the
cursor bar, ``r`` to pick a run) over :class:`~tuitrain.ui.sweep.runs.SweepRuns`: a slot per variant
from the start, each following its run file once the file appears. A thread worker looks at the
folder ~1/s (the manifest, new run files) and posts what it found; the UI thread attaches it. The
final table gets the variants' statuses (the run file's, else the manifest's) and each one's worst
open diagnosis finding.

Control goes through :class:`tuitrain.sweep.control.SweepControl` (signals to the children): ``p`` /
``s`` pause-resume / stop the selected variant, ``P`` / ``S`` every variant. Quitting while the runner
is alive asks: detach (the sweep keeps running; ``--attach`` comes back to it), stop all, or cancel.
Exit result: "detach", "stop" (the caller stops every variant: SweepControl.stop_all, then waits) or
"done" (the sweep was over, or nothing to control)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Button, Label
from textual.worker import get_current_worker

from tuitrain.sweep.manifest import Manifest
from tuitrain.ui import app as _app_module
from tuitrain.ui.app import TuitrainApp, _Tagged
from tuitrain.ui.screens.dialogs import ConfirmScreen, QuitScreen
from tuitrain.ui.sweep.runs import FINISHED, Opened, SweepRuns

FOLDER_SECONDS = 1.0  # how often the worker looks at the sweep folder


class Control(Protocol):
    """What the dashboard needs of :class:`tuitrain.sweep.control.SweepControl`."""

    def send(self, cmd: str, variants: Sequence[str] | None = None) -> list[str]: ...

    def stop_all(self) -> None: ...

    def runner_alive(self) -> bool: ...


class FolderPolled(Message):
    """What one look at the sweep folder found: a changed manifest (or None) and newly opened files."""

    def __init__(self, manifest: Manifest | None, opened: list[Opened]) -> None:
        super().__init__()
        self.manifest = manifest
        self.opened = opened


class SweepQuitScreen(QuitScreen):
    """The quit dialog of a running sweep: stop every variant / detach / cancel (same keys as a run's)."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("The sweep is still running. Quit the dashboard?", id="title")
            yield Button("Stop all variants and quit (s)", id="stop", variant="error")
            yield Button("Detach: leave the sweep running and quit (d)", id="detach", variant="primary")
            yield Button("Cancel (esc)", id="cancel")


class SweepApp(TuitrainApp):
    CSS_PATH = str(Path(_app_module.__file__).with_name("app.tcss"))  # relative paths are the subclass's

    def __init__(
        self,
        sweep: SweepRuns,
        control: Control | None = None,
        *,
        folder_seconds: float = FOLDER_SECONDS,
        metric: str = "loss",
        cpu_budget: float | None = 0.08,
    ) -> None:
        super().__init__(
            None, runs=sweep.runs, replay=True, mode="compare", metric=metric, cpu_budget=cpu_budget
        )
        self.sweep = sweep
        self.control = control  # type: ignore[assignment]  # a SweepControl: per-variant send
        self.folder_seconds = folder_seconds

    def on_mount(self) -> None:
        super().on_mount()
        self._watch_folder()

    # -- the folder ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="sweep-folder")
    def _watch_folder(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            manifest, opened = self.sweep.poll()
            if manifest is not None or opened:
                self.post_message(FolderPolled(manifest, opened))
            end = time.monotonic() + self.folder_seconds
            while not worker.is_cancelled and time.monotonic() < end:
                time.sleep(0.05)

    def on_folder_polled(self, message: FolderPolled) -> None:
        if message.manifest is not None:
            self.sweep.manifest = message.manifest
        for item in message.opened:
            if self._exit:
                item.source.stop()
                continue
            self.sweep.attach(item)
            item.source.start(_Tagged(self, item.index))
        self._dirty = True
        self.refresh_bindings()

    def final_table_extras(self) -> dict[str, object]:
        """What the compare view's final table adds for a sweep: statuses and the worst finding."""
        return {"statuses": self.sweep.statuses, "columns": {"Finding": self.sweep.findings}}

    # -- control ---------------------------------------------------------------------------------

    @property
    def selected_name(self) -> str:
        return self.sweep.names[min(self.view.selected, len(self.runs) - 1)]

    def _selected_status(self) -> str:
        return self.sweep.status(min(self.view.selected, len(self.runs) - 1))

    def runner_alive(self) -> bool:
        if self.control is None:
            return False
        try:
            return bool(self.control.runner_alive())
        except Exception:  # noqa: BLE001 - a manifest being replaced: ask again next time
            return False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pause", "stop"):
            return self.control is not None and self._selected_status() not in FINISHED
        if action in ("pause_all", "stop_all"):
            return self.control is not None and not self.sweep.is_over()
        return super().check_action(action, parameters)

    def _send_to(self, cmd: str, variants: Sequence[str] | None) -> list[str]:
        if self.control is None:
            self.notify("nothing to control: no sweep runner", severity="warning")
            return []
        try:
            reached = self.control.send(cmd, list(variants) if variants is not None else None)
        except Exception as e:  # noqa: BLE001 - a process gone meanwhile: say so, stay usable
            self.notify(f"could not send {cmd!r}: {e}", severity="error")
            return []
        if not reached:
            who = ", ".join(variants) if variants else "any variant"
            self.notify(f"{cmd}: did not reach {who} (not running?)", severity="warning", timeout=5)
        return reached

    def action_toggle_pause(self) -> None:
        status = self._selected_status()
        if status in FINISHED:
            return
        h = self.history
        resume = status == "paused" or h.pending == "pausing…"
        if self._send_to("resume" if resume else "pause", [self.selected_name]):
            h.set_pending("resuming…" if resume else "pausing…")
            self.redraw()

    def action_stop(self) -> None:
        if self.control is None or self._selected_status() in FINISHED:
            return
        name = self.selected_name

        def answered(yes: bool | None) -> None:
            if yes and self._send_to("stop", [name]):
                self.runs[self.sweep.names.index(name)].history.set_pending("stopping…")
                self.redraw()

        self.push_screen(
            ConfirmScreen(
                f"Stop variant {name}? Its epoch ends early and its run file is closed as stopped."
            ),
            answered,
        )

    def action_pause_all(self) -> None:
        """Pause every running variant; when every running one is paused already, resume them all."""
        statuses = self.sweep.statuses
        live = [s for s in statuses if s in ("running", "paused", "starting")]
        resume = bool(live) and all(s == "paused" for s in live)
        if self._send_to("resume" if resume else "pause", None):
            self.redraw()

    def action_stop_all(self) -> None:
        if self.control is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop_everything()

        self.push_screen(
            ConfirmScreen(
                "Stop every variant? Running ones close their files as stopped; queued ones never start."
            ),
            answered,
        )

    def _stop_everything(self) -> bool:
        if self.control is None:
            return False
        try:
            self.control.stop_all()
            return True
        except Exception as e:  # noqa: BLE001
            self.notify(f"could not stop the sweep: {e}", severity="error")
            return False

    def action_request_quit(self) -> None:
        if not self.runner_alive():
            self.exit("done")
            return

        def chosen(choice: str | None) -> None:
            # "stop" is the caller's to do (stop_all, then wait): a second SIGINT would make the
            # children interrupt at once instead of closing their files as stopped.
            if choice in ("stop", "detach"):
                self.exit(choice)

        self.push_screen(SweepQuitScreen(), chosen)

    action_quit = action_request_quit


def sweep_app(
    folder: Path, control: Control | None = None, *, poll_seconds: float = 0.25, **kw: object
) -> SweepApp:
    """The dashboard of the sweep in ``folder`` (raises ManifestError when it is not a sweep folder)."""
    return SweepApp(SweepRuns(folder, poll_seconds=poll_seconds), control, **kw)  # type: ignore[arg-type]
