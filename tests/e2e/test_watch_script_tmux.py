"""The real `tuitrain watch train.py -- ARGS` inside tmux, with a user's own script (written like PyTorch's
MNIST example, tests/scripts/mnist_like.py): the dashboard shows the script's own layer names, pause
really stops its steps, stop closes its file as stopped, and a run that completes ends with exit 0."""

from __future__ import annotations

import time
from pathlib import Path

import h5py

from tests.conftest import REPO
from tests.e2e.tmux import descendants, needs_tmux, pause_and_resume, quit_and_stop, step_of, watch_in_tmux
from tests.faults.test_exit_codes import ShellPane

pytestmark = needs_tmux

MNIST = REPO / "tests" / "scripts" / "mnist_like.py"


def test_watch_script_shows_its_layers_pauses_and_stops(tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    args = f"{MNIST} --out {out} -- --epochs 100 --sleep 0.05"
    with watch_in_tmux(args) as (t, pane, workers):
        screen = t.wait_for(
            lambda s: "RUNNING" in s and step_of(s) > 0 and "conv1" in s and "fc2" in s,
            60,
            "a running header and the script's own layers (conv1 ... fc2)",
        )
        assert "mnist_like" in screen and "Net" in screen
        workers.extend(descendants(pane))
        paused_at = pause_and_resume(t)
        quit_and_stop(t, pane)
        assert descendants(pane) == []
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        assert paused_at < f["steps/step"].shape[0] < 100 * 4
        names = [n.decode() if isinstance(n, bytes) else n for n in f["layers/name"][:]]
        assert names[0] == "conv1.weight" and names[-1] == "fc2.bias"


def test_watch_script_completes_and_q_exits_0(tmp_path: Path) -> None:
    out, status = tmp_path / "done.h5", tmp_path / "status"
    t = ShellPane(f"{MNIST} --out {out} -- --epochs 2", status)
    try:
        t.wait_for(lambda s: "COMPLETED" in s, 60, "the script's run to complete")
        time.sleep(0.3)
        t.keys("q")
        assert t.exit_status(30) == 0, t.screen()
        text = t.text()
        assert f"run completed after 8 steps; run file {out}" in text, text
        assert f"the script's output: {out.with_suffix('.log')}" in text, text
    finally:
        t.kill()
    assert "steps 8" in out.with_suffix(".log").read_text()  # the script's own print went to its log
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed"


def test_watch_script_that_fails_before_init_tells_the_dashboard(tmp_path: Path) -> None:
    script, status = tmp_path / "broken.py", tmp_path / "status"
    script.write_text('raise ValueError("no data here")\n')
    out = tmp_path / "b.h5"
    t = ShellPane(f"{script} --out {out}", status)
    try:
        # its traceback opens by itself (as a preset's does), over the dashboard that says FAILED
        t.wait_for(  # a long tmp path wraps the File line anywhere: compare without whitespace
            lambda s: 'broken.py",line1,in<module>' in "".join(s.replace("│", "").replace("█", "").split()),
            30,
            "the script's traceback on the dashboard",
        )
        t.keys("q")  # closes the traceback
        screen = t.wait_for(lambda s: "FAILED" in s, 10, "the dashboard to say the script failed")
        # it names the script; a long tmp path wraps or cuts the rest of the line (the text is checked below)
        assert "broken.py" in screen and "failed" in screen, screen
        t.keys("q")
        assert t.exit_status(30) == 1, t.screen()
        text = t.text()
        flat = "".join(text.split())  # a long tmp path may be wrapped anywhere
        assert "ValueError: no data here" in text and f"itsoutputisin{out.with_suffix('.log')}" in flat
    finally:
        t.kill()
    assert 'broken.py", line 1' in out.with_suffix(".log").read_text()  # its traceback, in its log
    assert not out.exists()  # nothing was recorded: no run file


def test_stop_while_the_script_is_still_starting_ends_it_at_once(tmp_path: Path) -> None:
    script, status = tmp_path / "slow.py", tmp_path / "status"
    script.write_text("import time\ntime.sleep(120)  # building its data, before tuitrain.init\n")
    t = ShellPane(f"{script} --out {tmp_path / 'slow.h5'}", status)
    try:
        t.wait_for(lambda s: "STARTING" in s, 30, "the dashboard's starting state")
        time.sleep(1.0)  # the training process is inside the script now
        t0 = time.monotonic()
        t.keys("q")
        t.wait_for(lambda s: "Stop training and quit" in s, 10, "the quit dialog")
        t.keys("s")
        assert t.exit_status(30) == 130, t.screen()
        assert time.monotonic() - t0 < 20  # not the script's 120 s
        assert "slow.py was stopped before it called tuitrain.init()" in t.text()
    finally:
        t.kill()
