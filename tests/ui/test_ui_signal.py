"""The Signal view (key ``v``): the real app under ``App.run_test()``, fed runs whose activation std falls
by decades from input to output (numpy-built act blocks: UI tests do not import torch), a real run file
written by the real writer for the replay cursor, and the schema-1 file of tests/data for a run without
the activation probe."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fake_events import T0, make_batch, run_started, vgg_layers
from pilot_helpers import screen_text, until

from tests.clirun import tt
from tuitrain.events import (
    ACT,
    ACT_PROBE,
    GRAD_PROBE,
    ModuleInfo,
    ProbeBlock,
    ProbeSpec,
    RunFinished,
    RunStarted,
    StepBatch,
)
from tuitrain.runfile import open_run
from tuitrain.runfile.writer import RunFileWriter
from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.history import History
from tuitrain.ui.replay.launch import replay_app
from tuitrain.ui.signal_history import FIELDS, NO_PROBE
from tuitrain.ui.source import ListSource
from tuitrain.ui.widgets.signal_bars import SignalBars
from tuitrain.ui.widgets.signal_map import SignalMap

DATA = Path(__file__).resolve().parents[1] / "data"
N_MOD = 12
STEPS = 300
EVERY = 10
SAT_ROW = 5  # the one module with bounds (a Sigmoid): its saturated fraction is finite


def modules(n: int = N_MOD) -> list[ModuleInfo]:
    """Leaves with a block after every third, the post-order the probe reports them in."""
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append(ModuleInfo(f"stages.0.blocks.{i // 3}", "ProcessingBlock", "block"))
        else:
            kind = "Sigmoid" if i == SAT_ROW else "Conv2d"
            out.append(ModuleInfo(f"stages.0.blocks.{i // 3}.m{i % 3}", kind, "leaf"))
    return out


def act_values(steps: np.ndarray, n: int = N_MOD) -> np.ndarray:
    """(m, 5, n): std 10**-(i * t) falls by i decades at module i by the end (t: 0 -> 1 over the run);
    dead fraction i / n; saturated only at SAT_ROW."""
    t = steps.astype(np.float64)[:, None] / STEPS
    i = np.arange(n, dtype=np.float64)[None, :]
    std = 10.0 ** (-(i * (0.2 + t)))
    vals = np.full((steps.shape[0], len(FIELDS), n), np.nan)
    vals[:, FIELDS.index("mean")] = 0.1 * std
    vals[:, FIELDS.index("std")] = std
    vals[:, FIELDS.index("zero_frac")] = 0.5
    vals[:, FIELDS.index("dead_frac")] = np.broadcast_to(i / n, std.shape)
    if n > SAT_ROW:
        vals[:, FIELDS.index("saturated_frac"), SAT_ROW] = 0.75
    return vals.astype(np.float32)


def signal_run(*, with_act: bool = True, steps: int = STEPS, finish: bool = True) -> list:
    layers = vgg_layers(blocks_per_stage=1)
    start = run_started(layers, epochs=1, steps_per_epoch=STEPS)
    start.probes = (
        [GRAD_PROBE, ProbeSpec(ACT, "module", ACT_PROBE.quantities, EVERY)] if with_act else [GRAD_PROBE]
    )
    start.modules = modules() if with_act else []
    start.module_summary = [
        {"name": m.name, "type": m.type, "params": 0, "flops": 0} for m in start.modules
    ]  # older writers' width
    events: list = [start]
    rng = np.random.default_rng(0)
    for a in range(0, steps, 50):
        b = make_batch(a, 50, layers, rng, steps_per_epoch=STEPS, t=T0 + a / 100)
        if with_act:
            ps = np.arange(a, a + 50, dtype=np.int64)
            ps = ps[ps % EVERY == 0]
            b.blocks[ACT] = ProbeBlock(ACT, ps, act_values(ps))
        events.append(b)
    if finish:
        events.append(RunFinished("completed", steps, time=T0 + steps / 100))
    return events


def make_app(events, **kw) -> TuitrainApp:
    return TuitrainApp(ListSource(events), clock=lambda: T0 + 10.0, cpu_budget=None, **kw)


def bar_cells(bars: SignalBars, row: int) -> float:
    """The length of a row's drawn std bar in cells (eighths counted), from the widget's own rendering."""
    text = "".join(s.text for s in bars.render_row(row, bars.content_width))
    w = bars.name_width(bars.content_width)
    bar = text[w + 1 : w + 1 + bars.bar_width(bars.content_width)]
    part = " ▏▎▍▌▋▊▉"
    return bar.count("█") + sum(part.index(c) / 8 for c in bar if c in part[1:])


async def test_v_shows_one_bar_per_module_ordered_as_the_stds():
    app = make_app(signal_run())
    async with app.run_test(size=(100, 40)) as pilot:
        assert await until(pilot, lambda: app.history.signal.n_rows == STEPS // EVERY)
        await pilot.press("v")
        assert app.current_mode == "signal"
        bars = app.screen.query_one(SignalBars)
        assert await until(pilot, lambda: len(bars.names) == N_MOD and np.isfinite(bars.std).all())
        assert bars.names == [m.name for m in modules()]
        assert bars.row is not None and bars.row.step == STEPS - EVERY  # live: the latest probed step
        lengths = [bar_cells(bars, i) for i in range(N_MOD)]
        assert all(a > b for a, b in zip(lengths, lengths[1:], strict=False)), lengths  # std falls by decades
        assert lengths[0] > 0
        assert bars.scale[0] <= math.floor(math.log10(float(bars.std[-1])))  # the smallest fits the scale
        text = screen_text(app)
        assert "Signal @ step 290" in text
        assert f"{(N_MOD - 1) / N_MOD * 100:4.0f}%" in text or "92%" in text  # dead fractions beside the bars
        assert " 75%" in "".join(s.text for s in bars.render_row(SAT_ROW, bars.content_width))  # saturated
        assert "◆" in text  # blocks marked
        heat = app.screen.query_one(SignalMap)
        assert await until(pilot, lambda: heat.levels.shape[0] == N_MOD and heat.levels.shape[1] > 0)
        # the heatmap's first column is the run's start (std ~1e-0.2i), its last the end: darker below
        assert (heat.levels[-1, -1] < heat.levels[-1, 0]) and (heat.levels[0, -1] >= heat.levels[-1, -1])
        await pilot.press("escape")
        assert app.current_mode == "dashboard"


async def test_states_without_rows():
    # a run whose activation probe is off (activations_every = 0, or a loop without watch)
    app = make_app(signal_run(with_act=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("v")
        assert await until(pilot, lambda: "no activation probe in this run" in screen_text(app))
    # a probe declared but no probed step yet
    start = signal_run(steps=0, finish=False)[:1]
    app = make_app(start)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("v")
        assert await until(pilot, lambda: "waiting for the first probed step" in screen_text(app))


async def test_old_file_says_there_is_no_activation_probe():
    app = replay_app([open_run(DATA / "run_v1.h5")], mode="signal", cpu_budget=None)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await until(pilot, lambda: app.history.run is not None)
        assert await until(pilot, lambda: "no activation probe in this run" in screen_text(app))
        bars = app.screen.query_one(SignalBars)
        assert bars.names == [] and bars.empty_text == NO_PROBE


@pytest.fixture(scope="module")
def act_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("signal") / "act.h5"
    with RunFileWriter(path, flush_seconds=math.inf, background=False) as w:
        for ev in signal_run():
            w.emit(ev)
    return path


async def test_replay_cursor_moves_change_the_bars(act_file):
    rf = open_run(act_file)
    assert rf.probe_rows(ACT) == STEPS // EVERY
    app = replay_app([rf], cpu_budget=None)
    async with app.run_test(size=(100, 40)) as pilot:
        assert await until(pilot, lambda: app.history.is_finished and app.history.signal.n_rows > 0)
        await pilot.press("v")
        bars = app.screen.query_one(SignalBars)
        assert await until(pilot, lambda: len(bars.names) == N_MOD and bars.row is not None)
        if getattr(rf, "modules", None):  # the run file's module table names the columns
            assert bars.names == [m.name for m in modules()]
        await pilot.press("home")
        assert await until(pilot, lambda: bars.row is not None and bars.row.step == 0)
        first = bars.std.copy()
        np.testing.assert_allclose(first, act_values(np.array([0]))[0, FIELDS.index("std")], rtol=1e-6)
        short_first = bar_cells(bars, N_MOD - 1)
        await pilot.press("right", "right", "right")
        assert await until(pilot, lambda: app.view.cursor is not None and bars.row.step > 0)
        step = bars.row.step
        assert step % EVERY == 0 and step <= app.view.cursor < step + EVERY  # the probed step at the cursor
        np.testing.assert_allclose(bars.std, act_values(np.array([step]))[0, FIELDS.index("std")], rtol=1e-6)
        await pilot.press("end")
        assert await until(pilot, lambda: bars.row.step == STEPS - EVERY)
        assert bar_cells(bars, N_MOD - 1) < short_first  # the last module's signal died further
        assert "Signal @ step 290" in screen_text(app)
        heat = app.screen.query_one(SignalMap)
        assert await until(pilot, lambda: heat.levels.shape[0] == N_MOD)


def test_history_reads_quantities_by_name_and_answers_the_cursor():
    """A run whose spec lists the quantities in another order: the rows come out by name; a step older
    than the ring falls back on the whole-run buckets (std only)."""
    spec = ProbeSpec(ACT, "module", tuple(reversed(ACT_PROBE.quantities)), EVERY)
    h = History()
    h.signal.rows_cap = 1  # a ring of 256 rows (its floor): older rows only in the buckets
    start = RunStarted("r", "", "m", probes=[spec], modules=modules(3))
    h.extend([start])
    ps = np.arange(0, 3000, EVERY, dtype=np.int64)
    vals = act_values(ps, 3)
    h.extend(
        [
            StepBatch(
                ps,
                np.zeros_like(ps, np.int32),
                np.zeros((len(ps), 5)),
                blocks={ACT: ProbeBlock(ACT, ps, vals[:, ::-1])},
            )
        ]
    )
    last = h.signal.at(None)
    np.testing.assert_allclose(last.std, vals[-1, FIELDS.index("std")])
    np.testing.assert_allclose(last.dead_frac, vals[-1, FIELDS.index("dead_frac")])
    mid = h.signal.at(2005)
    assert mid.step == 2000 and mid.exact
    old = h.signal.at(15)
    assert old is not None and not old.exact and old.step <= 15
    assert np.isnan(old.dead_frac).all() and np.isfinite(old.std).all()
    assert h.signal.at(-1) is None


@pytest.fixture(scope="module")
def vgg38_file(tmp_path_factory) -> Path:
    """A real run of plain VGG38 (default init, 8x8 synthetic images): its forward signal dies by orders
    of magnitude within the first stage (the story of 001 and Brock et al. 2021)."""
    path = tmp_path_factory.mktemp("signal") / "vgg38.h5"
    small = ("--data", "synthetic", "--set", "data.image_size=8", "--set", "data.train_size=200")
    p = tt(
        "run",
        "vgg38",
        *small,
        "--max-steps",
        "21",
        "--set",
        "monitor.activations_every=10",
        "--no-ui",
        "--out",
        str(path),
        timeout=180,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return path


async def test_real_vgg38_run_shows_its_signal_collapse(vgg38_file):
    rf = open_run(vgg38_file)
    mods = rf.modules
    assert rf.probe_rows(ACT) == 3 and len(mods) > 30  # steps 0, 10, 20
    app = replay_app([rf], cpu_budget=None)
    async with app.run_test(size=(80, 24)) as pilot:
        assert await until(pilot, lambda: app.history.is_finished and app.history.signal.n_rows == 3)
        await pilot.press("v")
        bars = app.screen.query_one(SignalBars)
        assert await until(pilot, lambda: len(bars.names) == len(mods) and bars.row is not None)
        assert bars.names == [m.name for m in mods] and bars.names[0] == "input_conv"
        assert bars.row.step == 20
        std = bars.std
        lowest = int(np.argmin(std))  # (the head's bias lifts the very last output back up)
        assert np.isfinite(std).all() and std[0] / std[lowest] > 1e6  # orders of magnitude lost
        first = int(np.flatnonzero(bars.collapsed)[0])  # where the bars turn to the warning colour
        assert bars.names[first].startswith("stages.0.")  # within the first stage
        assert bar_cells(bars, 0) > bar_cells(bars, first) > bar_cells(bars, lowest)
        assert "◆" in screen_text(app)  # VGG38's processing blocks
        heat = app.screen.query_one(SignalMap)
        assert await until(pilot, lambda: heat.levels.shape[0] == len(mods))
        # 80x24: the panels scroll, and together (a module per row in both)
        assert bars.max_scroll_y > 0
        bars.focus()
        await pilot.press("pagedown")
        assert await until(pilot, lambda: bars.scroll_y > 0 and heat.scroll_y == bars.scroll_y)
        await pilot.press("home")
        assert await until(pilot, lambda: bars.row is not None and bars.row.step == 0)
