"""The dashboard for a user's own loop (``tuitrain.init`` / ``run.log``): a RunStarted that knows no
dataset, classes, epochs or steps per epoch; maybe no per-layer probes; the loop's own step scalars
in StepBatch.scalar_names; its own epoch and test metrics. The real app under ``App.run_test()``, fed
events built here (tests/ui/fake_events.py: ``iter_user_run``)."""

from __future__ import annotations

import numpy as np
from fake_events import (
    T0,
    USER_KEYS,
    fake_run,
    iter_user_run,
    user_run,
    user_run_started,
    user_values,
)
from pilot_helpers import screen_text, until

from tuitrain.events import STEP_SCALARS, StepBatch
from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.history import History
from tuitrain.ui.replay.runs import RunSet, RunSlot
from tuitrain.ui.source import ListSource
from tuitrain.ui.widgets.event_log import EventLog
from tuitrain.ui.widgets.final_table import FinalTable
from tuitrain.ui.widgets.grad_bars import GradBars
from tuitrain.ui.widgets.layer_rows import NO_PROBES
from tuitrain.ui.widgets.loss_plot import LossChart, LossPanel
from tuitrain.ui.widgets.update_sparklines import UpdateSparklines
from tuitrain.view.divergence import first_divergence

NARROW = (80, 24)
WIDE = (200, 60)


def make_app(events, **kw) -> TuitrainApp:
    return TuitrainApp(ListSource(events), clock=lambda: T0 + 10.0, cpu_budget=None, **kw)


async def settled(pilot, steps: int) -> None:
    app = pilot.app
    assert await until(pilot, lambda: app.history.steps_done >= steps)
    app.redraw(force=True)
    await pilot.pause()
    app.redraw(force=True)  # the chart sizes itself from the first layout
    await pilot.pause()


# -- header and progress with unknown totals -----------------------------------------------------


async def test_header_of_a_run_with_unknown_totals_says_no_step_n_of_0_and_no_eta():
    app = make_app(user_run(steps=300, finish=None))
    async with app.run_test(size=NARROW) as pilot:
        await settled(pilot, 300)
        text = screen_text(app)
        head = text.splitlines()[:2]
        assert "mnist · Net · cpu" in head[0], head
        assert "RUNNING" in head[0]
        assert "· ·" not in head[0] and "0 params" not in head[0]
        assert "step 300" in head[1], head
        assert "/0" not in head[1] and "%" not in head[1], head  # no total, no bar, no percentage
        assert "ETA" not in head[1], head  # no ETA from an unknown total
        assert "epoch 3" in head[1], head  # the epoch it is in, without "/0"
        assert "samples/s" not in head[1]  # the loop gave no batch size: steps/s instead
        assert "steps/s" in head[1], head


async def test_header_of_a_finished_user_run_says_done():
    app = make_app(user_run(steps=200))
    async with app.run_test(size=NARROW) as pilot:
        await settled(pilot, 200)
        assert await until(pilot, lambda: app.history.is_finished)
        app.redraw(force=True)
        await pilot.pause()
        head = screen_text(app).splitlines()[:2]
        assert "COMPLETED" in head[0] and "DIVERGED" not in head[0]
        assert "step 200" in head[1] and "done" in head[1] and "/0" not in head[1], head


# -- no per-layer probes -------------------------------------------------------------------------


async def test_a_run_without_watch_says_how_to_get_per_layer_probes():
    app = make_app(user_run(steps=100, finish=None))
    async with app.run_test(size=WIDE) as pilot:
        await settled(pilot, 100)
        assert not app.history.has_grad
        text = screen_text(app)
        for panel in (GradBars, UpdateSparklines):
            assert app.screen.query_one(panel).empty_text == NO_PROBES
        assert text.count("no per-layer probes: call run.watch(model,") == 2  # bars and sparklines
        assert "waiting for the first gradients" not in text and "waiting for the first updates" not in text
        assert "vanish" not in text  # no health legend for bars that are not there
        await pilot.press("h")
        assert await until(pilot, lambda: app.current_mode == "heatmap")
        app.redraw(force=True)
        await pilot.pause()
        text = screen_text(app)
        assert "no per-layer probes: call run.watch(model, optimizer)" in text
        assert "waiting for the first probes" not in text


