"""Bad input never gets a traceback: hostile presets and options, and crafted run files.

Config: the real CLI in a subprocess for every kind of bad preset or option (deep nesting, a FIFO as
preset or ``extends``, ``/dev/zero``, huge integers, seeds out of range, NUL characters): exit 2, one
paragraph naming what is wrong and what is allowed, no traceback, no run file.

Round trip: a multi-line ``description`` through every path that re-reads the resolved config: the run
file's ``config_toml`` (and using it as a preset), the real ``watch`` training process, and
``--nproc-per-node 2`` on CPU.

Run files: copies of one real run file, each with one element changed by h5py (tests/faults/crafted.py
makes several hundred), through ``info``, ``info --json``, ``replay --print`` and what the replay
dashboard reads: either exit 2 naming the element, or the file is read; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import time
from pathlib import Path

import h5py
import pytest
import typer
import typer.main
import typer.testing
from typer.testing import CliRunner

from tests.clirun import assert_clean_error, tt
from tests.conftest import REPO
from tests.faults.crafted import Case, crafted_files
from tuitrain.cli import app
from tuitrain.config import ConfigError, from_toml, load_config, to_toml
from tuitrain.runfile import RunFileError, open_run

TOY = REPO / "presets" / "toy2d_mlp.toml"
MULTILINE = '''extends = "{toy}"
description = """first line
second line with "quotes", a \\\\ backslash and a tab\\t"""
'''


def no_run_file(d: Path) -> None:
    assert not list(d.glob("*.h5")), list(d.iterdir())


# -- config -------------------------------------------------------------------------------------------


def test_nesting_3000_deep_in_a_preset_and_in_set(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text('name = "deep"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    p = tt("run", str(deep), "--no-ui", "--out", str(tmp_path / "r.h5"))
    assert_clean_error(p, "deep.toml", "nested more than 8 levels deep")
    tables = tmp_path / "tables.toml"
    tables.write_text("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n")
    assert_clean_error(tt("run", str(tables), "--no-ui"), "tables.toml", "nested more than")
    p = tt("run", str(TOY), "--no-ui", "--set", "model.hidden=" + "[" * 3000 + "]" * 3000)
    assert_clean_error(p, "--set model.hidden", "nested more than")
    no_run_file(tmp_path)


def test_a_fifo_as_preset_or_extends_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    assert_clean_error(tt("run", str(fifo), "--no-ui", timeout=30), "pipe.toml", "named pipe (FIFO)")
    child = tmp_path / "child.toml"
    child.write_text('extends = "pipe.toml"\n')
    p = tt("run", str(child), "--no-ui", timeout=30)
    assert_clean_error(p, "child.toml", "`extends = 'pipe.toml'`", "named pipe (FIFO)", "regular file")
    assert time.monotonic() - t0 < 25  # refused at once: nobody ever opened the FIFO's write end
    no_run_file(tmp_path)


def test_extends_dev_zero_and_an_oversized_preset(tmp_path: Path) -> None:
    zero = tmp_path / "zero.toml"
    zero.write_text('extends = "/dev/zero"\n')
    p = tt("run", str(zero), "--no-ui", timeout=30)
    assert_clean_error(p, "zero.toml", "/dev/zero", "character device", "regular file")
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 120_000)  # 1.2 MB of valid TOML
    assert_clean_error(tt("run", str(big), "--no-ui"), "big.toml", "at most 1,048,576 bytes")
    no_run_file(tmp_path)


@pytest.mark.parametrize("value", ["1e20", str(2**64), "-5"])
def test_integer_keys_have_an_upper_bound(tmp_path: Path, value: str) -> None:
    out = tmp_path / "r.h5"
    p = tt("run", str(TOY), "--no-ui", "--set", f"train.epochs={value}", "--out", str(out))
    assert_clean_error(p, "`train.epochs`", "out of range", "allowed: [1, 2147483647]")
    assert not out.exists()


@pytest.mark.parametrize("seed", ["-1", str(2**70)])
def test_seeds_outside_the_range_are_refused(tmp_path: Path, seed: str) -> None:
    p = tt("run", str(TOY), "--no-ui", "--seed", seed, "--out", str(tmp_path / "r.h5"))
    assert_clean_error(p, "`train.seed`", seed, "allowed: [0, 2147483647]")
    p = tt("run", str(TOY), "--no-ui", "--set", f"data.seed={seed}", "--out", str(tmp_path / "r.h5"))
    assert_clean_error(p, "`data.seed`", "allowed: [0, 2147483647]")
    no_run_file(tmp_path)


def test_nul_characters_in_name_or_out(tmp_path: Path) -> None:
    # argv cannot carry a NUL (exec refuses it); TOML can, as \u0000, in a preset or in --set.
    preset = tmp_path / "nul.toml"
    preset.write_text(f'extends = "{TOY}"\nname = "a\\u0000b"\n')
    assert_clean_error(tt("run", str(preset), "--no-ui"), "nul.toml", "`name`", "NUL character")
    p = tt("run", str(TOY), "--no-ui", "--set", 'out="x\\u0000.h5"')
    assert_clean_error(p, "--set", "`out`", "NUL character")
    preset.write_text(f'extends = "{TOY}"\nout = "r\\u0000.h5"\n')
    assert_clean_error(tt("run", str(preset), "--no-ui"), "`out`", "NUL character")
    no_run_file(tmp_path)
    assert not list(REPO.glob("runs/a*b-*.h5"))


def test_loader_limits_in_process(tmp_path: Path) -> None:
    """The same limits at the API: each is one ConfigError, never RecursionError or a hang."""
    fifo = tmp_path / "f.toml"
    os.mkfifo(fifo)
    for bad in (fifo, Path("/dev/zero"), Path("/dev/null"), tmp_path):
        with pytest.raises(ConfigError):
            load_config(bad)
    with pytest.raises(ConfigError, match="nested more than"):
        from_toml("x = " + "[" * 5000 + "]" * 5000)
    chain = [tmp_path / f"c{i}.toml" for i in range(40)]
    for i, c in enumerate(chain):
        c.write_text(f'extends = "c{i + 1}.toml"\n' if i + 1 < len(chain) else 'name = "end"\n')
    with pytest.raises(ConfigError, match="longer than 32 files"):
        load_config(chain[0])


# -- round trip ---------------------------------------------------------------------------------------


@pytest.fixture
def multiline(tmp_path: Path) -> Path:
    p = tmp_path / "ml.toml"
    p.write_text(MULTILINE.format(toy=TOY))
    return p


def test_multiline_description_run_file_config_loads_and_runs_as_a_preset(multiline: Path) -> None:
    d = multiline.parent
    p = tt("run", str(multiline), "--no-ui", "--max-steps", "5", "--out", str(d / "a.h5"))
    assert p.returncode == 0, p.stdout + p.stderr
    expected = load_config(multiline, extra={"train.max_steps": 5})
    with open_run(d / "a.h5") as rf:
        stored = rf.config_toml
        assert rf.config == expected
    assert (
        from_toml(stored).description == 'first line\nsecond line with "quotes", a \\ backslash and a tab\t'
    )
    (d / "again.toml").write_text(stored)  # docs/run-file.md: the stored config works as a preset
    p = tt("run", str(d / "again.toml"), "--no-ui", "--max-steps", "3", "--out", str(d / "b.h5"))
    assert p.returncode == 0, p.stdout + p.stderr
    with open_run(d / "b.h5") as rf:
        assert rf.status == "completed" and rf.config.description == expected.description


def test_multiline_description_in_the_real_watch_worker(multiline: Path) -> None:
    """The `watch` training process, started as run_watch starts it: spawned, handed to_toml(cfg),
    which it parses back with from_toml. Before the TOML writer was real it died right there."""
    from tuitrain.train.worker import worker_main

    d = multiline.parent
    cfg = load_config(multiline, extra={"train.max_steps": 5, "train.device": "cpu"})
    out, log = d / "w.h5", d / "w.log"
    ctx = mp.get_context("spawn")
    events, commands = ctx.Queue(maxsize=64), ctx.Queue()
    proc = ctx.Process(
        target=worker_main, args=(to_toml(cfg), str(out), events, commands, str(log), os.getpid())
    )
    proc.start()
    kinds: set[str] = set()
    deadline = time.monotonic() + 120
    while proc.is_alive() and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):  # drain as the dashboard does: the queue never fills
            kinds.update(type(e).__name__ for e in events.get(timeout=0.2).events)
    proc.join(timeout=10)
    with contextlib.suppress(queue.Empty):  # what it sent just before it exited
        while True:
            kinds.update(type(e).__name__ for e in events.get(timeout=1.0).events)
    text = log.read_text()
    assert proc.exitcode == 0 and "error:" not in text and "Traceback" not in text, text
    assert {"RunStarted", "StepBatch", "RunFinished"} <= kinds, kinds
    with open_run(out) as rf:
        assert rf.status == "completed" and rf.config.description == cfg.description


def test_multiline_description_with_nproc_per_node_2_on_cpu(multiline: Path) -> None:
    d = multiline.parent
    args = ("--no-ui", "--device", "cpu", "--nproc-per-node", "2", "--max-steps", "5")
    p = tt("run", str(multiline), *args, "--out", str(d / "dp.h5"), timeout=180)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "config.toml" not in out and "Traceback" not in out, out
    with open_run(d / "dp.h5") as rf:
        assert rf.status == "completed" and rf.config.description.startswith("first line\nsecond")


# -- crafted run files --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "base.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", "--max-steps", "30", "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    return out


@pytest.fixture(scope="session")
def crafted(real_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return crafted_files(real_run, tmp_path_factory.mktemp("crafted"))


COMMANDS = (("info",), ("info", "--json"), ("replay", "--print"))


def check_answer(case: Case, code: int, output: str) -> None:
    if case.refused:
        assert code == 2, (case.label, code, output)
        assert case.element in output and str(case.path) in output, (case.label, output)
        assert output.count("\n") <= 2, (case.label, output)  # one paragraph
    else:
        assert code == 0, (case.label, code, output)


def test_crafted_files_never_traceback(crafted: list[Case], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every crafted file through info, info --json and replay --print, in process: CliRunner calls the
    same Typer app that `python -m tuitrain` runs (main() adds only Ctrl-C), and any exception that
    escapes a command is there as ``result.exception``, which in a subprocess is a traceback."""
    assert len(crafted) >= 62
    assert sum(c.refused for c in crafted) >= 200 and sum(not c.refused for c in crafted) >= 20
    command = typer.main.get_command(app)  # what app() builds; CliRunner would rebuild it per call (17 ms)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)
    runner = CliRunner()
    escaped = []
    for case in crafted:
        for cmd in COMMANDS:
            res = runner.invoke(app, [*cmd, str(case.path)])
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                escaped.append((case.label, cmd, repr(res.exception)))
                continue
            check_answer(case, res.exit_code, res.output)
            if cmd == ("info", "--json") and not case.refused:
                json.loads(res.stdout)
    assert not escaped, escaped


