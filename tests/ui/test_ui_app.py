"""Pilot tests: the real dashboard app fed by a ListSource of fake events, driven by key presses,
asserting on widget state and on the text the screen actually renders."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
from fake_events import T0, fake_run, iter_fake_run, make_batch, mlp_layers, vgg_layers
from pilot_helpers import screen_text, until

from tuitrain.events import Alert, EventBatch, RunFinished, StatusChanged, StepBatch
from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.bindings import keys_for
from tuitrain.ui.screens.base import Pacer
from tuitrain.ui.screens.dialogs import ConfirmScreen, ErrorScreen, QuitScreen
from tuitrain.ui.screens.help import HelpScreen
from tuitrain.ui.source import ListSource, LiveSource
from tuitrain.ui.widgets.event_log import EventLog
from tuitrain.ui.widgets.grad_bars import GradBars
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.heatmap import HeatmapRows
from tuitrain.ui.widgets.loss_plot import LossChart, LossPanel
from tuitrain.ui.widgets.update_sparklines import UpdateSparklines

NARROW = (80, 24)
WIDE = (200, 60)


class Recorder:
    """Stands in for the control channel: remembers what the app sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, cmd: str) -> None:
        self.sent.append(cmd)


async def ready(pilot) -> None:
    """Wait until the replayed events reached the history, the chart and the bars (the panels
    refresh on their own pacing, so the first tick after the data may not show them all)."""
    app = pilot.app

    def shown() -> bool:
        if not app.history.steps_done or app.current_mode != "dashboard":
            return bool(app.history.steps_done)
        chart = app.screen.query_one(LossChart)
        bars = app.screen.query_one(GradBars)
        return chart.spec.raw_x.size > 0 and bars.values.size > 0 and bool(np.isfinite(bars.values).any())

    assert await until(pilot, shown)


def running_events(stop_after: int = 250, **kw):
    return fake_run(finish=None, stop_after=stop_after, **kw)


def make_app(events=None, control=None, proc_alive=None):
    source = ListSource(running_events() if events is None else events)
    # cpu_budget=None: the CPU governor would see the busy test process and stretch the redraws
    return TuitrainApp(
        source, control=control, proc_alive=proc_alive, clock=lambda: T0 + 10.0, cpu_budget=None
    ), source


async def test_starting_state_before_run_started():
    app, _ = make_app(events=[])
    async with app.run_test(size=NARROW) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "STARTING" in text
        assert "waiting for the training process" in text
        assert "waiting for the first steps" in text


async def test_header_bars_chart_update_as_events_arrive():
    events = list(iter_fake_run(finish=None))
    cut = next(i for i, e in enumerate(events) if isinstance(e, StepBatch) and e.steps[0] >= 100)
    first, rest = events[:cut], events[cut:]
    app, source = make_app(events=first)
    async with app.run_test(size=NARROW) as pilot:
        assert await until(pilot, lambda: "step 100/400" in screen_text(app))
        bars = app.screen.query_one(GradBars)
        assert bars.values.shape == (76,)
        assert "input_conv.w" in screen_text(app)
        assert "e-10" in screen_text(app) or "e-9" in screen_text(app)  # the vanishing input layers
        chart = app.screen.query_one(LossChart)
        # the chart rebuilds on its own CPU budget: within a second, not necessarily this tick
        assert await until(pilot, lambda: chart.spec.raw_x.size > 0 and chart.builds >= 1)
        assert "RUNNING" in screen_text(app)
        source.feed(rest)
        assert await until(pilot, lambda: "step 400/400" in screen_text(app))
        assert await until(pilot, lambda: chart.spec.xlim[1] >= 399)
        # the epoch summaries reached the event log (paced: it may follow a tick or two later)
        log = app.screen.query_one(EventLog)
        assert await until(pilot, lambda: any("epoch 4/4" in line for line in log.text_lines()))


