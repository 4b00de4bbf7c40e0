"""Live diagnosis (tuitrain.diagnosis.live): findings sent as they open and once more as they close,
never repeated as the data grows or gets thinned, a failing rule skipped without touching the run; and
on a real run, the findings sent live are what ``tuitrain diagnose`` finds in the finished file."""

from __future__ import annotations

import dataclasses
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, cli_env, tuitrain_cmd
from tests.recorder import Recorder
from tuitrain.diagnosis import RULES, current, diagnose, from_runfile
from tuitrain.diagnosis.data import MAX_PROBE_ROWS
from tuitrain.diagnosis.finding import Finding
from tuitrain.diagnosis.live import Diagnosed, Findings, concluded, inner, resumed, wrap
from tuitrain.events import (
    GRAD_PROBE,
    STEP_SCALARS,
    EpochEnd,
    LayerInfo,
    RunFinished,
    RunStarted,
    StepBatch,
)
from tuitrain.runfile import open_run

LAYERS = [LayerInfo(f"l{i}.weight", (4, 4), 16, "weight", f"l{i}", "Linear") for i in range(3)]


class Clock:
    """The Diagnosed's clock, moved by the test: every batch is then a pass (none is cheaper)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def started() -> RunStarted:
    return RunStarted("live", "", "mlp", layers=LAYERS, num_classes=10, probes=[GRAD_PROBE])


def batch(steps: np.ndarray, vanishing: np.ndarray) -> StepBatch:
    """Steps of a healthy-looking run (loss falling, update ratio 1e-3) whose mean |grad| is 1e-12 in
    every layer where ``vanishing`` is true."""
    n, layers = len(steps), len(LAYERS)
    scalars = np.full((n, len(STEP_SCALARS)), np.nan)
    scalars[:, 0] = 2.0 * np.exp(-steps / 800.0) + 0.3  # loss, from near ln(10)
    scalars[:, 2] = 0.1  # lr
    probes = np.ones((n, 4, layers), np.float32)
    probes[:, 1] = np.where(vanishing[:, None], 1e-12, 1e-3)  # grad_mean_abs
    probes[:, 3] = 1e-3  # update_ratio
    return StepBatch.with_grad(steps, np.zeros(n, np.int32), scalars, steps, probes)


def stream(d: Diagnosed, clock: Clock, steps: int, per_batch: int, vanishing) -> None:
    d.emit(started())
    for a in range(0, steps, per_batch):
        s = np.arange(a, min(a + per_batch, steps), dtype=np.int64)
        clock.now += 10.0
        d.emit(batch(s, vanishing(s)))


def findings(rec: Recorder) -> list[Finding]:
    return [e for e in rec.events if isinstance(e, Finding)]


def assert_no_duplicates(sent: list[Finding]) -> None:
    """Each finding sent at most as opened, closed (and reopened); no two findings of one kind and
    layer whose episodes overlap."""
    latest = current(sent)
    for a in latest:
        for b in latest:
            if a is not b and (a.kind, a.layer) == (b.kind, b.layer):
                a_end = math.inf if a.last_step is None else a.last_step
                b_end = math.inf if b.last_step is None else b.last_step
                assert not (a.first_step <= b_end and b.first_step <= a_end), (a, b)


def test_vanishing_opens_once_then_closes_once_over_200_passes() -> None:
    rec, clock = Recorder(), Clock()
    d = Diagnosed([rec], window=50, seconds=1.0, clock=clock)
    stream(d, clock, 2000, 10, lambda s: s < 700)  # vanishing for 700 steps, then it recovers
    d.emit(RunFinished("completed", 2000))
    assert d.passes >= 200
    van = [f for f in findings(rec) if f.kind == "vanishing_gradients"]
    assert [f.is_open for f in van] == [True, False], van
    opened, closed = van
    assert opened.key == closed.key and opened.first_step == 0
    assert 699 <= closed.last_step <= 760 and closed.at_step > closed.last_step
    assert opened.at_step < 100  # found live, within a window or two of steps
    assert_no_duplicates(findings(rec))
    # every event forwarded in order, findings after the batch they were found in, RunFinished last
    assert isinstance(rec.events[0], RunStarted) and isinstance(rec.events[-1], RunFinished)
    assert sum(isinstance(e, StepBatch) for e in rec.events) == 200


def test_the_last_pass_is_what_diagnose_finds_on_the_same_data() -> None:
    rec, clock = Recorder(), Clock()
    d = Diagnosed([rec], window=50, seconds=1.0, clock=clock)
    stream(d, clock, 900, 30, lambda s: (s > 300) & (s < 500))
    d.emit(EpochEnd(0, 900, 0.5, 0.8, 0.6, 0.7, 0.1, 1.0))
    d.emit(RunFinished("completed", 900))
    want = {(f.kind, f.layer, f.last_step is None) for f in diagnose(d.run.data()).findings}
    live = current(findings(rec))
    assert want <= {(f.kind, f.layer, f.is_open) for f in live}
    assert {(f.kind, f.layer) for f in live if f.is_open} == {(k, la) for k, la, o in want if o}
    assert "vanishing_gradients" in {k for k, _, _ in want}


def test_thinning_past_max_probe_rows_keeps_one_finding() -> None:
    """30,000 probed rows: the rows get thinned by 2 past 20,000, the vanishing episode's first row
    (an odd one, step 1001) is dropped and its first step moves; still one finding, never a second."""
    rec, clock = Recorder(), Clock()
    d = Diagnosed([rec], window=50, seconds=1.0, clock=clock)
    stream(d, clock, 30_000, 1000, lambda s: s >= 1001)
    assert d.run is not None and d.run.grad is not None
    rows = d.run.grad
    assert rows.n <= MAX_PROBE_ROWS and rows.stride == 2 and len(rows.steps) <= MAX_PROBE_ROWS + 1000
    assert (np.diff(rows.steps[: rows.n]) == 2).all() and rows.steps[0] == 0  # every other row, as read
    d.emit(RunFinished("completed", 30_000))
    van = [f for f in findings(rec) if f.kind == "vanishing_gradients"]
    assert len(van) == 1 and van[0].is_open and van[0].first_step == 1001, van
    now = [f for f in diagnose(d.run.data()).findings if f.kind == "vanishing_gradients"]
    assert [f.first_step for f in now] == [1002]  # moved: matched by overlap, not by key
    assert_no_duplicates(findings(rec))


def test_a_failing_rule_is_skipped_and_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(data):
        raise ZeroDivisionError("a bug in a rule")

    rec, clock = Recorder(), Clock()
    d = Diagnosed([rec], window=50, seconds=1.0, clock=clock, rules={**RULES, "broken": broken})
    stream(d, clock, 500, 10, lambda s: s >= 0)
    d.emit(RunFinished("completed", 500))
    err = capsys.readouterr().err
    assert err.count("diagnosis rule broken failed (ZeroDivisionError: a bug in a rule)") == 1
    assert "vanishing_gradients" in {f.kind for f in findings(rec)}  # the other rules went on
    assert sum(isinstance(e, StepBatch) for e in rec.events) == 50
    assert isinstance(rec.events[-1], RunFinished)


def test_a_rule_failing_in_one_pass_does_not_close_its_findings() -> None:
    f = Finding("dead_units", "warning", "l1", 10, None, {}, "m", "s")
    known = Findings()
    assert known.diff([f], 20) and not known.diff([], 30, frozen={"dead_units"})
    closed = known.diff([], 40)  # gone, its rule fine: closed at the last step seen
    assert [(g.key, g.last_step, g.at_step) for g in closed] == [(f.key, 40, 40)]


def test_a_closed_finding_that_holds_again_is_reopened_not_repeated() -> None:
    known = Findings()
    a = Finding("saturation", "warning", "l0", 100, None)
    known.diff([a], 150)
    known.diff([Finding("saturation", "warning", "l0", 100, 180)], 200)
    again = known.diff([Finding("saturation", "error", "l0", 104, None)], 250)
    assert [(g.key, g.is_open, g.severity) for g in again] == [(a.key, True, "error")]
    later = known.diff(  # that episode ended; a new one began
        [Finding("saturation", "error", "l0", 104, 300), Finding("saturation", "error", "l0", 600, None)], 650
    )
    assert sorted((g.first_step, g.last_step) for g in later) == [(100, 300), (600, None)]


@pytest.mark.parametrize("start", [0, 320])
def test_loss_at_init_only_when_the_data_starts_at_the_runs_start(start: int) -> None:
    """A resumed run's live diagnosis sees its continuation only: its first loss (0.5, trained) is not
    its loss at init, and says nothing; the same loss at step 0 is far from ln(10)."""
    rec, clock = Recorder(), Clock()
    d = Diagnosed([rec], window=50, seconds=1.0, clock=clock)
    d.emit(started())
    b = batch(np.arange(start, start + 80, dtype=np.int64), np.zeros(80, bool))
    b.scalars[:, 0] = 0.5
    clock.now += 10.0
    d.emit(b)
    d.emit(RunFinished("completed", start + 80))
    assert ("loss_at_init" in {f.kind for f in findings(rec)}) == (start == 0)


def test_wrap_and_the_run_end_see_through_the_wrapper() -> None:
    from tuitrain.config import MonitorConfig

    rec = Recorder()
    assert wrap([rec], MonitorConfig(diagnose_seconds=0)) == [rec]
    assert wrap([], MonitorConfig()) == []
    (d,) = wrap([rec], MonitorConfig(alert_steps=7))
    assert isinstance(d, Diagnosed) and d.window == 7 and d.seconds == 2.0
    assert inner([d]) == [rec]
    d.emit(started())
    d.emit(batch(np.arange(100), np.ones(100, bool)))
    assert not findings(rec)  # the first pass waits diagnose_seconds
    assert concluded([d]) == [rec]  # the last pass ran: its findings went to the sinks
    assert "vanishing_gradients" in {f.kind for f in findings(rec)}


def test_console_prints_a_warning_or_error_finding_once_when_it_opens() -> None:
    import io

    from rich.console import Console

    from tuitrain.train.sinks import ConsoleSink

    out = io.StringIO()
    sink = ConsoleSink(Console(file=out, width=80, color_system=None))
    sink.emit(started())
    van = Finding(
        "vanishing_gradients", "error", "l2.weight", 0, None, {"depth": 3.0}, "vanishing", "add [BN]"
    )
    for f in (
        van,
        Finding("plateau", "info", "", 5, None, {}, "flat", "schedule"),
        Finding("update_ratio", "warning", "l1.weight", 7, 40, {}, "too low", "raise it"),  # opened, closed
        dataclasses.replace(van, last_step=90, at_step=95),  # its closing
    ):
        sink.emit(f)
    sink.emit(RunFinished("completed", 100))
    lines = [x for x in out.getvalue().splitlines() if "since step" in x]
    assert len(lines) == 2, out.getvalue()
    assert lines[0].startswith("error   vanishing_gradients at l2.weight since step 0:")
    assert lines[0].endswith("[depth=3] -> add [BN]")  # markup-like text printed as it is
    assert "until step 40" in lines[1] and "plateau" not in out.getvalue()


# -- real runs ------------------------------------------------------------------------------------

SMALL = ("--data", "synthetic", "--set", "data.image_size=8", "--set", "data.train_size=1000")
SMALL += ("--set", "data.val_size=100", "--set", "data.test_size=100")
RUNS = {
    "vgg38": ("vgg38", *SMALL, "--max-steps", "60", "--set", "monitor.diagnose_seconds=0.2"),
    "toy": ("toy2d_mlp",),  # its defaults: 50 epochs, 800 steps, live diagnosis every 2 s
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Both runs at once (two processes: the machine's two cores), each file with its console output."""
    tmp = tmp_path_factory.mktemp("live")
    procs = {
        k: subprocess.Popen(
            [*tuitrain_cmd(), "run", *args, "--no-ui", "--out", str(tmp / f"{k}.h5")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**cli_env(), "OMP_NUM_THREADS": "1"},
            cwd=REPO,
        )
        for k, args in RUNS.items()
    }
    out = {}
    for k, p in procs.items():
        text, _ = p.communicate(timeout=180)
        assert p.returncode == 0, text
        out[k] = (tmp / f"{k}.h5", text)
    return out


