"""Replay in the real app (Pilot): the time cursor moving what the bars, sparklines, heatmap and chart
show, playing, overlays of 2 and 5 runs with legend and final table, a long generated file, following
a file another process writes until it finishes, and a run whose writer was SIGKILLed.

Run files come from the real engine (tests/test_replay.py trains them once per session) and from
the synthetic generator there."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pilot_helpers import screen_text
from pilot_helpers import until as wait_until

from tests.test_replay import engine_runs, killed_run, spawn_writer, write_synthetic
from tuitrain.events import PROBE_NAMES
from tuitrain.runfile import open_run
from tuitrain.ui.replay.launch import replay_app
from tuitrain.ui.widgets.cursor_bar import CursorBar
from tuitrain.ui.widgets.final_table import FinalTable
from tuitrain.ui.widgets.grad_bars import GradBars
from tuitrain.ui.widgets.heatmap import HeatmapRows
from tuitrain.ui.widgets.loss_plot import LossChart, LossPanel
from tuitrain.ui.widgets.update_sparklines import UpdateSparklines

WIDE = (120, 36)


async def until(pilot, cond, timeout: float = 10.0) -> bool:
    """Replay loads real run files: a longer default wait than the live tests'."""
    return await wait_until(pilot, cond, timeout)


def app_for(paths, **kw):
    return replay_app([open_run(p) for p in paths], cpu_budget=None, **kw)


async def loaded(pilot) -> None:
    """Every run's events are in, and the panels drew them."""
    app = pilot.app

    def done() -> bool:
        if not all(h.is_finished or h.steps_done for h in app.runs.histories):
            return False
        charts = app.screen.query(LossChart)
        return (
            not charts
            or charts.first().builds > 0
            and (charts.first().spec.lines or charts.first().spec.sm_x.size)
        )

    assert await until(pilot, done)
    app.redraw()
    await pilot.pause()


def grad_row(path: Path, step: int) -> np.ndarray:
    with open_run(path) as rf:
        return rf.probe_at_step(step)[PROBE_NAMES.index("grad_norm")].astype(np.float64)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return engine_runs(tmp_path_factory)


async def test_cursor_moves_what_the_panels_show(engine):
    app = app_for(engine[:1])
    async with app.run_test(size=WIDE) as pilot:
        await loaded(pilot)
        bars, bar = app.screen.query_one(GradBars), app.screen.query_one(CursorBar)
        chart, sparks = app.screen.query_one(LossChart), app.screen.query_one(UpdateSparklines)
        last = app.history.steps_done - 1
        assert await until(pilot, lambda: bars.probe_step == last)
        assert "latest step" in bar.markup and app.focused is None
        latest = bars.values.copy()
        np.testing.assert_allclose(latest, grad_row(engine[0], last))

        await pilot.press("home")
        assert app.view.cursor == 0 and bars.probe_step == 0
        np.testing.assert_allclose(bars.values, grad_row(engine[0], 0))
        assert not np.allclose(bars.values, latest)
        assert "Gradients @ 0" in screen_text(app) and "step 0/31" in bar.markup
        assert chart.cursor_x == 0.0 and sparks.cursor_col == 0

        await pilot.press("right", "right", "right")
        assert app.view.cursor == 3 and bars.probe_step == 3  # 32 steps < chart columns: one step a press
        np.testing.assert_allclose(bars.values, grad_row(engine[0], 3))
        await pilot.press("shift+right")
        assert app.view.cursor == 16 and "epoch 2/2" in bar.markup  # 16 steps per epoch
        assert "val" in bar.markup and "(ep 1)" in bar.markup  # the first epoch's validation is done
        await pilot.press("shift+left", "left")
        assert app.view.cursor == 0
        await pilot.press("shift+right", "shift+right", "shift+right")
        assert app.view.cursor == last

        await pilot.press("h")  # the heatmap marks the cursor and shows the values there
        rows = app.screen.query_one(HeatmapRows)
        await pilot.press("home")
        assert await until(pilot, lambda: rows.at_cursor is not None)
        assert (
            rows.cursor_col is not None and rows.cursor_col < rows.levels.shape[1] / 16
        )  # step 0: the left edge
        np.testing.assert_allclose(10**rows.at_cursor, grad_row(engine[0], 0), rtol=1e-5)
        assert "▼" in screen_text(app) and "at cursor" in screen_text(app)
        await pilot.press("end")
        assert app.view.cursor is None and rows.at_cursor is None
        assert "latest step" in app.screen.query_one(CursorBar).markup


async def test_space_plays_the_history_to_the_end(engine):
    app = app_for(engine[:1])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("home", "space")
        assert app.view.playing
        bars = app.screen.query_one(GradBars)
        seen = set()
        last = app.history.steps_done - 1

        def done() -> bool:
            seen.add(bars.probe_step)
            return not app.view.playing

        assert await until(pilot, done, timeout=15)
        assert app.view.cursor == last and bars.probe_step == last
        assert len(seen) >= 5  # the bars followed the cursor on its way
        await pilot.press("home", "space", "space")
        assert not app.view.playing and app.view.cursor is not None and app.view.cursor < last


