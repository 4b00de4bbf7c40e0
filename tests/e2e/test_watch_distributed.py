"""`tuitrain watch --nproc-per-node 2` inside tmux: the dashboard is fed by rank 0 of a torchrun job
through the worker's relay; pause, resume and stop reach both ranks; nothing is left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from tests.e2e.test_watch_tmux import Tmux, descendants, step_of

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_watch_two_ranks_live_pause_and_stop(tmp_path: Path) -> None:
    out = tmp_path / "ddp.h5"
    venv_bin = Path(sys.executable).parent
    t = Tmux(f"exec {venv_bin}/tuitrain watch presets/toy2d_mlp.toml --epochs 400 --device cpu "
             f"--nproc-per-node 2 --out {out}")
    workers: list[int] = []
    try:
        pane = t.pane_pid()
        screen = t.wait_for(lambda s: "RUNNING" in s and step_of(s) > 0 and "head.w" in s, 120,
                            "a running header with steps and gradient bars")
        assert "2 x cpu (gloo)" in screen
        workers.extend(descendants(pane))  # worker, torchrun, 2 ranks (and their helpers)
        assert len(workers) >= 4
        first = step_of(screen)
        t.wait_for(lambda s: step_of(s) > first, 30, "steps to advance")
        t.keys("p")
        screen = t.wait_for(lambda s: "PAUSED" in s, 15, "the paused status")
        paused_at = step_of(screen)
        time.sleep(1.5)
        assert step_of(t.screen()) == paused_at, "training kept stepping while paused"
        t.keys("p")
        t.wait_for(lambda s: "RUNNING" in s and step_of(s) > paused_at, 30, "training to resume")
        t.keys("q")
        t.wait_for(lambda s: "Stop training and quit" in s, 10, "the quit dialog")
        t.keys("s")
        deadline = time.time() + 60
        while time.time() < deadline and subprocess.run(["kill", "-0", str(pane)], capture_output=True).returncode == 0:
            time.sleep(0.25)
        assert subprocess.run(["kill", "-0", str(pane)], capture_output=True).returncode != 0, "tuitrain still running"
        def running(pid: int) -> bool:  # a zombie awaiting its reaper has exited already
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            except (OSError, IndexError):
                return False

        # ranks close the file and exit just after the dashboard: allow them a bounded moment
        deadline = time.time() + 30
        while time.time() < deadline and any(running(pid) for pid in workers):
            time.sleep(0.25)
        alive = [pid for pid in workers if running(pid)]
        assert alive == [], "worker, torchrun or a rank outlived the dashboard"
    finally:
        t.kill()
        for pid in workers:  # a failed run must not leave ranks behind
            subprocess.run(["kill", "-9", str(pid)], capture_output=True)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        assert f.attrs["device"] == "2 x cpu (gloo)"
        n = f["steps/step"].shape[0]
        assert n > paused_at and f["probes/grad_norm"].shape[0] == n