def test_plain_vgg38_findings_live_in_the_file_and_on_the_console(runs) -> None:
    path, console = runs["vgg38"]
    with open_run(path) as rf:
        assert rf.has_findings
        sent, last = rf.findings(), rf.n_steps - 1
        offline = diagnose(from_runfile(rf)).findings
    live = current(sent)
    assert {(f.kind, f.layer) for f in live} == {(f.kind, f.layer) for f in offline}
    assert {f.kind for f in live if f.severity == "error"} >= {"signal_collapse", "vanishing_gradients"}
    collapse = next(f for f in live if f.kind == "signal_collapse")
    assert collapse.layer.startswith("stages.0.") and collapse.at_step < last  # found while it trained
    assert all(0 <= f.at_step <= last for f in sent)
    assert len(sent) == len({(f.key, f.last_step) for f in sent})  # nothing sent twice
    for f in live:  # the console printed each error once, as `tuitrain diagnose` words it
        assert console.count(f"error   {f.kind} at {f.layer} since step {f.first_step}:") == (
            f.severity == "error"
        ), console


def test_toy2d_mlp_at_its_defaults_gets_no_warning_or_error(runs) -> None:
    path, console = runs["toy"]
    with open_run(path) as rf:
        sent = rf.findings()
    assert [f for f in sent if f.severity != "info"] == []
    assert "since step" not in console  # info findings stay off the console


