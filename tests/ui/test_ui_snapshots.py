"""Pixel snapshots of the dashboard and the heatmap at 80x24 and 200x60 (pytest-textual-snapshot).

The app is fed a deterministic fake run (a VGG38 with vanishing input-side gradients, stopped mid-run
at step 250 of 400) and a frozen clock, so elapsed/ETA and every number are stable. Regenerate with
``pytest tests/ui/test_ui_snapshots.py --snapshot-update`` and look at the SVGs before committing."""

from __future__ import annotations

import pytest
from fake_events import T0, fake_run

from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.source import ListSource


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, cmd: str) -> None:
        self.sent.append(cmd)


def app_for(events) -> TuitrainApp:
    return TuitrainApp(ListSource(events), control=Recorder(), clock=lambda: T0 + 4.0, cpu_budget=None)


def settle(*keys: str):
    """run_before: wait until the events are in, press keys, and redraw once, deterministically."""

    async def run_before(pilot) -> None:
        app = pilot.app
        for _ in range(100):
            if app.history.events_seen:
                break
            await pilot.pause(0.01)
        for k in keys:
            await pilot.press(k)
            await pilot.pause()
        app.redraw(force=True)
        await pilot.pause()
        app.redraw(force=True)  # the chart sizes itself from the first layout
        await pilot.pause()

    return run_before


RUNNING = dict(finish=None, stop_after=250)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=["80x24", "200x60"])
def test_dashboard(snap_compare, size):
    assert snap_compare(app_for(fake_run(**RUNNING)), terminal_size=size, run_before=settle())


@pytest.mark.parametrize("size", [(80, 24), (200, 60)], ids=["80x24", "200x60"])
def test_heatmap(snap_compare, size):
    assert snap_compare(app_for(fake_run(**RUNNING)), terminal_size=size, run_before=settle("h"))


def test_starting(snap_compare):
    assert snap_compare(app_for([]), terminal_size=(80, 24), run_before=settle())


def test_help(snap_compare):
    assert snap_compare(
        app_for(fake_run(**RUNNING)), terminal_size=(80, 24), run_before=settle("question_mark")
    )


def test_user_run(snap_compare):
    """A user's own loop that never called run.watch: unknown totals, no per-layer probes, its own
    scalar under the chart, its own epoch metrics in the log."""
    from fake_events import user_run

    events = user_run(steps=250, finish=None)
    assert snap_compare(app_for(events), terminal_size=(80, 24), run_before=settle())


def test_user_run_watched_own_scalar(snap_compare):
    """The same loop with run.watch: its own tensors' bars, and the chart on its own key (``a``)."""
    from fake_events import user_run

    events = user_run(steps=250, finish=None, probes=True)
    assert snap_compare(app_for(events), terminal_size=(200, 60), run_before=settle("a"))
