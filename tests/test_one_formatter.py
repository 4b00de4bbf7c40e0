"""One formatter for the final table: ``tuitrain info``, ``tuitrain replay --print`` and the dashboard's
compare view show the same cells for the same files: every metric's text, the best mark of each column
(bold) and the status of a run that did not complete.

The files are real HDF5 run files: the two committed engine runs in tests/data, a run written by the
real writer that failed with a NaN training loss in its last epoch, and one whose writer was SIGKILLed
(incomplete). Before, ``info`` printed no Status column for a failed or incomplete run, where
``replay --print`` and the compare view did."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import io
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from tests.test_replay import killed_run, synthetic_events
from tuitrain.events import EpochEnd, RunFinished
from tuitrain.runfile import RunFileWriter, open_run
from tuitrain.ui.replay.compare import rows_from_files, unique_names
from tuitrain.view.table import COLUMNS, styled_cells, table_header

DATA = Path(__file__).parent / "data"
N_METRICS = len(COLUMNS)


def failed_run(path: Path) -> Path:
    """A run whose last epoch's training loss is NaN and which finished ``failed`` with an error."""
    events = list(synthetic_events(steps=400, epochs=2, batch=100, name="failed", lr=1e-2, finish=False))
    last = max(i for i, ev in enumerate(events) if isinstance(ev, EpochEnd))
    events[last] = dataclasses.replace(events[last], train_loss=math.nan)
    events.append(RunFinished("failed", 400, error="RuntimeError: boom", time=1_700_000_500.0))
    with RunFileWriter(path, flush_seconds=math.inf, background=False) as w:
        for ev in events:
            w.emit(ev)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("one-formatter")
    return [DATA / "run_v1.h5", DATA / "run_v2_notables.h5", failed_run(tmp / "failed.h5"), killed_run(tmp)]


def expected(paths: list[Path]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """The one implementation's header, cells and bold cells (per row) for ``paths`` together."""
    runs = [open_run(p) for p in paths]
    try:
        names = unique_names([rf.run_name for rf in runs], [str(p) for p in paths])
        rows, keys = rows_from_files(runs, names)
    finally:
        for rf in runs:
            rf.close()
    styled = styled_cells(rows, keys)
    cells = [[c.text for c in row] for row in styled]
    bold = [[c.text for c in row if "bold" in c.style.split()] for row in styled]
    return table_header(rows, keys), cells, bold


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def info_table(path: Path) -> tuple[list[str], list[str]]:
    """(header words, row cells) of ``tuitrain info``'s final table (no cell holds a space here)."""
    out = subprocess.run(
        [sys.executable, "-m", "tuitrain", "info", str(path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Final metrics"))
    header = lines[at + 1].replace("Train Loss", "Train_Loss").replace("Val Loss", "Val_Loss")
    header = header.replace("Train Acc", "Train_Acc").replace("Val Acc", "Val_Acc")
    header = header.replace("Test Loss", "Test_Loss").replace("Test Acc", "Test_Acc")
    return [h.replace("_", " ") for h in header.split()], lines[at + 3].split()


def print_lines(paths: list[Path]) -> list[tuple[str, list[str]]]:
    """``replay --print``'s final-table rows as (plain text, the bold texts in it)."""
    from tuitrain.replay_print import print_report

    console = Console(
        record=True, width=250, force_terminal=True, color_system="truecolor", file=io.StringIO()
    )
    runs = [open_run(p) for p in paths]
    try:
        print_report(runs, "loss", console=console)
    finally:
        for rf in runs:
            rf.close()
    out = []
    for line in console.export_html(inline_styles=True, code_format="{code}").splitlines():
        text = html.unescape(re.sub(r"<[^>]+>", "", line))
        bold = re.findall(r'<span style="[^"]*font-weight: bold[^"]*">([^<]*)</span>', line)
        out.append((text, [html.unescape(b).strip() for b in bold]))
    return out


def test_info_shows_the_same_cells_and_status_as_the_others(files):
    header, cells, _ = expected(files)
    for path, row in zip(files, cells, strict=True):
        got_header, got = info_table(path)
        assert got_header[: 1 + N_METRICS] == header[: 1 + N_METRICS]
        assert got[1 : 1 + N_METRICS] == row[1 : 1 + N_METRICS], path.name  # values, formatted the same
        status = row[-1] if header[-1] == "Status" else "completed"
        if status == "completed":
            assert got_header[-1] != "Status" and len(got) == 1 + N_METRICS
        else:  # the Status column, as replay --print and the compare view show it
            assert got_header[-1] == "Status" and got[-1] == status, (path.name, got)
    statuses = [row[-1] for row in cells]
    assert statuses == ["completed", "completed", "failed", "incomplete"]
    assert "nan" in cells[2][1 : 1 + N_METRICS]  # the failed run's NaN is a value, not missing


def test_replay_print_shows_the_same_cells_and_best_marks(files):
    header, cells, bold = expected(files)
    assert any(bold), "two completed runs: some column has a best"
    lines = print_lines(files)
    for row, marks in zip(cells, bold, strict=True):
        (text, got_bold) = next((t, b) for t, b in lines if t.startswith(f"■ {row[0]} "))
        words = text.split()[1:]
        assert words[: 1 + N_METRICS] == row[: 1 + N_METRICS]
        assert words[-1] == row[-1]  # the status
        assert got_bold == marks, (row[0], got_bold, marks)


def test_the_compare_view_shows_the_same_cells_and_best_marks(files):
    from tuitrain.ui.replay.launch import replay_app
    from tuitrain.ui.widgets.final_table import FinalTable

    header, cells, bold = expected(files)

    async def go() -> None:
        runs = [open_run(p) for p in files]
        try:
            app = replay_app(runs, cpu_budget=None, mode="compare")
            async with app.run_test(size=(250, 50)) as pilot:
                end = time.monotonic() + 15
                while time.monotonic() < end and not all(h.is_finished for h in app.runs.histories):
                    await pilot.pause(0.05)
                app.redraw()
                await pilot.pause()
                ft = app.screen.query_one(FinalTable)
                assert ft.header == header
                assert ft.cells == cells
                for i, marks in enumerate(bold):
                    shown = ft.table.get_row_at(i)
                    got = [t.plain.strip() for t in shown[1:] if "bold" in str(t.style).split()]
                    got += [s.plain.strip() for t in shown[1:] for s in _bold_spans(t)]
                    assert sorted(set(got)) == sorted(marks), (i, got, marks)
        finally:
            for rf in runs:
                rf.close()

    asyncio.run(go())


def _bold_spans(text):
    """The parts of a rich Text styled bold by a span (the widget adds the column gap in front)."""
    return [text[s.start : s.end] for s in text.spans if "bold" in str(s.style).split()]