def test_crafted_files_in_real_subprocesses(crafted: list[Case]) -> None:
    """A sample of the same files through the real CLI processes: what CliRunner saw is what users get."""
    wanted = (
        "/steps/loss: an external link",
        "/steps/loss: a group",
        "attr module_summary: invalid JSON",
        "attr started_at = 1e+300",
        "attr writer_pid: wrong type",
        "/probes/grad/grad_norm: wrong dtype",
        "/steps/acc: one row short",
    )
    by_label = {c.label: c for c in crafted}
    for label in wanted:
        case = by_label[label]
        for cmd in (("info",), ("replay", "--print")):
            p = tt(*cmd, str(case.path))
            assert "Traceback" not in p.stdout + p.stderr, (label, p.stderr)
            check_answer(case, p.returncode, p.stdout + p.stderr)


def test_crafted_files_through_what_the_replay_dashboard_reads(crafted: list[Case]) -> None:
    """`replay` without --print: open as the command does, build the sources and app as run_replay does,
    then read everything the file source delivers into the history (what the dashboard then draws)."""
    from tuitrain.ui.replay.launch import replay_app

    readable = []
    for case in crafted:
        try:
            rf = open_run(case.path)
        except RunFileError as e:
            assert case.refused and case.element in str(e), (case.label, str(e))
            continue
        assert not case.refused, case.label
        app_ = replay_app([rf], cpu_budget=None)
        (slot,) = list(app_.runs)
        with slot.source.lock:
            events = slot.source.collect()
            if not slot.source._finished and rf.incomplete:
                events.append(slot.source._incomplete())
        slot.history.extend(events)
        assert slot.history.run is not None and slot.history.steps_done > 0, case.label
        rf.close()
        readable.append(case.path)
    assert len(readable) >= 20