async def test_pause_and_resume_send_commands():
    rec = Recorder()
    app, source = make_app(control=rec)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("p")
        assert rec.sent == ["pause"]
        assert "PAUSING…" in screen_text(app)
        source.feed([StatusChanged("paused", 250, time=T0 + 5)])
        assert await until(pilot, lambda: " PAUSED " in screen_text(app))
        await pilot.press("p")
        assert rec.sent == ["pause", "resume"]
        assert "RESUMING…" in screen_text(app)


async def test_stop_asks_first_and_sends_stop_on_yes():
    rec = Recorder()
    app, _ = make_app(control=rec)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        assert rec.sent == []
        await pilot.press("s")
        await pilot.press("y")
        assert rec.sent == ["stop"]
        await pilot.pause()
        assert "STOPPING…" in screen_text(app)


async def test_replay_has_no_training_controls():
    app, _ = make_app()  # no control channel
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("p", "s")
        assert not isinstance(app.screen, ConfirmScreen)
        footer = screen_text(app).splitlines()[-1]
        assert "Pause" not in footer and "Quit" in footer


@pytest.mark.parametrize(("key", "expected", "sent"), [("s", "stop", ["stop"]), ("d", "detach", [])])
async def test_quit_dialog_choices(key, expected, sent):
    rec = Recorder()
    app, _ = make_app(control=rec)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        assert "Leave training running in background and quit" in screen_text(app)
        await pilot.press(key)
        await pilot.pause()
    assert app.return_value == expected
    assert rec.sent == sent


async def test_quit_dialog_cancel_keeps_running():
    rec = Recorder()
    app, _ = make_app(control=rec)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.click("#cancel")
        await pilot.pause()
        assert not isinstance(app.screen, QuitScreen)
        assert app.is_running
        await pilot.press("q")
        await pilot.click("#detach")
        await pilot.pause()
    assert app.return_value == "detach"
    assert rec.sent == []


async def test_quit_after_finished_run_just_quits():
    rec = Recorder()
    app, _ = make_app(events=fake_run(), control=rec)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        assert "COMPLETED" in screen_text(app)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == "done"
    assert rec.sent == []


async def test_quantity_cycle_changes_bar_label_and_values():
    app, _ = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        bars = app.screen.query_one(GradBars)
        assert "grad L2 norm" in screen_text(app)
        before = bars.values.copy()
        await pilot.press("g")
        assert "mean |grad|" in str(bars.border_title)
        assert "mean |grad|" in screen_text(app)
        assert (bars.values < before).all()
        for label in ("weight L2 norm", "update ratio", "grad L2 norm"):
            await pilot.press("g")
            assert label in str(bars.border_title)


async def test_log_toggle_accuracy_switch_and_smoothing():
    app, _ = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        panel = app.screen.query_one(LossPanel)
        chart = app.screen.query_one(LossChart)
        assert str(panel.border_title).startswith("Loss")
        lin_max = chart.spec.ylim[1]
        await pilot.press("l")
        assert "log y" in str(panel.border_title)
        assert chart.spec.yticks and chart.spec.ylim[1] < lin_max  # log10 units now
        await pilot.press("l", "a")
        assert "Accuracy" in str(panel.border_title)
        assert 1 < chart.spec.sm_y.max() <= 100  # percent
        await pilot.press("full_stop")
        assert "EMA 0.95" in str(panel.border_title)
        await pilot.press("comma", "comma")
        assert "EMA 0.8" in str(panel.border_title)
        text = screen_text(app)
        assert "loss" in text and "acc" in text  # both numbers always visible at 80x24


async def test_zoom_pan_and_follow():
    app, _ = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        panel = app.screen.query_one(LossPanel)
        chart = app.screen.query_one(LossChart)
        full = chart.spec.xlim
        await pilot.press("plus")
        assert "following" in str(panel.border_title)
        lo, hi = chart.spec.xlim
        assert hi - lo == pytest.approx((full[1] - full[0]) / 2)
        assert hi == pytest.approx(full[1])
        await pilot.press("left_square_bracket")
        assert "panned" in str(panel.border_title) and "paused" not in str(panel.border_title)
        assert chart.spec.xlim[1] < hi
        assert chart.spec.raw_x.max() <= chart.spec.xlim[1]
        await pilot.press("f")
        assert "following" in str(panel.border_title)
        assert chart.spec.xlim == pytest.approx(full)
        # at most ~2 points per column go to plotext
        assert chart.spec.raw_x.size <= 2 * chart.size.width


