"""The diagnosis on the dashboard (issue 11): the findings store (current state, what held at a step),
the Diagnosis panel's text, and the real app under Pilot, live (a ListSource of a run's events with
Finding events among them) and in replay (a run file written by the real RunFileWriter, findings
included): at 80x24 ``d`` puts the panel in the event log's place with the error first, the header
says there is an error, the event log has the finding's line, the chart a mark at its first step; the
replay cursor before a finding's first step hides it and after shows it; a closed finding reads
closed; a file from before findings were stored says so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fake_events import T0, fake_run, user_run_started
from pilot_helpers import screen_text, until

from tests.test_replay import Collector, spawn_writer, synthetic_events
from tuitrain.config import RunConfig, to_toml
from tuitrain.events import Finding, StepBatch
from tuitrain.runfile import RunFileWriter, open_run
from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.history import History
from tuitrain.ui.replay.file_source import FileSource
from tuitrain.ui.replay.launch import replay_app
from tuitrain.ui.source import ListSource
from tuitrain.ui.widgets.diagnosis_panel import DiagnosisPanel, empty_text, panel_lines
from tuitrain.ui.widgets.event_log import EventLog
from tuitrain.ui.widgets.header import RunHeader
from tuitrain.ui.widgets.loss_plot import LossChart
from tuitrain.view.finding_text import chip
from tuitrain.view.findings import FindingsStore

NARROW = (80, 24)
TALL = (120, 40)
DATA = Path(__file__).resolve().parents[1] / "data"


def collapse(at_step: int = 120, first: int = 40) -> Finding:
    return Finding(
        "signal_collapse",
        "error",
        "stages.0.blocks.1.conv0",
        first,
        None,
        {"std_ratio": 1e-4},
        "activation std falls to 1e-4 of the input's",
        "add BatchNorm or residual connections, or use He init",
        at_step=at_step,
    )


def vanishing(last: int | None = None, at_step: int = 150, first: int = 60) -> Finding:
    return Finding(
        "vanishing_gradients",
        "warning",
        "input_conv.weight",
        first,
        last,
        {"ratio": 1e-7},
        "grad norm 1e-7 of the last layer's",
        "BatchNorm or residual connections",
        at_step=at_step,
    )


# -- the store and the panel's text, without an app --------------------------------------------------


def test_store_current_state_and_what_held_at_a_step():
    s = FindingsStore()
    s.add(vanishing(at_step=150))
    s.add(collapse(at_step=120))
    assert [f.kind for f in s.current] == ["signal_collapse", "vanishing_gradients"]  # error first
    s.add(vanishing(last=180, at_step=200))  # the same finding, closed
    assert len(s) == 2 and s.total == 3
    assert [f.last_step for f in s.current] == [None, 180]  # one finding, now closed, ranked after
    assert s.at(30) == []  # before either began
    assert s.at(100) == []  # collapse began at 40 but was found at 120: not known yet
    assert [f.kind for f in s.at(130)] == ["signal_collapse"]
    assert [f.kind for f in s.at(170)] == ["signal_collapse", "vanishing_gradients"]
    assert s.at(190)[1].is_open  # the closing row arrived at 200: at 190 it was still open
    assert [f.kind for f in s.at(250)] == ["signal_collapse"]  # closed at 180, known at 200
    assert s.first_steps(0, 1000) == [(40, "error"), (60, "warning")]
    assert s.first_steps(50, 1000) == [(60, "warning")]


def test_header_chip_fits_its_room():
    two = [collapse(), Finding("exploding_gradients", "error", "head", 5, None)]
    assert chip(two, press=True) == ("error", "✗ 2 errors: signal_collapse +1 — press d")
    assert chip(two, press=True, width=30) == ("error", "✗ 2 errors — d")
    assert chip(two, press=False, width=29) == ("error", "✗ 2 errors")
    assert chip([vanishing()], press=False) == ("warning", "! 1 warning: vanishing_gradients")
    assert chip([], press=True) is None


def test_store_news_until_the_panel_draws():
    s = FindingsStore()
    s.add(collapse())
    assert [f.kind for f in s.unseen()] == ["signal_collapse"]
    s.mark_drawn()
    assert s.unseen() == [] and s.news() == []
    s.add(vanishing())
    assert [f.kind for f in s.news()] == ["vanishing_gradients"]


def test_panel_lines_error_first_with_its_evidence_and_fix():
    findings = FindingsStore()
    for f in (vanishing(), collapse(), vanishing(last=180, at_step=200)):
        findings.add(f)
    lines = panel_lines(findings.current, 78, 5)
    text = [head + body for _, head, body in lines]
    assert lines[0][0] == "error" and text[0].startswith("✗ error   signal_collapse")
    assert "stages.0.blocks.1.conv0" in text[0] and "since 40" in text[0]
    assert text[1].strip() == "activation std falls to 1e-4 of the input's"  # the row cut it
    assert text[2].strip() == "→ add BatchNorm or residual connections, or use He init"
    assert text[3].strip() == "evidence: std_ratio=0.0001"
    assert "60–180 closed" in text[4] and len(text) == 5
    assert all(len(t) <= 78 for t in text)
    three = [head + body for _, head, body in panel_lines(findings.current, 78, 3)]
    assert three[1].startswith("    → add BatchNorm or residual connections, or use He init  evidence: ")
    assert three[1].endswith("…") and len(three[1]) == 78 and "60–180 closed" in three[2]
    narrow = [head + body for _, head, body in panel_lines(findings.current[:1], 40, 6)]
    assert [t.strip() for t in narrow[1:]] == [
        "activation std falls to 1e-4 of the",
        "input's",
        "→ add BatchNorm or residual",
        "connections, or use He init",
        "evidence: std_ratio=0.0001",
    ]
    tight = [head + body for _, head, body in panel_lines(findings.current[:1], 40, 4)]
    assert tight[2].strip() == "→ add BatchNorm or residual connect…"  # each part a line, cut
    assert all(len(t) <= 40 for t in narrow + tight)
    short = panel_lines(findings.current, 78, 2)  # no room for the details: one row each
    assert [sev for sev, _, _ in short] == ["error", "warning"]
    many = [collapse(first=i, at_step=i) for i in range(10)]
    cut = panel_lines(many, 78, 3)
    assert len(cut) == 3 and cut[-1][2].startswith("+8 more")


def test_empty_panel_says_why():
    h = History()
    assert empty_text(h, None) == "waiting for the run…"
    cfg = RunConfig(name="off")
    cfg.monitor.diagnose_seconds = 0.0
    h.extend([next(iter(synthetic_events(steps=10, batch=10)))])
    assert empty_text(h, None) == "no findings"
    assert empty_text(h, 5) == "no findings at step 5"
    off = History()
    started = next(iter(synthetic_events(steps=10, batch=10)))
    started.config_toml = to_toml(cfg)  # the run's resolved config, as a preset's RunStarted carries it
    off.extend([started])
    assert empty_text(off, None).startswith("diagnosis off (monitor.diagnose_seconds = 0)")
    bare = History()
    bare.extend([user_run_started(probes=False)])  # a user loop that watched no model
    assert empty_text(bare, None) == "no findings · no probes recorded: only the loss rules run"


# -- live: the real app fed a run's events -----------------------------------------------------------


def live_events() -> list:
    ev = fake_run(finish=None, stop_after=250)
    i = next(k for k, e in enumerate(ev) if isinstance(e, StepBatch) and e.steps[0] >= 200)
    return ev[:i] + [collapse(), vanishing(), vanishing(last=180, at_step=200)] + ev[i:]


def live_app(events) -> TuitrainApp:
    return TuitrainApp(ListSource(events), clock=lambda: T0 + 10.0, cpu_budget=None)


async def test_live_80x24_header_log_chart_and_d_for_the_panel():
    app = live_app(live_events())
    async with app.run_test(size=NARROW) as pilot:
        assert await until(pilot, lambda: "step 250/400" in screen_text(app))
        header, log = app.screen.query_one(RunHeader), app.screen.query_one(EventLog)
        panel, chart = app.screen.query_one(DiagnosisPanel), app.screen.query_one(LossChart)
        assert await until(pilot, lambda: "1 error: signal_collapse — press d" in screen_text(app))
        assert not panel.display and log.display  # 80x24: the events, until d
        said = "120 ✗ error signal_collapse at stages.0.blocks.1.conv0 since step 40"
        assert await until(pilot, lambda: any(said in t for t in log.text_lines()))
        assert any(t.startswith("200 · closed: vanishing_gradients") for t in log.text_lines())
        assert await until(pilot, lambda: chart.spec.marks == [(40.0, "error"), (60.0, "warning")])
        assert await until(pilot, lambda: any("╎" in t for t in chart._texts))
        assert "finding (d)" in str(app.screen.query_one("#loss").border_subtitle)
        await pilot.press("d")
        assert await until(pilot, lambda: panel.display and not log.display)
        assert await until(pilot, lambda: bool(panel.lines) and panel.lines[0].startswith("✗ error"))
        text = screen_text(app)
        assert "Diagnosis" in text and "signal_collapse" in text and "60–180 closed" in text
        assert await until(pilot, lambda: "press d" not in screen_text(app))  # seen: no more nagging
        assert "1 error: signal_collapse" in header.render().plain
        await pilot.press("d")
        assert await until(pilot, lambda: log.display and not panel.display)


async def test_live_tall_shows_both_and_states_without_findings():
    app = live_app(fake_run(finish=None, stop_after=100))
    async with app.run_test(size=TALL) as pilot:
        panel, log = app.screen.query_one(DiagnosisPanel), app.screen.query_one(EventLog)
        assert await until(pilot, lambda: panel.lines == ["no findings"])
        assert panel.display and log.display  # from 36 rows both show
        assert "press d" not in screen_text(app) and "error" not in header_text(app)
        app.source.feed([collapse(at_step=90)])
        assert await until(pilot, lambda: bool(panel.lines) and "signal_collapse" in panel.lines[0])
        assert "1 error" in str(panel.border_subtitle)
        assert await until(pilot, lambda: "press d" not in header_text(app))  # the panel shows it


def header_text(app) -> str:
    return app.screen.query_one(RunHeader).render().plain


# -- replay: a run file with findings, and one from before them ---------------------------------------


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 steps; the warning opens (first 100) at step 150 and closes (last 250) at step 300; the
    error opens (first 150) at step 199 and stays open."""
    path = tmp_path_factory.mktemp("diag") / "diag.h5"
    warn = Finding("plateau", "warning", "", 100, None, {"slope": 0.0}, "loss flat", "raise lr", 150)
    err = collapse(at_step=199, first=150)
    with RunFileWriter(path, flush_seconds=0.0, background=False) as w:
        for ev in synthetic_events(steps=400, batch=100, n_layers=6, name="diag"):
            w.emit(ev)
            if isinstance(ev, StepBatch) and ev.steps[-1] == 199:
                w.emit(warn)
                w.emit(err)
            if isinstance(ev, StepBatch) and ev.steps[-1] == 299:
                w.emit(
                    Finding("plateau", "warning", "", 100, 250, {"slope": 0.0}, "loss flat", "raise lr", 300)
                )
    return path


