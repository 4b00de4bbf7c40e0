"""The dashboard app: wires the runs (a source and a history each), the screens, the key bindings and
the control channel. Events arrive as messages and go into their run's history; widgets redraw from a
10 Hz timer, inside one ``batch_update``, only when something changed. The time cursor and the run
selection are view state (:mod:`tuitrain.ui.replay.cursor` does the arithmetic). Nothing here imports
torch."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Protocol

from textual import events
from textual.app import App
from textual.geometry import Size
from textual.message import Message

from tuitrain.ui.bindings import ActionsProvider, app_bindings, keys_for
from tuitrain.ui.history import INCOMPLETE, History
from tuitrain.ui.replay import cursor
from tuitrain.ui.replay.runs import RunSet, RunSlot
from tuitrain.ui.screens.base import DataScreen, Pacer
from tuitrain.ui.screens.compare import CompareScreen
from tuitrain.ui.screens.dashboard import DashboardScreen
from tuitrain.ui.screens.dialogs import ConfirmScreen, ErrorScreen, QuitScreen
from tuitrain.ui.screens.heatmap import HeatmapScreen
from tuitrain.ui.screens.help import HelpScreen
from tuitrain.ui.screens.images import ImagesScreen
from tuitrain.ui.screens.signal import SignalScreen
from tuitrain.ui.screens.too_small import TooSmallScreen, too_small
from tuitrain.ui.screenshot import ScreenshotMixin
from tuitrain.ui.source import EventsArrived, Source, SourceEnded
from tuitrain.ui.view_state import ViewState


class Control(Protocol):
    def send(self, cmd: str) -> None: ...


class _Tagged:
    """A source's message target that stamps each message with its run's index."""

    def __init__(self, app: App, index: int) -> None:
        self.app, self.index = app, index

    def post_message(self, message: Message) -> bool:
        message.run_index = self.index  # type: ignore[attr-defined]
        return self.app.post_message(message)


class TuitrainApp(ScreenshotMixin, App[str | None]):
    """Exit result: "stop" (user chose to stop training; "stop" was sent), "detach" (leave it running),
    "done" (the run had finished, or a replay), or None (closed otherwise).

    One run: ``TuitrainApp(source, ...)``. Several (replay): ``TuitrainApp(None, runs=RunSet(...),
    replay=True)``; ``replay`` also shows the cursor bar and the compare view, and leaves no panel
    focused so that home/end reach the cursor. ``mode`` is the first screen, ``metric`` the chart's."""

    CSS_PATH = "app.tcss"
    TITLE = "tuitrain"
    BINDINGS = app_bindings()
    COMMANDS = App.COMMANDS | {ActionsProvider}
    MODES = {
        "dashboard": DashboardScreen,
        "heatmap": HeatmapScreen,
        "compare": CompareScreen,
        "signal": SignalScreen,
        "images": ImagesScreen,
    }
    DEFAULT_MODE = "dashboard"
    REFRESH_SECONDS = 0.1  # at most 10 redraws a second
    LIVENESS_SECONDS = 0.25
    DEATH_GRACE_SECONDS = 0.75  # a dead process gets this long for its RunFinished to arrive
    GC_THRESHOLD: tuple[int, int, int] | None = (
        2000,
        10,
        10,
    )  # see _settle_gc; None: leave the collector alone

    def __init__(
        self,
        source: Source | None,
        control: Control | None = None,
        proc_alive: Callable[[], bool] | None = None,
        clock: Callable[[], float] | None = None,
        history: History | None = None,
        cpu_budget: float | None = 0.08,
        *,
        runs: RunSet | None = None,
        replay: bool = False,
        mode: str | None = None,
        metric: str = "loss",
    ) -> None:
        if mode:
            self.DEFAULT_MODE = mode  # read by App.__init__: the first screen is this one
        super().__init__()
        if runs is None:
            assert source is not None, "give a source or runs"
            runs = RunSet([RunSlot(source, history or History(clock=clock or time.time))])
        self.runs = runs
        self.source = runs[0].source
        self.control = control
        self.proc_alive = proc_alive
        self.replay = replay
        self.view = ViewState(metric=metric)
        if replay:
            self.AUTO_FOCUS = ""  # no panel takes the keys: home/end/arrows move the cursor
        self.pacer = Pacer(budget=cpu_budget) if cpu_budget else None  # None: never stretch redraws
        self.redraws = 0
        self._dirty = True
        self._deferred = False
        self._last_second = -1
        self._dead_since: float | None = None
        self._finish_seen: set[int] = set()
        self._gc_settled: tuple[int, int, int] | None = None  # the thresholds to restore on exit

    def screenshot_title(self) -> str:
        """Screenshots are named after the selected run (``w``, palette "Screenshot")."""
        return f"tuitrain-{self.runs.name(min(self.view.selected, len(self.runs) - 1))}"

    @property
    def history(self) -> History:
        """The selected run's history (the only one on a live dashboard)."""
        return self.runs[min(self.view.selected, len(self.runs) - 1)].history

    # -- lifecycle -------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.call_after_refresh(self._check_size)
        self.set_interval(self.REFRESH_SECONDS, self._tick)
        self.call_after_refresh(self._settle_gc)
        if self.proc_alive is not None:
            self.set_interval(self.LIVENESS_SECONDS, self._check_alive)
        for i, slot in enumerate(self.runs):
            slot.source.start(self if len(self.runs) == 1 else _Tagged(self, i))
        self.call_after_refresh(self.redraw)

    def on_unmount(self) -> None:
        for slot in self.runs:
            slot.source.stop()
        if self._gc_settled is not None:  # give the process its collector back as it was
            gc.unfreeze()
            gc.set_threshold(*self._gc_settled)
            self._gc_settled = None

    def _settle_gc(self) -> None:
        """Keep the cyclic garbage collector's long pauses out of the frames. Its full passes walked
        every object of the process (~90,000: modules, Textual's DOM, CSS and strip caches), 40-70 ms
        each, every few seconds while strips churn, and made many of the slowest frames. After the
        first frame what exists is long-lived: collect once, then freeze it (never walked again, still
        freed by reference counting; unfrozen on exit), and let the youngest generation grow a little
        larger before a pass (2000 objects, 700 by default) so that fewer short-lived strips are
        promoted. Full passes then take ~20 ms and come about a third as often."""
        if self._gc_settled is not None or not self.GC_THRESHOLD or self._exit:
            return
        self._gc_settled = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*self.GC_THRESHOLD)

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size)

    def _check_size(self, size: Size | None = None) -> None:
        """Below 80x24 a single message replaces the panels (see screens/too_small.py)."""
        size = self.size if size is None else size
        shown = next((s for s in self.screen_stack if isinstance(s, TooSmallScreen)), None)
        if too_small(size):
            if shown is None:
                self.push_screen(TooSmallScreen(size))
            else:
                shown.show(size)
        elif shown is not None and self.screen is shown:
            self.pop_screen()
            self.call_after_refresh(self.redraw)

    def on_events_arrived(self, message: EventsArrived) -> None:
        i = getattr(message, "run_index", 0)
        h = self.runs[i].history
        h.extend(message.events, message.dropped_steps)
        self._dirty = True
        if h.is_finished and i not in self._finish_seen:
            self._run_finished(i)

    def on_source_ended(self, message: SourceEnded) -> None:
        i = getattr(message, "run_index", 0)
        slot = self.runs[i]
        if slot.source.live and not slot.history.is_finished and self.proc_alive is None:
            slot.history.mark_process_died(message.reason or "event stream closed")
            self._run_finished(i)

    def _check_alive(self) -> None:
        if self.history.is_finished or self.proc_alive is None:
            return
        if self.proc_alive():
            self._dead_since = None
        elif self._dead_since is None:
            self._dead_since = time.monotonic()
        elif time.monotonic() - self._dead_since >= self.DEATH_GRACE_SECONDS:
            self.history.mark_process_died()
            self._run_finished()

    def _run_finished(self, i: int = 0) -> None:
        self._finish_seen.add(i)
        self._dirty = True
        fin = self.runs[i].history.finished
        self.refresh_bindings()
        who = f"{self.runs.name(i)}: " if len(self.runs) > 1 else ""
        if fin is not None and fin.status == INCOMPLETE:
            self.notify(f"{who}{fin.error}", title="Run incomplete", severity="warning", timeout=10)
        elif fin is not None and fin.status == "failed":
            self.notify(
                who + (fin.error or "training failed"), title="Training failed", severity="error", timeout=10
            )
            if fin.traceback and len(self.runs) == 1:
                self.push_screen(ErrorScreen(fin.error, fin.traceback))
        self.redraw()

    # -- redraws ---------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self.view.playing and cursor.play_tick(self.view, self.runs.histories):
            self.redraw()
            return
        pace = self.pacer.update() if self.pacer else 1.0
        second = int(self.history.clock())
        if self._dirty or self._deferred or second != self._last_second:
            self._last_second = second
            self.redraw(force=False, pace=pace)

    def redraw(self, force: bool = True, pace: float = 1.0) -> None:
        """Push the history into the current mode's screens, in one batch."""
        if self._exit:
            return
        self._dirty = False
        deferred = False
        self.view.run_tag = self.runs.tag(self.view.selected)  # names arrive with RunStarted
        with self.batch_update():
            for screen in self.screen_stack:
                if isinstance(screen, DataScreen) and screen.is_mounted:
                    deferred |= screen.refresh_data(self.history, self.view, force=force, pace=pace)
        self._deferred = deferred
        self.redraws += 1

    # -- training control ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pause", "stop"):
            return self.control is not None and not self.history.is_finished
        if action == "show_view":
            if len(parameters) > 1:  # "back": only from the view it leaves
                return self.current_mode == parameters[1]
            return parameters[0] != self.current_mode and (parameters[0] != "compare" or self.replay)
        if action == "next_run":
            return len(self.runs) > 1
        return True

    def _send(self, cmd: str) -> bool:
        if self.control is None:
            self.notify("replay: there is no training process to control", severity="warning")
            return False
        try:
            self.control.send(cmd)
            return True
        except Exception as e:  # the worker may be gone: say so, stay usable
            self.notify(f"could not send {cmd!r}: {e}", severity="error")
            return False

    def action_toggle_pause(self) -> None:
        if self.history.is_finished:
            return
        resume = self.history.status == "paused" or self.history.pending == "pausing…"
        if self._send("resume" if resume else "pause"):
            self.history.set_pending("resuming…" if resume else "pausing…")
            self.redraw()

    def action_stop(self) -> None:
        if self.history.is_finished or self.control is None:
            return

        def answered(yes: bool | None) -> None:
            if yes and self._send("stop"):
                self.history.set_pending("stopping…")
                self.redraw()

        self.push_screen(
            ConfirmScreen(
                "Stop training gracefully? The current epoch ends early, the run file is closed "
                "and a checkpoint is written."
            ),
            answered,
        )

    def action_request_quit(self) -> None:
        if self.history.is_finished or self.control is None:
            self.exit("done")
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                self._send("stop")
            if choice in ("stop", "detach"):
                self.exit(choice)

        self.push_screen(QuitScreen(), chosen)

    action_quit = action_request_quit  # ctrl+q and the palette's "Quit" ask too

    def action_show_error(self) -> None:
        fin = self.history.finished
        if fin is None or fin.status not in ("failed", INCOMPLETE):
            self.notify("no error: the run has not failed", timeout=3)
        else:
            self.push_screen(ErrorScreen(fin.error, fin.traceback))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(keys_for(self)))

    # -- views -----------------------------------------------------------------------------------

    async def action_show_view(self, mode: str, origin: str = "") -> None:
        if mode != self.current_mode:
            await self.switch_mode(mode)
            self.call_after_refresh(self.redraw)

    def action_view(self, op: str, *args: float) -> None:
        """A display choice: a :class:`ViewState` method (zoom and pan also get the data's x extent)."""
        if op in ("zoom", "pan"):
            ext = cursor.extent(self.runs.histories)
            args = (*args, *((float(ext[0]), float(ext[1])) if ext else (0.0, 1.0)))
        elif op == "toggle_metric":
            args = (self.metric_cycle(),)
        getattr(self.view, op)(*args)
        self.redraw()

    def metric_cycle(self) -> tuple[str, ...]:
        """The per-step scalars the chart's metric key steps through: every run's, in first-seen order."""
        seen: dict[str, None] = {}
        for h in self.runs.histories:
            seen.update(dict.fromkeys(h.metric_cycle()))
        return tuple(seen)

    # -- time cursor and runs --------------------------------------------------------------------

    def action_cursor(self, op: str, amount: int = 0) -> None:
        """Move the time cursor: "step"/"epoch" by ``amount``, "home", "end" (back to the latest)."""
        chart = self.screen.query("LossChart")
        columns = max(8, chart.first().size.width - 8) if chart else 80
        if cursor.move(self.view, op, amount, self.runs.histories, columns):
            self.redraw()

    def action_toggle_play(self) -> None:
        cursor.toggle_play(self.view, self.runs.histories)
        self.redraw()

    def action_next_run(self, delta: int = 1) -> None:
        self.view.selected = (self.view.selected + delta) % len(self.runs)
        self.refresh_bindings()
        self.redraw()


def run_dashboard(
    source: Source,
    control: Control | None = None,
    proc_alive: Callable[[], bool] | None = None,
    clock: Callable[[], float] | None = None,
) -> str | None:
    """Run the dashboard in the terminal until the user quits; returns the exit result
    ("stop" | "detach" | "done" | None). The caller owns the training process and acts on it."""
    return TuitrainApp(source, control=control, proc_alive=proc_alive, clock=clock).run()