async def test_view_switch_to_heatmap_and_back():
    app, _ = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("h")
        assert app.current_mode == "heatmap"
        assert await until(pilot, lambda: "Gradient flow" in screen_text(app))
        rows = app.screen.query_one(HeatmapRows)
        assert await until(pilot, lambda: rows.levels.shape[0] == 76 and rows.levels.shape[1] > 0)
        assert "1e-10" in screen_text(app) or "1e-9" in screen_text(app)  # the decade legend
        assert "h Back" in screen_text(app).splitlines()[-1]
        await pilot.press("h")
        assert app.current_mode == "dashboard"
        assert "Gradients" in screen_text(app)


async def test_bias_norm_filter_reduces_rows():
    layers = vgg_layers(batch_norm=True)
    app, _ = make_app(events=running_events(layers=layers))
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        bars = app.screen.query_one(GradBars)
        weights = [la.name for la in layers if la.kind == "weight"]
        assert len(bars.names) == len(layers) == 150
        await pilot.press("b")
        assert bars.names == weights and len(weights) == 38
        assert all(".bn" not in n for n in bars.names)
        assert ".b " not in screen_text(app)
        assert "38/150 tensors" in screen_text(app) or bars.virtual_size.height == 38
        await pilot.press("b")
        assert len(bars.names) == 150


async def test_many_layers_scroll():
    app, _ = make_app(events=running_events(layers=mlp_layers(300)))
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        bars = app.screen.query_one(GradBars)
        assert bars.virtual_size.height == 300
        assert bars.max_scroll_y > 0
        bars.focus()
        await pilot.press(*["pagedown"] * 30)  # the focused panel's own keys (End moves the time cursor)
        assert await until(pilot, lambda: "299 layers.149.b" in screen_text(app))
        assert app.view.follow


async def test_wide_layout_shows_everything():
    app, _ = make_app()
    async with app.run_test(size=WIDE) as pilot:
        await ready(pilot)
        for widget in (LossPanel, GradBars, UpdateSparklines, EventLog):
            w = app.screen.query_one(widget)
            assert w.display and w.region.width > 20 and w.region.height > 5, widget
        spark = app.screen.query_one(UpdateSparklines)  # paced on its own (1 s): wait for its turn
        assert await until(pilot, lambda: any(s.strip() for s in spark.sparks))
        assert "Updates" in screen_text(app)
        assert "vanishing gradients" in screen_text(app)


async def test_narrow_layout_keeps_chart_and_bars():
    app, _ = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        assert not app.screen.query_one(UpdateSparklines).display
        loss = app.screen.query_one(LossPanel).region
        bars = app.screen.query_one(GradBars).region
        events = app.screen.query_one(EventLog).region
        assert loss.height >= 12 and bars.height >= 12 and 3 <= events.height <= 6
        assert app.screen.query_one(RunHeader).region.height == 2


async def test_process_death_shows_failed_within_two_seconds():
    alive = {"v": True}
    rec = Recorder()
    app, _ = make_app(control=rec, proc_alive=lambda: alive["v"])
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        assert "RUNNING" in screen_text(app)
        alive["v"] = False
        t0 = time.monotonic()
        assert await until(pilot, lambda: "FAILED" in screen_text(app), timeout=2.0)
        assert time.monotonic() - t0 < 2.0
        assert await until(
            pilot, lambda: any("exited without finishing" in n.message for n in app._notifications)
        )
        assert any("exited without finishing" in line for line in app.screen.query_one(EventLog).text_lines())
        # still usable: views switch, the error panel opens and closes, q just quits
        await pilot.press("h")
        assert app.current_mode == "heatmap"
        await pilot.press("e")
        assert isinstance(app.screen, ErrorScreen)
        await pilot.press("escape")
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == "done"