async def at_cursor(pilot, step: int | None) -> list[str]:
    app = pilot.app
    app.view.cursor = step
    app.redraw()
    await pilot.pause()
    return list(app.screen.query_one(DiagnosisPanel).lines)


async def test_replay_cursor_lists_what_held_there(run_file):
    app = replay_app([open_run(run_file)], cpu_budget=None)
    async with app.run_test(size=NARROW) as pilot:
        assert await until(pilot, lambda: app.history.is_finished and len(app.history.findings) == 2, 10)
        await pilot.press("d")
        await pilot.press("home")
        panel = app.screen.query_one(DiagnosisPanel)
        assert await until(
            pilot, lambda: panel.lines[:1] == ["no findings held at step 0 (2 in the whole run)"]
        )
        assert "at step 0" in str(panel.border_subtitle)
        assert not any("signal_collapse" in t for t in await at_cursor(pilot, 140))  # before first_step
        assert (await at_cursor(pilot, 120))[0].startswith("nothing found yet by step 120; 1 found later")
        lines = await at_cursor(pilot, 220)
        assert lines[0].startswith("✗ error   signal_collapse") and "since 150" in lines[0]
        assert any("plateau" in t and "since 100" in t for t in lines)  # open, as known at 220
        assert not any("plateau" in t for t in await at_cursor(pilot, 320))  # closed at 250, known at 300
        lines = await at_cursor(pilot, None)  # the latest: the whole run's current state
        assert any("plateau" in t and "100–250 closed" in t for t in lines)
        log = app.screen.query_one(EventLog)
        assert any("closed: plateau (held steps 100–250)" in t for t in log.text_lines())