def test_a_user_loop_through_tuitrain_init_is_diagnosed(tmp_path: Path) -> None:
    """The API's Run (and the Lightning callback, which makes one through tuitrain.init) wraps its sinks:
    a loop whose loss turns NaN gets its diverging finding in the file by the end of run.finish()."""
    import tuitrain

    run = tuitrain.init(name="loop", out=tmp_path / "loop.h5", num_classes=10)
    for i in range(80):
        run.log({"loss": 2.3 / (1 + 0.01 * i) if i < 60 else math.nan})
    run.finish()
    with open_run(tmp_path / "loop.h5") as rf:
        sent = rf.findings()
    assert [(f.kind, f.severity, f.first_step, f.is_open) for f in current(sent)] == [
        ("diverging", "error", 60, True)
    ]


def test_a_resumed_run_closes_what_its_file_left_open_when_it_starts_again() -> None:
    rec, clock = Recorder(), Clock()
    d = Diagnosed([rec], window=50, seconds=1.0, clock=clock)
    left = Finding("plateau", "info", "", 309, None, at_step=319)
    done = Finding("overfitting", "info", "", 16, 32, at_step=63)
    resumed([d], [Finding("overfitting", "info", "", 16, None, at_step=47), done, left], 319)
    d.emit(started())
    assert isinstance(rec.events[0], RunStarted)
    assert rec.events[1:] == [dataclasses.replace(left, last_step=319)]  # only the open one, closed
    assert d.closing == []
