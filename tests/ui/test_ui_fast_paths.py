"""The frame-time fast paths, each against the slow reference it replaced: the numpy chart rasteriser
against plotext itself, the min/max downsampling and the stats lookups against brute force, the
incremental EMA against a full recompute, the one-pass sparkline strings; then, in a running app, the
staggering of the big panels and the event log that grows without a relayout."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from fake_events import T0, fake_run, make_batch, mlp_layers
from textual_plotext.plot import Plot

from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.downsample import minmax_indices
from tuitrain.ui.fmt import fmt_si
from tuitrain.ui.history import History
from tuitrain.ui.screens.dashboard import DashboardScreen
from tuitrain.ui.source import EventsArrived, ListSource
from tuitrain.ui.widgets.chart_raster import Series, rasterize
from tuitrain.ui.widgets.chart_spec import nice_ticks, step_label
from tuitrain.ui.widgets.chart_stats import best_value, last_finite
from tuitrain.ui.widgets.event_log import EventLog
from tuitrain.ui.widgets.grad_bars import GradBars
from tuitrain.ui.widgets.loss_plot import LossChart, LossPanel
from tuitrain.ui.widgets.plotext_strips import draw_figure
from tuitrain.ui.widgets.update_sparklines import SPARKS, UpdateSparklines, spark_strings

TICKS = (224, 224, 224)
THEME = "tuitrain-test"


def plotext_cells(width, height, series, xlim, ylim, ticks):
    """What plotext draws for the same calls: (lines top first, colour index per cell as in Raster)."""
    from plotext._dict import themes

    themes.setdefault(THEME, [(30, 30, 30), (30, 30, 30), TICKS, "default", []])
    plt = Plot()
    draw_figure(plt, width, height, THEME, series, xlim, ylim, ticks)
    m = plt.monitor.matrix
    colors = [None, TICKS, *(s.color for s in series)]
    fg = [[colors.index(c) if c in colors else 0 for c in row] for row in m.fullground[::-1]]
    return ["".join(row) for row in m.marker[::-1]], np.array(fg)


def random_chart(rng):
    width, height = int(rng.integers(12, 130)), int(rng.integers(6, 45))
    n = int(rng.integers(1, 250))
    x = np.sort(rng.uniform(0, 1000, n))
    y = np.cumsum(rng.normal(0, 1, n)) + 5
    lo, hi = float(rng.uniform(-100, 300)), float(rng.uniform(500, 1100))  # data may leave the x range
    q = np.percentile(y, [5, 95])  # ... and the y range: clipped per cell, lines cut at the frame
    ylim = (float(q[0]), float(q[1]) + 1e-3)
    series = [Series(x, y, (200, 0, 0), "·"), Series(x[::3], y[::3], (0, 200, 0))]
    if rng.random() < 0.5:
        series.append(Series(x[::17], y[::17], (0, 0, 200), "●", lines=False))
    if rng.random() < 0.3:
        series.append(Series(x[::11], y[::11] + 0.3, (0, 100, 200), lines=bool(rng.random() < 0.5)))
    xt = nice_ticks(lo, hi, max(2, min(6, width // 12)))  # may be empty: no label line then
    yt = nice_ticks(*ylim, max(2, min(6, height // 3)))
    return (
        width,
        height,
        series,
        (lo, hi),
        ylim,
        (xt, [step_label(v) for v in xt], yt, [fmt_si(v, 3) for v in yt]),
    )


def test_rasterize_draws_what_plotext_draws():
    rng = np.random.default_rng(7)
    drawn = 0
    for _ in range(120):
        width, height, series, xlim, ylim, ticks = random_chart(rng)
        got = rasterize(width, height, series, xlim, ylim, *ticks, TICKS)
        if got is None:  # no room for a canvas: the chart asks plotext
            assert width - 2 - max((len(s) for s in ticks[3]), default=0) < 1 or height < 4
            continue
        lines, fg = plotext_cells(width, height, series, xlim, ylim, ticks)
        assert got.lines == lines
        np.testing.assert_array_equal(got.fg, fg)
        drawn += 1
    assert drawn > 100


def test_rasterize_edge_cases_match_plotext():
    x, y = np.array([5.0]), np.array([1.0])  # one point; a scatter only; a flat line
    for series in (
        [Series(x, y, (1, 2, 3))],
        [Series(x, y, (1, 2, 3), "●", lines=False)],
        [Series(np.arange(10.0), np.ones(10), (1, 2, 3), "·")],
    ):
        ticks = ([0.0, 5.0, 10.0], ["0", "5", "10"], [0.5, 1.0, 1.5], ["0.5", "1", "1.5"])
        got = rasterize(40, 12, series, (0.0, 10.0), (0.5, 1.5), *ticks, TICKS)
        lines, fg = plotext_cells(40, 12, series, (0.0, 10.0), (0.5, 1.5), ticks)
        assert got.lines == lines
        np.testing.assert_array_equal(got.fg, fg)
    assert rasterize(40, 12, [], (1.0, 1.0), (0.0, 1.0), [], [], [], [], TICKS) is None  # empty x range


async def test_the_chart_is_rasterised_cell_for_cell_as_plotext_would():
    app = TuitrainApp(
        ListSource(fake_run(finish=None, stop_after=250)), clock=lambda: T0 + 4.0, cpu_budget=None
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        app.redraw(force=True)
        await pilot.pause(0.2)
        chart = app.screen.query_one(LossChart)
        chart.render_line(0)
        assert chart.builds and chart.spec.sm_x.size
        fast = [[(seg.text, seg.style) for seg in strip.simplify()] for strip in chart._strips]
        chart.theme = "textual-dark"  # a Plotext theme: the chart asks plotext (same surface colours here)
        from plotext._dict import themes

        themes["textual-dark"], saved = themes[f"textual-auto-{app.theme}"], themes["textual-dark"]
        try:
            slow = [[(seg.text, seg.style) for seg in strip.simplify()] for strip in chart._build_strips()]
        finally:
            themes["textual-dark"] = saved
        assert fast == slow


def reference_minmax(y, columns):
    n = y.shape[0]
    if n <= 2 * columns:
        return list(range(n))
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        seg = y[a:b]
        i, j = a + int(np.argmin(seg)), a + int(np.argmax(seg))
        out += sorted({i, j})
    return out


def test_minmax_indices_first_extremes_per_bucket():
    rng = np.random.default_rng(3)
    for trial in range(400):
        n, columns = int(rng.integers(1, 3000)), int(rng.integers(1, 200))
        y = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.normal(size=n)  # ties, then none
        assert minmax_indices(y, columns).tolist() == reference_minmax(y, columns)


def test_last_finite_and_best_value_follow_appends_and_decimation():
    a = np.array([1.0, np.nan, 3.0] + [np.nan] * 1000)
    assert (
        last_finite(a) == 3.0
        and np.isnan(last_finite(np.full(5, np.nan)))
        and np.isnan(last_finite(np.zeros(0)))
    )
    h = History(step_cap=64)
    rng = np.random.default_rng(0)
    layers = mlp_layers(4)
    for start in range(0, 500, 25):  # several compactions on the way
        h.extend([make_batch(start, 25, layers, rng, steps_per_epoch=100, t=T0)])
        loss, acc = h.column("loss"), h.column("acc")
        assert best_value(h, "loss", largest=False) == np.nanmin(loss)
        assert best_value(h, "acc", largest=True) == np.nanmax(acc)
        assert last_finite(loss) == loss[np.isfinite(loss)][-1]


def test_smoothed_grows_in_place_and_matches_a_full_recompute():
    h, ref = History(), History()
    rng = np.random.default_rng(1)
    layers = mlp_layers(4)
    batches = [make_batch(s, 300, layers, rng, steps_per_epoch=1000, t=T0) for s in range(0, 6000, 300)]
    for b in batches:
        h.extend([b])
        h.smoothed("loss", 0.9)  # extended a batch at a time
    ref.extend(batches)
    np.testing.assert_allclose(h.smoothed("loss", 0.9), ref.smoothed("loss", 0.9), rtol=1e-12)
    assert h.smoothed("loss", 0.9) is h.smoothed("loss", 0.9)


def test_spark_strings_one_character_per_value():
    v = np.array([[0.0, 0.5, 1.0, np.nan], [1.0, 1.0, 1.0, 1.0]])
    assert spark_strings(v, 0.0, 1.0) == [SPARKS[0] + SPARKS[4] + SPARKS[-1] + " ", SPARKS[-1] * 4]
    assert spark_strings(np.zeros((2, 0)), 0.0, 1.0) == ["", ""]


def batch_events(h: History, n: int = 20) -> list:
    layers = h.layers
    return [
        make_batch(h.steps_done, n, layers, np.random.default_rng(h.steps_done), steps_per_epoch=100, t=T0)
    ]


async def test_big_panels_take_turns_but_a_key_redraws_them_all():
    events = fake_run(finish=None, stop_after=200)
    app = TuitrainApp(ListSource(events), clock=lambda: T0 + 4.0, cpu_budget=None)
    calls: list[str] = []
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause(0.5)
        for timer in list(app._timers):  # the test makes every frame itself
            if getattr(timer, "_callback", None) == app._tick:
                timer.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        for cls in (GradBars, UpdateSparklines, EventLog):
            widget = screen.query_one(cls)
            orig = widget.update_data
            widget.update_data = lambda *a, _o=orig, _n=cls.__name__, **k: (calls.append(_n), _o(*a, **k))[1]
        panel = screen.query_one(LossPanel)
        builds = []
        orig_panel = panel.update_data

        def counted(*a, **k):
            before = panel.chart.spec_version
            out = orig_panel(*a, **k)
            if panel.chart.spec_version != before:
                builds.append(1)
            return out

        panel.update_data = counted
        seen = {"GradBars": 0, "UpdateSparklines": 0, "EventLog": 0, "chart": 0}
        for i in range(25):  # a live run: new steps before every tick, now and then an event
            app.post_message(EventsArrived(batch_events(app.history)))
            if i % 5 == 0:
                app.history.add_log(app.history.steps_done, "info", "note", f"note {i}")
            await pilot.pause(0.1)
            calls.clear()
            builds.clear()
            app.redraw(force=False)
            heavy = calls + ["chart"] * len(builds)
            assert len(heavy) <= 1, heavy  # one big panel per frame
            for name in heavy:
                seen[name] += 1
        assert all(seen.values()), seen  # and each gets its turn
        app.post_message(EventsArrived(batch_events(app.history)))
        await pilot.pause(0.05)
        calls.clear()
        builds.clear()
        app.redraw(force=True)
        assert sorted(calls) == ["EventLog", "GradBars", "UpdateSparklines"] and builds == [1]


async def test_event_log_grows_without_relayout_and_sticks_to_the_bottom():
    app = TuitrainApp(
        ListSource(fake_run(finish=None, stop_after=250)), clock=lambda: T0 + 4.0, cpu_budget=None
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        log = app.screen.query_one(EventLog)
        layouts = []
        orig = app.screen._refresh_layout
        app.screen._refresh_layout = lambda *a, **k: (layouts.append(1), orig(*a, **k))[1]
        for i in range(30):
            app.history.add_log(250 + i, "info", "note", f"entry {i}")
            log.update_data(app.history)
            await pilot.pause(0.02)
        assert log.virtual_size.height == len(log.lines) >= len(app.history.log)  # long entries wrap
        assert log.scroll_y == log.max_scroll_y > 0
        text = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
        assert "entry 29" in text
        assert len(layouts) <= 2  # only when its scrollbar appeared, not once per entry


async def test_the_collector_is_settled_while_running_and_restored_after():
    before = gc.get_threshold()
    app = TuitrainApp(
        ListSource(fake_run(finish=None, stop_after=50)), clock=lambda: T0 + 4.0, cpu_budget=None
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == app.GC_THRESHOLD
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_chart_spec_and_stats_stay_cheap_on_a_long_history(size):
    """A 300,000-step history (decimated to its cap) still draws: no pass over it per stats refresh."""
    h = History(step_cap=1 << 16)
    rng = np.random.default_rng(2)
    layers = mlp_layers(6)
    from fake_events import run_started

    h.extend([run_started(layers, epochs=3, steps_per_epoch=100_000)])
    for start in range(0, 300_000, 50_000):
        h.extend([make_batch(start, 50_000, layers, rng, steps_per_epoch=100_000, probe_every=1000, t=T0)])
    app = TuitrainApp(ListSource([]), history=h, cpu_budget=None)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.3)
        app.redraw(force=True)
        await pilot.pause(0.2)
        chart = app.screen.query_one(LossChart)
        assert chart.spec.xlim[1] == pytest.approx(h.column("step")[-1])
        assert chart.spec.raw_x.size <= 2 * chart.size.width
        assert h.scalars.n <= 1 << 16