async def test_replay_of_a_file_from_before_findings():
    app = replay_app([open_run(DATA / "run_v2_notables.h5")], cpu_budget=None)
    async with app.run_test(size=TALL) as pilot:
        panel = app.screen.query_one(DiagnosisPanel)
        assert await until(pilot, lambda: bool(panel.lines) and "no findings stored" in panel.lines[0], 10)


def test_follow_delivers_each_stored_finding_once_as_it_is_written(tmp_path):
    """A file another process writes: the opening row arrives while it runs, the closing row later,
    each exactly once (the source reads /findings from where it left off)."""
    path, go = tmp_path / "live.h5", tmp_path / "go"
    proc = spawn_writer(
        tmp_path,
        f"""
        import os
        from tuitrain.events import Finding
        w = RunFileWriter({str(path)!r}, flush_seconds=0.05)
        f = Finding("plateau", "warning", "", 100, None, {{"slope": 0.0}}, "loss flat", "raise lr", 150)
        for i, ev in enumerate(synthetic_events(steps=600, batch=100, name="live")):
            w.emit(ev)
            if i == 2:
                w.emit(f)
                w.flush()
                print("opened", flush=True)
                while not os.path.exists({str(go)!r}):
                    time.sleep(0.05)
            if i == 4:
                w.emit(Finding(f.kind, f.severity, "", 100, 300, f.evidence, f.message, f.suggestion, 400))
        w.close()
    """,
    )
    src, col = None, Collector()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "opened"
        src = FileSource(path, follow=True, poll_seconds=0.05)
        src.start(col)
        end = time.monotonic() + 20
        while not any(isinstance(e, Finding) for e in col.events()) and time.monotonic() < end:
            time.sleep(0.05)
        assert [(f.at_step, f.last_step) for f in col.events() if isinstance(f, Finding)] == [(150, None)]
        go.touch()
        assert col.wait_ended() == "finished"
        assert [(f.at_step, f.last_step) for f in col.events() if isinstance(f, Finding)] == [
            (150, None),
            (400, 300),
        ]
        h = History()
        h.extend(col.events())
        assert [f.last_step for f in h.findings.current] == [300]
    finally:
        go.touch()
        if src is not None:
            src.stop()
        proc.wait(timeout=30)