async def test_run_finished_failed_shows_traceback():
    app, _ = make_app(events=fake_run(finish="failed", epochs=1))
    async with app.run_test(size=NARROW) as pilot:
        assert await until(pilot, lambda: isinstance(app.screen, ErrorScreen))
        text = screen_text(app)
        assert "CUDA out of memory" in text
        assert "engine.fit()" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, ErrorScreen)
        assert "FAILED" in screen_text(app)
        await pilot.press("e")
        assert isinstance(app.screen, ErrorScreen)
        assert "Tried to allocate 2.00 GiB" in screen_text(app)  # the traceback's last line, wrapped


async def test_help_lists_every_binding_and_fits_80x24():
    app, _ = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for k in keys_for(app):  # what applies here: no control channel, one run (the rest: test_ui_truth)
            assert k.help.removeprefix("chart: ") in text, k.help
        assert "command palette" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_runs_actions_from_the_table():
    app, _ = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"heatmap")
        await pilot.pause(0.3)
        await pilot.press("enter")
        assert await until(pilot, lambda: app.current_mode == "heatmap")


async def test_dropped_steps_are_reported():
    app, source = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        source.feed([], dropped_steps=1234)
        assert await until(pilot, lambda: "dropped 1,234" in screen_text(app))


async def test_finished_states():
    app, source = make_app()
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        source.feed([StatusChanged("stopped", 250, time=T0 + 5), RunFinished("stopped", 250, time=T0 + 6)])
        assert await until(pilot, lambda: " STOPPED " in screen_text(app))
        assert "done" in screen_text(app).splitlines()[1]


async def test_nan_gradients_and_alert_are_shown():
    events = running_events()
    app, source = make_app(events=events)
    async with app.run_test(size=NARROW) as pilot:
        await ready(pilot)
        bad = make_batch(250, 10, vgg_layers(), np.random.default_rng(3), steps_per_epoch=100, t=T0 + 4)
        bad.probes[:, :, 0] = np.nan  # the input layer's statistics went non-finite
        bad.scalars[:, 0] = np.nan  # and so did the loss
        source.feed([bad, Alert(259, "error", "nan", "loss is NaN at step 259")])
        await pilot.press("b", "b")  # a key forces the paced panels to redraw now
        bars = app.screen.query_one(GradBars)
        assert await until(pilot, lambda: bars.health[0] == 3)
        # row 0 of the bars, in the error style; painted on the bars' next turn, not necessarily at once
        assert await until(pilot, lambda: "nan" in screen_text(app).splitlines()[3])
        assert await until(pilot, lambda: "loss is NaN at step 259" in screen_text(app))
        assert np.isfinite(app.screen.query_one(LossChart).spec.sm_y).all()  # the chart skips NaN


async def test_live_source_over_a_multiprocessing_queue_end_to_end():
    q = mp.Queue()
    events = fake_run(epochs=2, steps_per_epoch=50)
    for i in range(0, len(events), 4):
        q.put(EventBatch(events[i : i + 4]))
    app = TuitrainApp(
        LiveSource(q), control=Recorder(), proc_alive=lambda: True, clock=lambda: T0 + 10, cpu_budget=None
    )
    async with app.run_test(size=NARROW) as pilot:
        assert await until(pilot, lambda: "COMPLETED" in screen_text(app))
        assert "step 100/100" in screen_text(app)
        await pilot.press("q")  # finished: q just quits
        await pilot.pause()
    assert app.return_value == "done"
    q.close()


def test_pacer_stretches_when_over_budget_and_relaxes():
    t = {"wall": 0.0, "cpu": 0.0}
    p = Pacer(budget=0.1, window=1.0, cpu=lambda: t["cpu"], wall=lambda: t["wall"])
    for _ in range(3):  # 30% of a core: over budget
        t["wall"] += 1.0
        t["cpu"] += 0.3
        p.update()
    assert p.factor == 8.0
    for _ in range(20):  # idle: back to full speed
        t["wall"] += 1.0
        t["cpu"] += 0.01
        p.update()
    assert p.factor == 1.0
