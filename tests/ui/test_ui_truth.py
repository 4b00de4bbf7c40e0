"""Where the dashboard used to mislead (issue 9, section 6), in the real app under ``App.run_test()``:
the time-cursor keys in a live dashboard, help and palette listing only what applies, and the final
table at several widths with long run names."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
from fake_events import T0, fake_run, mlp_layers
from pilot_helpers import screen_text, until
from textual.app import App

from tuitrain.events import Alert, RunStarted, StatusChanged, StepBatch
from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.bindings import KEYS
from tuitrain.ui.history import History
from tuitrain.ui.screens.dialogs import QuitScreen
from tuitrain.ui.screens.help import HelpScreen
from tuitrain.ui.screens.too_small import TooSmallScreen
from tuitrain.ui.source import ListSource
from tuitrain.ui.view_state import ViewState
from tuitrain.ui.widgets.event_log import EventLog
from tuitrain.ui.widgets.final_table import FinalTable
from tuitrain.ui.widgets.grad_bars import GradBars
from tuitrain.ui.widgets.header import STATUS_STYLE
from tuitrain.ui.widgets.heatmap import ZERO_LEVEL, HeatmapRows
from tuitrain.ui.widgets.loss_plot import LossChart, LossPanel
from tuitrain.ui.widgets.update_sparklines import UpdateSparklines

NARROW = (80, 24)


class Control:
    """The training process's control channel, as far as the app can tell: it takes commands."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, cmd: str) -> None:
        self.sent.append(cmd)


def live_app(**kw) -> TuitrainApp:
    """A live ``watch`` dashboard: one run still training, with a control channel."""
    events = fake_run(finish=None, stop_after=250, layers=mlp_layers(120, 32), **kw)
    return TuitrainApp(ListSource(events), control=Control(), clock=lambda: T0 + 10.0, cpu_budget=None)


async def live_ready(pilot) -> None:
    app = pilot.app
    assert await until(
        pilot, lambda: app.history.steps_done == 250 and app.screen.query_one(GradBars).values.size
    )


# -- the time cursor in a live watch ---------------------------------------------------------------


async def test_live_cursor_keys_move_the_cursor_even_with_the_gradient_panel_focused():
    app = live_app()
    async with app.run_test(size=NARROW) as pilot:
        await live_ready(pilot)
        focused = app.focused
        assert focused is not None  # a live dashboard focuses a panel (the scrolling gradient bars)
        await pilot.press("left")
        assert app.view.cursor is not None and app.view.cursor < 249
        await pilot.press("home")
        assert app.view.cursor == 0
        assert re.search(r"step 0\b", screen_text(app))  # the cursor bar says where it is
        await pilot.press("right")
        assert app.view.cursor and app.view.cursor > 0
        await pilot.press("end")
        assert app.view.cursor is None  # back to the latest step, following the run
        await pilot.press("shift+left")
        assert app.view.cursor is not None and app.view.cursor < 249
        assert app.focused is focused  # the keys went to the cursor, the panel kept its focus


async def test_cursor_keys_leave_dialogs_and_the_palette_alone():
    app = live_app()
    async with app.run_test(size=NARROW) as pilot:
        await live_ready(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"zoom", "left", "home")  # the palette's input keeps its caret keys
        await pilot.pause(0.1)
        assert app.view.cursor is None
        await pilot.press("escape")


# -- help and palette list what applies ----------------------------------------------------------------


REPLAY_ONLY = [k for k in KEYS if getattr(k, "scope", "") in ("replay", "runs", "sweep")]
TRAINING = [k for k in KEYS if getattr(k, "scope", "") in ("training", "sweep")]  # sweep: its dashboard only


def listed(text: str, k) -> bool:
    """The help screen's line for key ``k``: its key, then its help text."""
    return f"{k.shown_key:>3}  {k.help.removeprefix('chart: ')}" in text


async def test_live_help_lists_no_replay_only_actions_and_fits_80x24():
    assert REPLAY_ONLY and TRAINING
    app = live_app()
    async with app.run_test(size=NARROW) as pilot:
        await live_ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for k in KEYS:
            assert listed(text, k) == (k not in REPLAY_ONLY), k.help
        assert "replay" not in text


async def test_live_palette_offers_no_replay_only_actions():
    app = live_app()
    async with app.run_test(size=NARROW) as pilot:
        await live_ready(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"run")
        await pilot.pause(0.4)
        text = screen_text(app)
        assert "Next run" not in text and "Compare" not in text
        await pilot.press("escape")