async def test_no_probes_message_wraps_in_a_narrow_panel():
    app = make_app(user_run(steps=100, finish=None))
    async with app.run_test(size=NARROW) as pilot:
        await settled(pilot, 100)
        text = " ".join(screen_text(app).split())  # the panel wraps it over lines
        assert "no per-layer probes:" in text and "run.watch(model," in text


async def test_a_watched_user_run_shows_its_bars():
    app = make_app(user_run(steps=100, probes=True, finish=None))
    async with app.run_test(size=WIDE) as pilot:
        await settled(pilot, 100)
        bars = app.screen.query_one(GradBars)
        assert app.history.has_grad and len(app.history.layers) == 4
        assert await until(pilot, lambda: bars.values.size == 4 and bool(np.isfinite(bars.values).all()))
        assert NO_PROBES not in screen_text(app)


# -- the loop's own scalars ----------------------------------------------------------------------


def test_history_keeps_the_user_columns_in_first_seen_order_and_adds_new_ones_mid_run():
    h = History()
    h.extend(user_run(steps=100, finish=None))
    assert h.columns == ("step", "epoch", *STEP_SCALARS, *USER_KEYS)
    assert h.user_scalars == USER_KEYS
    steps = h.column("step").astype(np.int64)
    np.testing.assert_allclose(h.column("grad_scale"), user_values(steps)["grad_scale"])
    np.testing.assert_allclose(h.column("top5"), user_values(steps)["top5"])
    # a key first logged at step 100: a new column, NaN for the rows before it
    names = (*STEP_SCALARS, *USER_KEYS, "ppl")
    sc = np.full((5, len(names)), np.nan)
    sc[:, 0] = 0.5
    sc[:, -1] = 12.0
    h.extend([StepBatch(np.arange(100, 105), np.zeros(5, np.int32), sc, names)])
    assert h.columns[-1] == "ppl" and h.user_scalars == (*USER_KEYS, "ppl")
    ppl = h.column("ppl")
    assert np.isnan(ppl[:100]).all() and (ppl[100:] == 12.0).all()
    assert np.isnan(h.column("grad_scale")[100:]).all()  # that batch did not log it
    # a batch with only the standard columns still lands in the right ones
    sc2 = np.full((2, len(STEP_SCALARS)), 0.25)
    h.extend([StepBatch(np.arange(105, 107), np.zeros(2, np.int32), sc2)])
    assert h.column("loss")[-1] == 0.25 and np.isnan(h.column("ppl")[-1])
    assert h.scalars_at(None)["loss"] == 0.25 and "ppl" in h.scalars_at(None)
    assert np.isnan(h.column("no_such_key")).all() and h.column("no_such_key").shape == (107,)


async def test_metric_key_cycles_loss_then_the_loops_own_scalars_and_charts_their_values():
    app = make_app(user_run(steps=300, finish=None))
    async with app.run_test(size=WIDE) as pilot:
        await settled(pilot, 300)
        # the loop logs no accuracy: the cycle skips it; its own epoch metrics come last
        assert app.metric_cycle() == ("loss", *USER_KEYS, "val_top5", "val_f1")
        chart, panel = app.screen.query_one(LossChart), app.screen.query_one(LossPanel)
        seen = []
        for _ in range(5):
            await pilot.press("a")
            app.redraw(force=True)
            await pilot.pause()
            seen.append(app.view.metric)
            if app.view.metric == "grad_scale":
                # the raw envelope holds the logged values: 65536 halving every 100 steps
                assert float(chart.spec.raw_y.max()) == 65536.0
                assert float(chart.spec.raw_y.min()) == 65536.0 / 4
                assert "grad_scale" in str(panel.border_title)
                assert "grad_scale" in panel.stats.markup  # the stats line names it too
                assert "grad_scale 1.64e+4" in screen_text(app)  # the latest, under the chart
            if app.view.metric == "top5":
                want = user_values(np.arange(300))["top5"]
                assert abs(float(chart.spec.raw_y.max()) - want.max()) < 1e-9
                assert "top5" in str(panel.border_title)
            if app.view.metric == "val_f1":  # one point per epoch, at the epoch's last step
                assert chart.spec.val_x.tolist() == [99.0, 199.0, 299.0]
                assert np.allclose(chart.spec.val_y, [0.7, 0.8, 0.9])
                assert "val_f1 (epochs)" in str(panel.border_title)
        assert seen == ["grad_scale", "top5", "val_top5", "val_f1", "loss"]


