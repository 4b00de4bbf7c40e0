"""Shared helpers of the e2e tests: the real `tuitrain watch` in a private tmux server, read through
its screen and driven with keys; the process tree under it; the pause/resume and quit-dialog walks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(
        self, cmd: str, width: int = 120, height: int = 36, extra_env: dict[str, str] | None = None
    ) -> None:
        self.name = f"tt-{uuid.uuid4().hex[:8]}"
        # COLUMNS/LINES from the test runner would override the pane's real size
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env.update(extra_env or {})
        subprocess.run(
            [
                "tmux",
                "-L",
                self.name,
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                str(width),
                "-y",
                str(height),
                "-c",
                str(REPO),
                cmd,
            ],
            check=True,
            env=env,
        )

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "-L", self.name, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        ).stdout

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
        out = subprocess.run(
            ["tmux", "-L", self.name, "list-panes", "-t", self.name, "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
        ).stdout
        return int(out.split()[0])

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True)


def watch_cmd(args: str) -> str:
    """`tuitrain watch ARGS` from this venv, with `exec` so that the pane's process is tuitrain itself
    and the tree under it is ours to check."""
    venv_bin = Path(sys.executable).parent
    return f"exec {venv_bin}/tuitrain watch {args}"


@contextlib.contextmanager
def watch_in_tmux(args: str, width: int = 120, height: int = 36) -> Iterator[tuple[Tmux, int, list[int]]]:
    """`tuitrain watch ARGS` in a fresh tmux server of ``width`` x ``height``. Yields the session, the
    pane's pid (tuitrain itself) and a list for the test to fill with the pids under it; on the way out
    the server and whatever of those pids is left are killed."""
    t = Tmux(watch_cmd(args), width, height)
    workers: list[int] = []
    try:
        yield t, t.pane_pid(), workers
    finally:
        t.kill()
        kill_all(workers)


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
            return int(token.split("/")[0].replace(",", ""))  # "1,024/5,000"
    return -1


def pause_and_resume(t: Tmux) -> int:
    """Press p: the header says PAUSED and the step stays put; p again: it runs on. Returns the step
    it paused at."""
    t.keys("p")
    screen = t.wait_for(lambda s: "PAUSED" in s, 15, "the paused status")
    paused_at = step_of(screen)
    time.sleep(1.5)
    assert step_of(t.screen()) == paused_at, "training kept stepping while paused"
    t.keys("p")
    t.wait_for(lambda s: "RUNNING" in s and step_of(s) > paused_at, 30, "training to resume")
    return paused_at


def quit_and_stop(t: Tmux, pane: int) -> None:
    """Press q, then s in the quit dialog ("Stop training and quit"); the pane's tuitrain must exit."""
    t.keys("q")
    t.wait_for(lambda s: "Stop training and quit" in s, 10, "the quit dialog")
    t.keys("s")
    deadline = time.time() + 60
    while (
        time.time() < deadline
        and subprocess.run(["kill", "-0", str(pane)], capture_output=True).returncode == 0
    ):
        time.sleep(0.25)
    assert subprocess.run(["kill", "-0", str(pane)], capture_output=True).returncode != 0, (
        "tuitrain still running"
    )


def kill_all(pids: list[int]) -> None:
    """SIGKILL whatever of ``pids`` is left: a failed run must not leave a detached trainer behind."""
    for pid in pids:
        subprocess.run(["kill", "-9", str(pid)], capture_output=True)


def running(pid: int) -> bool:
    """Whether ``pid`` still runs: a zombie awaiting its reaper has exited already."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