async def test_replay_help_lists_replay_keys_and_no_training_controls(tmp_path):
    from tests.test_replay import write_synthetic
    from tuitrain.runfile import open_run
    from tuitrain.ui.replay.launch import replay_app

    paths = [
        write_synthetic(tmp_path / f"r{i}.h5", steps=100, n_layers=4, batch=50, name=f"r{i}")
        for i in range(2)
    ]
    app = replay_app([open_run(p) for p in paths], cpu_budget=None, mode="dashboard")
    async with app.run_test(size=NARROW) as pilot:
        assert await until(pilot, lambda: all(h.is_finished for h in app.runs.histories), 10)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for k in KEYS:
            assert listed(text, k) == (k not in TRAINING), k.help


# -- the final table -------------------------------------------------------------------------------------

LONG_NAMES = [
    "v",
    "vgg38_bn_rc_conv1x1_with_a_very_long_descriptive_name_x",
    "mlp_mixer_cifar10_ratio_05_8_run",
]


def named_history(name: str, n_tensors: int) -> History:
    h = History()
    evs = fake_run(layers=mlp_layers(n_tensors, 64), epochs=1, steps_per_epoch=20)
    h.extend([dataclasses.replace(e, run_name=name) if isinstance(e, RunStarted) else e for e in evs])
    return h


class TableApp(App):
    def compose(self):
        yield FinalTable()


def table_lines(app) -> list[str]:
    return [ln for ln in screen_text(app).splitlines() if "■" in ln]


def right_edges(line: str, values: list[str]) -> list[int]:
    return [line.index(v) + len(v) for v in values if v in line]


async def check_table(width: int) -> None:
    runs = [(n, "#4e9ad8", named_history(n, 80 * (i + 1))) for i, n in enumerate(LONG_NAMES)]
    params = ["166.40K", "332.80K", "499.20K"]
    app = TableApp()
    async with app.run_test(size=(width, 20)) as pilot:
        t = app.query_one(FinalTable)
        view = ViewState()
        t.update_data(runs[:1], view)
        await pilot.pause(0.1)
        t.update_data(runs, view)  # new rows ...
        screen_text(app)  # ... drawn before the DataTable's idle (a busy live follow): the old bug's trigger
        await pilot.pause(0.1)
        for selected in (0, 1, 2, 0):  # r, r, r: the cursor row moves; every row must stay put
            view.selected = selected
            t.update_data(runs, view)
            await pilot.pause(0.1)
            lines = table_lines(app)
            assert len(lines) == 3, screen_text(app)
            assert len({len(ln) for ln in lines}) == 1
            for ln, p in zip(lines, params, strict=True):
                cut = p[:-1] in ln and p not in ln
                assert not cut, f"{p} cut to {p[:-1]} at width {width}:\n{ln}"
            loss_edges = {e for ln in lines for e in right_edges(ln, ["4.1087"])}
            assert len(loss_edges) == 1, lines  # the Train Loss column lines up
            shown = [right_edges(ln, [p]) for ln, p in zip(lines, params, strict=True)]
            if width >= 80:  # from 80 columns every metric is on screen (long names elided with …)
                assert all(shown), lines
            if any(shown):  # Params on screen: in every row, right-aligned together
                assert all(shown) and len({s[0] for s in shown}) == 1, lines
        assert t.cells[1][0] == LONG_NAMES[1] and [r[7] for r in t.cells] == params  # the data, uncut
        for ln, name in zip(table_lines(app), LONG_NAMES, strict=True):
            assert name in ln or "…" in ln  # a name is whole or visibly elided, never silently cut


async def test_final_table_rows_line_up_at_60_columns():
    await check_table(60)


async def test_final_table_rows_line_up_at_80_columns():
    await check_table(80)


async def test_final_table_rows_line_up_at_120_columns():
    await check_table(120)


async def test_final_table_rows_line_up_at_200_columns():
    await check_table(200)


# -- exactly-zero updates ---------------------------------------------------------------------------------

UPDATE = 3  # PROBE_NAMES.index("update_ratio")


def zero_update_events():
    """A live run whose first tensor never changes: its update ratio is exactly 0 at every step."""
    events = fake_run(finish=None, stop_after=250, layers=mlp_layers(8, 32))
    for e in events:
        if isinstance(e, StepBatch) and e.probes.shape[0]:
            e.probes[:, UPDATE, 0] = 0.0
    return events


