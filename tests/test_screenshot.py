"""The dashboard's Screenshot command in the real replay app (``App.run_test``) on a real run file: the
``w`` key and the command palette's built-in "Screenshot" entry write an SVG of the dashboard into the
current directory and say where; a directory that cannot take it gives a notification with the reason.

Textual's default delivery writes to ``~/Downloads`` in a driver thread and fails with only "Failed to
save screenshot" where that directory does not exist (a server, a container, this test machine)."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

import pytest

from tests.ui.pilot_helpers import until
from tuitrain.runfile import open_run
from tuitrain.ui.replay.launch import replay_app

RUN = Path(__file__).parent / "data" / "run_v1.h5"


async def _wait(pilot, cond, timeout: float = 10.0) -> bool:
    return await until(pilot, cond, timeout)


def _notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def _svgs(where: Path) -> list[Path]:
    return sorted(where.glob("*.svg"))


def _check_svg(path: Path, app) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<svg"), text[:80]
    assert text.rstrip().endswith("</svg>")
    # the dashboard's own text: Rich writes one <text> per styled run, spaces as &#160;
    shown = html.unescape("".join(re.findall(r">([^<]*)</text>", text))).replace("\xa0", " ")
    for word in ("Events", "COMPLETED", "epoch 4/50", "10 events", app.runs.name(0)):
        assert word in shown, word
    assert app.runs.name(0) in path.name


def _replay(rf):
    return replay_app([rf], cpu_budget=None)


def test_w_key_saves_the_dashboard_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def go() -> None:
        rf = open_run(RUN)
        try:
            app = _replay(rf)
            async with app.run_test(size=(120, 40)) as pilot:
                assert await _wait(pilot, lambda: app.history.is_finished)
                await pilot.press("w")
                assert await _wait(pilot, lambda: bool(_svgs(tmp_path)))
                (svg,) = _svgs(tmp_path)
                _check_svg(svg, app)
                assert any(f"Saved screenshot to {svg.resolve()}" in n for n in _notes(app)), _notes(app)
        finally:
            rf.close()

    asyncio.run(go())


def test_the_palettes_screenshot_command_saves_too(tmp_path, monkeypatch):
    """The built-in palette entry (ctrl+p, "screenshot", Enter), which failed before."""
    monkeypatch.chdir(tmp_path)

    async def go() -> None:
        rf = open_run(RUN)
        try:
            app = _replay(rf)
            async with app.run_test(size=(120, 40)) as pilot:
                assert await _wait(pilot, lambda: app.history.is_finished)
                await pilot.press("ctrl+p")
                await pilot.pause(0.2)
                await pilot.press(*"screenshot")
                await pilot.pause(0.5)
                await pilot.press("enter")
                assert await _wait(pilot, lambda: bool(_svgs(tmp_path)))
                (svg,) = _svgs(tmp_path)
                _check_svg(svg, app)
                assert not any("Failed" in n for n in _notes(app)), _notes(app)
        finally:
            rf.close()

    asyncio.run(go())


def test_a_directory_that_cannot_take_it_says_why(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"

    async def go() -> None:
        rf = open_run(RUN)
        try:
            app = _replay(rf)
            async with app.run_test(size=(120, 40)) as pilot:
                await pilot.pause()
                assert app.deliver_screenshot(path=str(missing)) is None
                await pilot.pause()
                notes = _notes(app)
                assert any("Failed to save screenshot to" in n and str(missing) in n for n in notes), notes
                assert not missing.exists()
        finally:
            rf.close()

    asyncio.run(go())


@pytest.mark.parametrize("title", ["tuitrain-vgg 38/x", "///", ""])
def test_screenshot_names_are_plain(title):
    from tuitrain.ui.screenshot import screenshot_name

    name = screenshot_name(title)
    assert name.endswith(".svg") and "/" not in name and " " not in name