def test_benign_crafted_files_in_the_real_replay_app(crafted: list[Case], real_run: Path) -> None:
    """The real app (headless Pilot) on the untouched file and the crafted files that must stay readable:
    it loads them, reacts to keys and quits without an exception."""
    from tuitrain.ui.replay.launch import replay_app

    picks = [real_run] + [
        c.path
        for c in crafted
        if c.label
        in (
            "/steps/loss: one row short",
            "/probes/grad/grad_norm: one row short",
            "attr ended_at = nan (a run still going)",
        )
    ]
    assert len(picks) == 4

    async def drive(path: Path) -> None:
        app_ = replay_app([open_run(path)], cpu_budget=None)
        async with app_.run_test(size=(100, 30)) as pilot:
            for _ in range(100):
                if app_.history.steps_done:
                    break
                await pilot.pause(0.05)
            assert app_.history.steps_done > 0, path
            await pilot.press("left", "home", "h", "g", "end")
            await pilot.pause(0.1)
            await pilot.press("q")

    for path in picks:
        asyncio.run(drive(path))


def test_external_link_target_is_never_read(real_run: Path, tmp_path: Path) -> None:
    """An external link to a perfectly good file is still refused, naming the element: readers of a run
    file read that file only."""
    run = tmp_path / "run.h5"
    shutil.copyfile(real_run, run)
    other = tmp_path / "other.h5"
    with h5py.File(real_run, "r") as src, h5py.File(other, "w") as dst:
        src.copy("probes", dst)
    with h5py.File(run, "r+") as f:
        del f["probes"]
        f["probes"] = h5py.ExternalLink(str(other), "/probes")
    for cmd in (("info",), ("info", "--json"), ("replay", "--print")):
        assert_clean_error(tt(*cmd, str(run)), "/probes is an external link", "never follows links")