async def test_a_preset_still_swaps_loss_and_accuracy():
    app = make_app(fake_run(finish=None, stop_after=120))
    async with app.run_test(size=NARROW) as pilot:
        assert await until(pilot, lambda: app.history.steps_done >= 120)
        assert app.metric_cycle() == ("loss", "acc")
        await pilot.press("a")
        assert app.view.metric == "acc"
        await pilot.press("a")
        assert app.view.metric == "loss"


async def test_compare_view_overlays_a_user_scalar_of_two_runs():
    a = user_run(steps=200)
    b = list(iter_user_run(steps=100))
    b[0].run_name = "mnist-b"
    runs = RunSet([RunSlot(ListSource(a), History()), RunSlot(ListSource(b), History())])
    app = TuitrainApp(None, runs=runs, replay=True, mode="compare", cpu_budget=None)
    async with app.run_test(size=WIDE) as pilot:
        assert await until(pilot, lambda: all(h.is_finished for h in runs.histories))
        assert app.metric_cycle() == ("loss", *USER_KEYS, "val_top5", "val_f1")
        await pilot.press("a")  # loss -> grad_scale
        app.redraw(force=True)
        await pilot.pause()
        chart = app.screen.query_one(LossChart)
        assert app.view.metric == "grad_scale" and len(chart.spec.lines) == 2
        assert max(float(ln.y.max()) for ln in chart.spec.lines) <= 65536.0 * (1 + 1e-9)
        ends = sorted(float(ln.x.max()) for ln in chart.spec.lines)
        assert 98 <= ends[0] <= 99 and 197 <= ends[1] <= 199, ends  # bucket means of the steps
        table = app.screen.query_one(FinalTable)
        assert await until(pilot, lambda: len(table.text_rows()) == 3)
        head = table.text_rows()[0]
        for col in ("val_top5", "val_f1", "test_f1", "test_top5"):
            assert col in head, head


# -- epoch log and final table with the loop's own metrics --------------------------------------


async def test_epoch_log_shows_own_metrics_and_no_nan_for_what_the_loop_did_not_measure():
    app = make_app(user_run(steps=300))
    async with app.run_test(size=WIDE) as pilot:
        assert await until(pilot, lambda: app.history.is_finished)
        epochs = [e for e in app.history.log if e.kind == "epoch"]
        assert len(epochs) == 3
        first = epochs[0]
        assert first.level == "info", first
        assert first.message.startswith("epoch 1  train ")  # no "/0": the loop gave no epoch count
        assert "val 0.8000" in first.message and "val_top5 0.8" in first.message
        assert "val_f1 0.7" in first.message
        assert "nan" not in first.message and "%" not in first.message  # no accuracy was measured
        test = next(e for e in app.history.log if e.kind == "test")
        assert test.level == "success"
        assert test.message == "test  loss 0.3100  acc 91.20%  f1 0.905  top5 0.991"
        app.redraw(force=True)
        await pilot.pause()
        log = app.screen.query_one(EventLog)
        assert any("val_top5 0.8" in line for line in log.text_lines())
        assert app.history.log[0].message == "run mnist started (your own loop): Net on cpu"


async def test_final_table_of_a_user_run_has_its_own_metrics():
    app = make_app(user_run(steps=300), mode="compare")
    async with app.run_test(size=WIDE) as pilot:
        assert await until(pilot, lambda: app.history.is_finished)
        table = app.screen.query_one(FinalTable)
        app.redraw(force=True)
        assert await until(pilot, lambda: len(table.text_rows()) == 2)
        head, row = table.text_rows()
        cols = table.header
        cells = table.cells[0]
        got = dict(zip(cols, cells, strict=True))
        assert got["Val Loss"] == "0.4667" and got["Test Acc"] == "91.20"
        assert got["Train Acc"] == "-" and got["Val Acc"] == "-"  # not measured: missing, not nan
        assert got["val_top5"] == "0.9000" and got["val_f1"] == "0.9000"  # the last epoch's
        assert got["test_f1"] == "0.9050" and got["test_top5"] == "0.9910"
        assert "nan" not in row


