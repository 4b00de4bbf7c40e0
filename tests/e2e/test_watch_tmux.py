"""The real `tuitrain watch` inside tmux: read the screen, press keys, check the process tree and file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")



class Tmux:
    def __init__(self, cmd: str, width: int = 120, height: int = 36) -> None:
        self.name = f"tt-{uuid.uuid4().hex[:8]}"
        # COLUMNS/LINES from the test runner would override the pane's real size
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        subprocess.run(["tmux", "-L", self.name, "new-session", "-d", "-s", self.name, "-x", str(width),
                        "-y", str(height), "-c", str(REPO), cmd], check=True, env=env)

    def screen(self) -> str:
        return subprocess.run(["tmux", "-L", self.name, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.name, "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "") -> str:
        deadline = time.time() + timeout
        screen = ""
        while time.time() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")

    def pane_pid(self) -> int:
        out = subprocess.run(["tmux", "-L", self.name, "list-panes", "-t", self.name, "-F", "#{pane_pid}"], capture_output=True,
                             text=True).stdout
        return int(out.split()[0])

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True)


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def step_of(screen: str) -> int:
    for line in screen.splitlines():
        if "step " in line:
            token = line.split("step ", 1)[1].split()[0]
            return int(token.split("/")[0])
    return -1


def test_watch_live_pause_and_stop_via_quit_dialog(tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    venv_bin = Path(sys.executable).parent
    # `exec` so that the pane's process is tuitrain itself and the tree under it is ours to check
    t = Tmux(f"exec {venv_bin}/tuitrain watch presets/toy2d_mlp.toml --epochs 400 --out {out}")
    workers: list[int] = []
    try:
        pane = t.pane_pid()
        # panels are paced (the chart may lag the header by up to a second): wait for all of them
        screen = t.wait_for(lambda s: "RUNNING" in s and step_of(s) > 0 and "head.w" in s
                            and ("loss 0." in s or "loss 1." in s), 150,
                            "a running header with steps, a gradient bar for the head and the latest loss")
        assert "toy2d_mlp" in screen and "Loss" in screen and "Gradients" in screen
        workers.extend(descendants(pane))
        first = step_of(screen)
        screen = t.wait_for(lambda s: step_of(s) > first, 30, "steps to advance")
        t.keys("p")
        screen = t.wait_for(lambda s: "PAUSED" in s, 15, "the paused status")
        paused_at = step_of(screen)
        time.sleep(1.5)
        assert step_of(t.screen()) == paused_at, "training kept stepping while paused"
        t.keys("p")
        t.wait_for(lambda s: "RUNNING" in s and step_of(s) > paused_at, 30, "training to resume")
        assert len(descendants(pane)) >= 1  # the training process lives under the UI
        t.keys("q")
        t.wait_for(lambda s: "Stop training and quit" in s, 10, "the quit dialog")
        t.keys("s")
        deadline = time.time() + 60
        while time.time() < deadline and subprocess.run(["kill", "-0", str(pane)], capture_output=True).returncode == 0:
            time.sleep(0.25)
        assert subprocess.run(["kill", "-0", str(pane)], capture_output=True).returncode != 0, "tuitrain still running"
        assert descendants(pane) == []
    finally:
        t.kill()
        for pid in workers:  # a failed run must not leave a detached trainer behind
            subprocess.run(["kill", "-9", str(pid)], capture_output=True)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "stopped"
        n = f["steps/step"].shape[0]
        assert n > paused_at and f["probes/grad_norm"].shape[0] == n
