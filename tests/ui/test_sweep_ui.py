"""The live sweep dashboard (tuitrain.ui.sweep) under Pilot, on real sweep folders: one whose manifest
is saved with tuitrain.sweep.manifest over run files written by the real RunFileWriter (a queued
variant whose file appears later, a stored finding), and one made by a real `tuitrain sweep` runner
whose variants are paused and stopped through the real SweepControl."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pilot_helpers import screen_text

from tests.conftest import REPO, cli_env, tuitrain_cmd
from tests.sweeps import reap
from tests.test_replay import synthetic_events
from tuitrain.events import Event, Finding, StepBatch
from tuitrain.runfile.writer import RunFileWriter
from tuitrain.sweep.control import SweepControl
from tuitrain.sweep.manifest import Manifest, Variant, save, status_of
from tuitrain.ui.bindings import keys_for
from tuitrain.ui.screens.dialogs import ConfirmScreen
from tuitrain.ui.sweep.app import SweepApp, SweepQuitScreen, sweep_app
from tuitrain.ui.widgets.final_table import FinalTable
from tuitrain.ui.widgets.loss_plot import LossChart

WIDE = (140, 40)
os.environ.setdefault("OMP_NUM_THREADS", "1")


async def until(pilot, cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await pilot.pause(0.1)
    return cond()


def with_finding(name: str, lr: float) -> Iterator[Event]:
    """A synthetic run (tests.test_replay) that opens a finding on layers.0 after its second batch."""
    batches = 0
    for ev in synthetic_events(steps=400, n_layers=4, epochs=2, batch=100, name=name, lr=lr):
        yield ev
        if isinstance(ev, StepBatch):
            batches += 1
            if batches == 2:
                yield Finding("vanishing_gradients", "warning", "layers.0", 150, None, {}, "m", "s", 199)


def write(path: Path, events: Iterator[Event]) -> Path:
    with RunFileWriter(path, flush_seconds=0.05, background=False) as w:
        for ev in events:
            w.emit(ev)
    return path


def folder_with(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "sweep"
    variants = [Variant(name=n, preset="toy2d_mlp", file=f"{n}.h5") for n in names]
    save(Manifest(name="sweep-test", created=time.time(), variants=variants), d)
    return d


def table(app) -> FinalTable:
    return app.screen.query_one(FinalTable)


def column(app, header: str) -> list[str]:
    t = table(app)
    if header not in t.header:
        return []
    j = t.header.index(header)
    return [row[j] for row in t.cells]


async def test_variants_fill_in_queued_then_completed_with_statuses_and_findings(tmp_path):
    d = folder_with(tmp_path, ["lr=0.01", "lr=0.001", "lr=0.0001"])
    write(d / "lr=0.01.h5", with_finding("lr=0.01", 1e-2))
    write(d / "lr=0.001.h5", synthetic_events(steps=400, n_layers=4, epochs=2, batch=100, name="x", lr=1e-3))
    app = sweep_app(d, None, folder_seconds=0.2, cpu_budget=None)
    async with app.run_test(size=WIDE) as pilot:
        assert app.current_mode == "compare"
        assert await until(pilot, lambda: len(app.sweep.opened) == 2)
        assert await until(pilot, lambda: column(app, "Status") == ["completed", "completed", "queued"])
        assert [r[0] for r in table(app).cells] == ["lr=0.01", "lr=0.001", "lr=0.0001"]
        assert column(app, "Finding") == ["vanishing_gradients layers.0", "-", "-"]
        chart = app.screen.query_one(LossChart)
        assert (
            len(chart.spec.lines) == 2
        )  # a line (and colour) per variant with data; none yet for the queued
        text = screen_text(app)
        for name in ("lr=0.01", "lr=0.001", "lr=0.0001"):
            assert name in text  # legend and table
        assert "queued" in text and "vanishing_gradients" in text
        # the queued variant's file appears: it is followed from then on
        write(d / "lr=0.0001.h5", synthetic_events(steps=400, n_layers=4, epochs=2, batch=100, lr=1e-4))
        assert await until(pilot, lambda: 2 in app.sweep.opened and app.runs[2].history.is_finished)
        assert await until(pilot, lambda: "Status" not in table(app).header)  # every one completed
        assert await until(pilot, lambda: len(app.screen.query_one(LossChart).spec.lines) == 3)
        assert table(app).cells[2][0] == "lr=0.0001" and table(app).cells[2][1] != "-"
        # r picks the variant the dashboard shows; no runner: q quits at once, p/s do nothing
        await pilot.press("r")
        assert app.view.selected == 1
        assert not app.check_action("toggle_pause", ()) and not app.check_action("stop_all", ())
        await pilot.press("q")
    assert app.return_value == "done"


async def test_help_lists_the_sweep_keys_only_with_a_runner(tmp_path):
    d = folder_with(tmp_path, ["a", "b"])
    app = SweepApp.__new__(SweepApp)  # only what keys_for reads
    app.sweep, app.control, app.runs, app.replay = object(), None, [1, 2], True
    assert "pause_all" not in {k.action for k in keys_for(app)}
    app.control = SweepControl(d)
    assert {"pause_all", "stop_all", "toggle_pause", "stop"} <= {k.action for k in keys_for(app)}


def file_status(folder: Path, variant: Variant) -> str:
    """The variant's status as another process reads it from its run file (this process has the file
    open in its FileSource already; HDF5 shares that handle, so a second open here is not SWMR)."""
    code = (
        "import sys; from tuitrain.sweep.manifest import Variant, status_of; "
        "print(status_of(Variant(name='', preset='', file=sys.argv[2]), sys.argv[1]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), variant.file], capture_output=True, text=True, cwd=REPO
    )
    return out.stdout.strip()


def running(path: Path) -> bool:
    return path.is_file() and status_of(Variant(name="", preset="", file=path.name), path.parent) == "running"


async def test_a_real_sweep_pause_resume_and_stop_of_the_selected_variant_reach_its_file(tmp_path):
    d = tmp_path / "live"
    cmd = [
        *tuitrain_cmd(), "sweep", "toy2d_mlp", "--grid", "optim.lr=0.01,0.001", "--epochs", "100000",
        "--set", "data.train_size=500", "--parallel", "1", "--no-ui", "--out", str(d),
    ]  # fmt: skip
    runner = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO
    )
    first, second = d / "lr=0.01.h5", d / "lr=0.001.h5"
    try:
        end = time.monotonic() + 90
        while not running(first):
            assert runner.poll() is None and time.monotonic() < end, runner.communicate()
            time.sleep(0.2)
        app = sweep_app(d, SweepControl(d), folder_seconds=0.2, cpu_budget=None)
        async with app.run_test(size=WIDE) as pilot:
            assert await until(pilot, lambda: column(app, "Status") == ["running", "queued"], 20)
            await pilot.press("p")  # the selected variant: the first
            assert await until(pilot, lambda: column(app, "Status")[0] == "paused", 20)
            assert file_status(d, app.sweep.manifest.variants[0]) == "paused"
            await pilot.press("p")
            assert await until(pilot, lambda: column(app, "Status")[0] == "running", 20)
            await pilot.press("s")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            assert await until(pilot, lambda: column(app, "Status")[0] == "stopped", 30)
            assert file_status(d, app.sweep.manifest.variants[0]) == "stopped"
            # the queued one starts now: its file appears and is followed
            assert await until(pilot, lambda: column(app, "Status")[1] == "running", 60)
            assert second.is_file()
            # quitting while the runner is alive asks; S stops everything (asks too)
            await pilot.press("q")
            assert isinstance(app.screen, SweepQuitScreen)
            await pilot.press("escape")
            await pilot.press("S")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            assert await until(pilot, lambda: column(app, "Status")[1] == "stopped", 30)
            assert await until(pilot, lambda: not app.runner_alive(), 30)
            await pilot.press("q")  # the sweep is over: plain quit
        assert app.return_value == "done"
        assert runner.wait(timeout=30) == 130
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        reap(d)  # its children run in sessions of their own