# -- divergence of a sparsely logged loss --------------------------------------------------------


def test_a_loss_logged_every_tenth_step_is_no_divergence():
    h = History()
    h.extend(user_run(steps=300, log_every=10))
    assert h.nan_step is None
    assert not any("not finite" in e.message for e in h.log)


def test_a_user_loss_that_stays_nan_is_a_divergence_at_the_row_after_the_last_finite_one():
    steps = np.arange(100)
    loss = np.where(steps % 10 == 0, 1.0, np.nan)  # every tenth step
    loss[60:] = np.nan  # ... then NaN from step 60 on (the loop logged NaN)
    assert first_divergence(steps, loss, dense=False) == 51
    assert first_divergence(steps[:60], loss[:60], dense=False) is None  # still within one interval
    assert first_divergence(steps[:61], loss[:61], dense=False) == 51  # longer than any gap before
    every = np.ones(100)
    every[40:] = np.nan
    assert first_divergence(steps, every, dense=False) == 40  # a loop that logs every step: exact
    every[70] = np.inf
    assert first_divergence(steps[:75], np.where(steps[:75] == 70, np.inf, 1.0), dense=False) == 70
    dense = np.ones(100)
    dense[30] = np.nan  # a preset: the first NaN, even if it recovers
    assert first_divergence(steps, dense) == 30


def test_history_of_a_user_loop_finds_a_loss_that_went_nan():
    events = user_run(steps=200, finish=None)
    for ev in events:
        if isinstance(ev, StepBatch) and ev.steps[0] >= 150:
            ev.scalars[:, 0] = np.nan
    h = History()
    h.extend([user_run_started(), *events[1:]])
    assert h.nan_step == 150


def test_divergence_fed_in_batches_matches_the_whole_column():
    """The dashboard feeds the loss batch by batch, info reads the whole column: one answer."""
    from tuitrain.view.divergence import DivergenceTracker

    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(1, 120))
        every = int(rng.integers(1, 12))
        loss = np.where(np.arange(n) % every == 0, 1.0, np.nan)
        if rng.random() < 0.5:
            loss[int(rng.integers(0, n)) :] = np.nan
        if rng.random() < 0.2:
            loss[int(rng.integers(0, n))] = np.inf
        steps = np.arange(n)
        for dense in (True, False):
            t = DivergenceTracker(dense)
            cuts = np.sort(rng.integers(0, n, int(rng.integers(0, 6))))
            for a, b in zip([0, *cuts], [*cuts, n], strict=True):
                t.feed(steps[a:b], loss[a:b])
            assert t.step == first_divergence(steps, loss, dense), (trial, dense, every)


def test_config_keys_that_differ_between_user_loops_and_none_against_a_preset():
    from fake_events import CONFIG_TOML

    from tuitrain.ui.replay.compare import run_config_diff

    a = ("", '{"lr": 1.0, "opt": {"name": "adadelta", "rho": 0.9}, "seed": 1}')
    b = ("", '{"lr": 0.5, "opt": {"name": "adadelta", "rho": 0.95}, "seed": 1, "amp": true}')
    keys, values = run_config_diff([a, b])
    assert keys == ["lr", "opt.rho", "amp"]
    assert values == [
        {"lr": "1", "opt.rho": "0.9", "amp": ""},
        {"lr": "0.5", "opt.rho": "0.95", "amp": "true"},
    ]
    assert run_config_diff([a, (CONFIG_TOML, "")]) == ([], [{}, {}])  # nothing in common to compare


def test_stats_under_the_chart_leave_out_a_validation_the_loop_never_logged():
    from tuitrain.events import EpochEnd
    from tuitrain.ui.view_state import ViewState
    from tuitrain.ui.widgets.chart_stats import stats_markup

    h = History()
    h.extend([e for e in user_run(steps=150, finish=None) if not isinstance(e, EpochEnd)])
    text = stats_markup(h, ViewState(), 80)
    assert "val" not in text and "—" not in text, text
    assert text.splitlines()[1].startswith("[b]grad_scale[/]")  # no accuracy: its own first key
    preset = History()
    preset.extend(fake_run(finish=None, stop_after=50))  # a preset before its first epoch: val —
    assert "val[/] [b]—" in stats_markup(preset, ViewState(), 80)