async def test_two_engine_runs_overlaid_with_a_final_table(engine):
    app = app_for(engine)
    async with app.run_test(size=WIDE) as pilot:
        await loaded(pilot)
        assert app.current_mode == "compare"
        chart, panel = app.screen.query_one(LossChart), app.screen.query_one(LossPanel)
        assert len(chart.spec.lines) == 2 and chart.spec.lines[0].color != chart.spec.lines[1].color
        assert "Loss · 2 runs" in str(panel.border_title)
        text = screen_text(app)
        assert "mlp_lr1e-3" in text and "mlp_lr1e-2" in text  # the legend names each run
        table = app.screen.query_one(FinalTable)
        assert await until(pilot, lambda: len(table.cells) == 2)
        assert table.header[:8] == [
            "Run",
            "Train Loss",
            "Val Loss",
            "Train Acc",
            "Val Acc",
            "Test Loss",
            "Test Acc",
            "Params",
        ]
        assert "optim.lr" in table.header and [r[0] for r in table.cells] == ["mlp_lr1e-3", "mlp_lr1e-2"]
        assert "Train Loss" in screen_text(app) and "optim.lr" in screen_text(app)
        assert "■ 1/2 mlp_lr1e-3" in screen_text(app)

        await pilot.press("r")  # the second run in header, bars, sparklines, heatmap
        assert app.view.selected == 1 and "■ 2/2 mlp_lr1e-2" in screen_text(app)
        await pilot.press("c")
        assert app.current_mode == "dashboard"
        bars = app.screen.query_one(GradBars)
        assert await until(pilot, lambda: bars.probe_step is not None)
        with open_run(engine[1]) as rf:
            last = rf.n_steps - 1
        np.testing.assert_allclose(bars.values, grad_row(engine[1], last))
        assert len(app.screen.query_one(LossChart).spec.lines) == 2  # the dashboard's chart overlays too


async def test_five_runs_by_validation_accuracy(tmp_path):
    lrs = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    paths = [
        write_synthetic(tmp_path / f"lr{lr:g}.h5", steps=800, n_layers=6, batch=200, name=f"lr{lr:g}", lr=lr)
        for lr in lrs
    ]
    app = app_for(paths, metric="val_acc")
    async with app.run_test(size=WIDE) as pilot:
        await loaded(pilot)
        chart, panel = app.screen.query_one(LossChart), app.screen.query_one(LossPanel)
        assert "Val acc % (epochs) · 5 runs" in str(panel.border_title)
        assert len(chart.spec.lines) == 5 and all(ln.points and ln.x.size == 4 for ln in chart.spec.lines)
        legend = panel.stats.markup
        for lr in lrs:
            assert f"lr{lr:g}" in legend
        table = app.screen.query_one(FinalTable)
        assert await until(pilot, lambda: len(table.cells) == 5)
        assert [r[0] for r in table.cells] == [f"lr{lr:g}" for lr in lrs]
        assert table.header[-1] == "optim.lr"
        assert "lr0.01" in screen_text(app)
        await pilot.press("a")  # val acc <-> val loss
        assert "Val loss" in str(panel.border_title)


async def test_long_file_opens_as_an_overview_and_reads_the_cursor_from_the_file(tmp_path):
    path = write_synthetic(tmp_path / "long.h5", steps=20_000, n_layers=50, batch=5000, name="long")
    t0 = time.perf_counter()
    app = app_for([path])
    async with app.run_test(size=WIDE) as pilot:
        await loaded(pilot)
        took = time.perf_counter() - t0
        h = app.history
        assert h.steps_done == 20_000 and h.scalars.n <= 20_001
        assert h.probes is not None and len(h.probes) <= 2 * 512
        bars = app.screen.query_one(GradBars)
        await pilot.press("home", "right")
        step = app.view.cursor
        assert step is not None and step > 1  # a long run: one chart column per press
        assert await until(pilot, lambda: bars.probe_step == step)
        np.testing.assert_allclose(bars.values, grad_row(path, step))  # exact, from the file
        await pilot.press("shift+right")
        assert app.view.cursor == 5000
        assert took < 15


async def test_follow_a_run_another_process_writes_until_it_finishes(tmp_path):
    path, go = tmp_path / "live.h5", tmp_path / "go"
    # The writer holds after its first batches until the test has seen the run live (a loaded machine
    # may take longer to start the app than the whole run takes to write), then writes the rest.
    proc = spawn_writer(
        tmp_path,
        f"""
        import os
        w = RunFileWriter({str(path)!r}, flush_seconds=0.05)
        for i, ev in enumerate(synthetic_events(steps=1500, batch=100, name="live")):
            w.emit(ev)
            w.flush()
            if i == 1:
                print("started", flush=True)
            if i == 3:
                while not os.path.exists({str(go)!r}):
                    time.sleep(0.05)
            time.sleep(0.12)
        w.close()
    """,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        app = app_for([path], follow=True, poll_seconds=0.1)
        async with app.run_test(size=WIDE) as pilot:
            assert await until(pilot, lambda: app.history.steps_done > 0 and "RUNNING" in screen_text(app))
            assert app.history.steps_done < 1500
            go.touch()
            assert await until(pilot, lambda: "COMPLETED" in screen_text(app), timeout=30)
            assert app.history.steps_done == 1500 and app.history.test is not None
            assert f"step {1500:,}/{1500:,}" in screen_text(app)
            assert any("run completed" in e.message for e in app.history.log)
    finally:
        proc.wait(timeout=30)


async def test_killed_writer_shows_incomplete(tmp_path):
    path = killed_run(tmp_path)
    app = app_for([path])
    async with app.run_test(size=WIDE) as pilot:
        assert await until(pilot, lambda: "INCOMPLETE" in screen_text(app))
        assert await until(pilot, lambda: any("never finished" in n.message for n in app._notifications))
        assert await until(pilot, lambda: "run incomplete" in screen_text(app))
        await pilot.press("home", "right")  # still scrubbable
        assert app.view.cursor is not None and app.view.cursor > 0