async def test_zero_updates_show_as_zero_in_sparklines_and_heatmap():
    app = TuitrainApp(
        ListSource(zero_update_events()), control=Control(), clock=lambda: T0 + 10.0, cpu_budget=None
    )
    async with app.run_test(size=(120, 36)) as pilot:
        await live_ready(pilot)
        sparks = app.screen.query_one(UpdateSparklines)
        assert await until(pilot, lambda: len(sparks.sparks) == 8 and sparks.sparks[0])
        assert set(sparks.sparks[0]) == {"▁"}  # a flat line at the bottom, not mid-height
        assert sparks.latest[0] == 0.0
        assert re.search(r"l0\.w\s+▁+\s+0│", screen_text(app)), screen_text(app)  # flat, and the value 0
        await pilot.press("h", "g", "g", "g")  # the heatmap of the update ratio
        rows = app.screen.query_one(HeatmapRows)
        assert await until(pilot, lambda: rows.levels.shape[0] == 8 and rows.levels.shape[1] > 0)
        assert (rows.levels[0] == ZERO_LEVEL).all() and (rows.levels[1:] >= 0).all()
        text = screen_text(app)
        assert "1.0e-30" not in text and "e-30" not in text
        line = next(ln for ln in text.splitlines() if "layers.0.w" in ln)
        assert "0000" in line and re.search(r"\s0\s", line.split("0000")[-1]), line  # cells and mean read 0
        await pilot.press("left")  # the value at the cursor: 0 too
        assert await until(pilot, lambda: rows.at_cursor is not None)
        assert rows.at_cursor[0] == -math.inf and "e-30" not in screen_text(app)


# -- axis labels never repeat --------------------------------------------------------------------------


def flat_loss_events(steps: int, level: float = 4.6052, spread: float = 0.004):
    """VGG38 at chance: the loss sits at ln(100) within a few thousandths."""
    events = fake_run(finish=None, stop_after=steps, layers=mlp_layers(8, 32), batch_steps=1)
    rng = np.random.default_rng(1)
    for e in events:
        if isinstance(e, StepBatch):
            e.scalars[:, 0] = level + spread * rng.random(len(e))
    return events


def axis_labels(app) -> tuple[list[str], list[str]]:
    xt, xl, yt, yl = app.screen.query_one(LossChart)._ticks()
    return xl, yl


async def check_axes(steps: int, size: tuple[int, int]) -> None:
    app = TuitrainApp(
        ListSource(flat_loss_events(steps)), control=Control(), clock=lambda: T0 + 10.0, cpu_budget=None
    )
    async with app.run_test(size=size) as pilot:
        chart = app.screen.query_one(LossChart)
        assert await until(pilot, lambda: app.history.steps_done == steps and chart.spec.raw_x.size)
        await pilot.pause(0.3)
        xl, yl = axis_labels(app)
        assert len(set(xl)) == len(xl) and len(set(yl)) == len(yl), (xl, yl)
        text = screen_text(app)
        for label in yl:  # drawn as such on the y axis
            assert re.search(rf"│\s*{re.escape(label)}┤", text) or len(yl) > 4, (label, text)
        return xl, yl


async def test_axis_labels_are_distinct_on_a_flat_loss_at_80x24():
    await check_axes(120, (80, 24))


async def test_axis_labels_are_distinct_for_a_two_step_run():
    xl, yl = await check_axes(2, (80, 24))  # before: x 0 0 1 and y 4.61 4.61
    assert xl == ["0", "1"], xl  # whole steps only
    assert len(yl) >= 2 and all(re.fullmatch(r"4\.6\d\d+", y) for y in yl), yl  # more digits, no repeats


async def test_axis_labels_are_distinct_at_200x60():
    await check_axes(120, (200, 60))


# -- the event log at 80x24: nothing cut or covered --------------------------------------------------------

VANISH = (
    "vanishing gradients: 38 of 38 weight layers have mean |grad| below 1e-08 for 50 steps "
    "(first: features.0.weight)"
)


def region_text(app, widget) -> list[str]:
    r = widget.region
    return [ln[r.x : r.x + r.width] for ln in screen_text(app).splitlines()[r.y : r.y + r.height]]


