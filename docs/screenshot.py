"""Regenerate docs/dashboard.svg and docs/heatmap.svg from a real run.

    python docs/screenshot.py            # trains plain VGG38 briefly on synthetic data, then renders
    python docs/screenshot.py RUN.h5     # renders an existing run file

The dashboard is fed the run's events from the file (the same event vocabulary as the live stream)
and rendered headless with Textual's screenshot support at 120x36.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_run(path: Path) -> None:
    from tuitrain.cli import build_config
    from tuitrain.runfile.writer import RunFileWriter
    from tuitrain.train.engine import train

    cfg = build_config(
        "presets/vgg38.toml",
        ["monitor.alert_steps=20", "data.train_size=1000"],
        data="synthetic",
        epochs=3,
        batch_size=50,
    )
    train(cfg, [RunFileWriter(str(path), overwrite=True)], out_path=str(path))  # regenerated each time


async def render(run: Path) -> None:
    from tuitrain.runfile.reader import open_run
    from tuitrain.ui.app import TuitrainApp
    from tuitrain.ui.source import ListSource

    with open_run(run) as rf:
        events = list(rf.to_events())
        t0 = rf.started_at
    finished = events[-1].time if hasattr(events[-1], "time") else t0
    app = TuitrainApp(ListSource(events), clock=lambda: finished)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(1.0)
        app.save_screenshot(str(HERE / "dashboard.svg"))
        await pilot.press("h")
        await pilot.pause(0.5)
        app.save_screenshot(str(HERE / "heatmap.svg"))


if __name__ == "__main__":
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/screenshot-vgg38.h5")
    if len(sys.argv) == 1:
        run.parent.mkdir(parents=True, exist_ok=True)
        make_run(run)
    asyncio.run(render(run))
    print(f"wrote {HERE / 'dashboard.svg'} and {HERE / 'heatmap.svg'} from {run}")
