"""The live sweep dashboard in a real terminal: `tuitrain sweep vgg08 vgg38 vgg38_bn_rc` in tmux shows
the three variants' legend entries and the final table; quitting offers detach / stop all / cancel,
detach leaves the sweep running, `sweep --attach DIR` comes back, and stop ends it (every file)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.e2e.tmux import Tmux, needs_tmux
from tests.sweeps import reap
from tuitrain.runfile import open_run
from tuitrain.sweep.control import SweepControl
from tuitrain.sweep.manifest import load

pytestmark = needs_tmux

NAMES = ("vgg08", "vgg38", "vgg38_bn_rc")


def sweep_cmd(args: str) -> str:
    venv_bin = Path(sys.executable).parent
    return f"OMP_NUM_THREADS=1 {venv_bin}/tuitrain sweep {args}; echo EXIT=$?; sleep 60"


def test_three_presets_live_then_detach_attach_and_stop(tmp_path: Path) -> None:
    d = tmp_path / "sw"
    t = Tmux(
        sweep_cmd(
            f"vgg08 vgg38 vgg38_bn_rc --data synthetic --set data.image_size=8 --set data.train_size=200 "
            f"--epochs 100000 --parallel 3 --out {d}"
        ),
        140,
        40,
    )
    try:
        screen = t.wait_for(
            lambda s: all(f"━━ {n} " in s for n in NAMES) and "Final metrics" in s and "running" in s,
            180,
            "three variants in the legend/table, one running",
        )
        assert "Train Loss" in screen and "Status" in screen
        t.keys("q")
        t.wait_for(lambda s: "Detach" in s and "Stop all" in s, 15, "the sweep's quit dialog")
        t.keys("d")
        t.wait_for(lambda s: "still running: tuitrain sweep --attach" in s and "EXIT=0" in s, 30, "detach")
        assert SweepControl(d).runner_alive()
    except BaseException:
        reap(d)
        raise
    finally:
        t.kill()
    t = Tmux(sweep_cmd(f"--attach {d}"), 140, 40)
    try:
        t.wait_for(lambda s: all(f"━━ {n} " in s for n in NAMES) and "Final metrics" in s, 60, "attached")
        t.keys("q")
        t.wait_for(lambda s: "Stop all" in s, 15, "the quit dialog")
        t.keys("s")
        t.wait_for(lambda s: "EXIT=130" in s, 120, "stopped, exit 130")
        assert SweepControl(d).wait(timeout=30), "the runner outlived the stop"
    finally:
        t.kill()
        left = reap(d)  # a failure above must not leave the detached sweep training
    assert not left, f"sweep processes left running: {left}"
    m = load(d)
    assert not SweepControl(d).runner_alive()
    assert all(v.status == "stopped" for v in m.variants), [(v.name, v.status, v.error) for v in m.variants]
    for v in m.variants:
        if (d / v.file).is_file():
            with open_run(d / v.file) as rf:
                assert rf.status == "stopped"