async def test_long_events_wrap_and_the_scrollbar_covers_nothing_at_80x24():
    events = fake_run(finish=None, stop_after=300, epochs=30, steps_per_epoch=10, layers=mlp_layers(8, 32))
    events.insert(5, Alert(40, "warning", "vanishing", VANISH, time=T0 + 1.5))
    app = TuitrainApp(ListSource(events), control=Control(), clock=lambda: T0 + 10.0, cpu_budget=None)
    async with app.run_test(size=NARROW) as pilot:
        log = app.screen.query_one(EventLog)
        assert await until(pilot, lambda: app.history.steps_done == 300 and len(log.entries) > 20)
        await pilot.pause(0.3)
        assert log.max_scroll_y > 0  # more events than fit: the scrollbar is there
        first = next(i for i, (k, _) in enumerate(log.lines) if log.entries[k].message == VANISH)
        log.scroll_to(y=first, animate=False)
        await pilot.pause(0.2)
        lines = region_text(app, log)
        r = log.content_region  # inside the border; the scrollbar is its last column
        inside = [ln[r.x : r.x + log.text_width()] for ln in screen_text(app).splitlines()[r.y : r.bottom]]
        joined = " ".join(part.strip(" │╭╮╰╯─") for part in inside)
        assert "below 1e-08 for 50 steps" in re.sub(r"\s+", " ", joined), "\n".join(lines)
        assert not any(ln.rstrip().endswith("1e-0") for ln in inside), "\n".join(lines)
        assert sum(1 for k, _ in log.lines if log.entries[k].message == VANISH) >= 2  # it wrapped


# -- below the minimum size: one clear message -----------------------------------------------------------


async def test_60x20_says_the_terminal_is_too_small_and_recovers():
    app = live_app()
    async with app.run_test(size=(60, 20)) as pilot:
        assert await until(pilot, lambda: isinstance(app.screen, TooSmallScreen))
        assert await until(pilot, lambda: app.history.steps_done == 250)
        text = screen_text(app)
        assert "terminal too small: 60x20" in text and "at least 80x24" in text
        assert "Gradients" not in text  # no squeezed panels behind it
        await pilot.resize_terminal(80, 24)
        assert await until(pilot, lambda: not isinstance(app.screen, TooSmallScreen))
        assert await until(
            pilot, lambda: "Gradients" in screen_text(app) and "too small" not in screen_text(app)
        )
        await pilot.resize_terminal(100, 23)  # one line short
        assert await until(pilot, lambda: "terminal too small: 100x23" in screen_text(app))
        await pilot.press("q")  # still quits: the quit dialog of a live run
        assert await until(pilot, lambda: isinstance(app.screen, QuitScreen))


# -- pausing is a status; panning is not pausing -------------------------------------------------------


async def test_pausing_is_a_status_not_a_warning():
    app = live_app()
    async with app.run_test(size=NARROW) as pilot:
        await live_ready(pilot)
        log = app.screen.query_one(EventLog)
        before = sum(1 for e in app.history.log if e.level in ("warning", "error"))
        await pilot.press("p")
        assert app.control.sent == ["pause"]
        app.source.feed([StatusChanged("paused", 250, time=T0 + 5)])
        assert await until(pilot, lambda: " PAUSED " in screen_text(app))
        entry = app.history.log[-1]
        assert entry.kind == "status" and "paused" in entry.message and entry.level == "info"
        assert sum(1 for e in app.history.log if e.level in ("warning", "error")) == before
        assert await until(pilot, lambda: f"{len(app.history.log)} events" in str(log.border_subtitle))
        warn = f"{before} warning" if before else ""
        assert (warn in str(log.border_subtitle)) if warn else "warning" not in str(log.border_subtitle)
        assert STATUS_STYLE["paused"] not in ("$warning", "$error")


async def test_a_panned_live_chart_is_not_titled_paused():
    app = live_app()
    async with app.run_test(size=NARROW) as pilot:
        await live_ready(pilot)
        panel = app.screen.query_one(LossPanel)
        await pilot.press("plus", "left_square_bracket")  # zoom in, pan back: training goes on
        assert await until(pilot, lambda: "panned" in str(panel.border_title))
        title = str(panel.border_title)
        assert "paused" not in title and "f follows" in title
        assert app.history.status == "running"
        await pilot.press("f")
        assert await until(pilot, lambda: "following" in str(panel.border_title))
