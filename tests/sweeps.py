"""Test helper: no sweep process outlives its test.

A sweep's runner and children run in sessions of their own (a detached sweep must survive its
terminal), so killing the process a test started, or its tmux session, leaves them training; a test
that fails half-way would then leave long runs eating the cores of every later test. :func:`reap`
kills every process whose command line names the test's sweep folder (the runner's ``--_run-folder``
or ``--out``, each child's ``--out DIR/<name>.h5``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def processes_of(folder: Path) -> list[int]:
    """Pids (not this process) whose command line mentions ``folder``."""
    needle = str(folder)
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and needle in _cmdline(int(entry.name)):
            out.append(int(entry.name))
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def reap(folder: Path, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process of the sweep at ``folder``; returns the pids of tuitrain's own processes
    (runner, children) that were still alive: a test's tmux shell, whose command line names the folder
    too, is killed but not counted."""
    found = processes_of(folder)
    ours = [
        pid for pid in found if _comm(pid) not in ("bash", "sh", "dash", "sleep") and "tmux" not in _comm(pid)
    ]
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + timeout
    while time.monotonic() < end and processes_of(folder):
        time.sleep(0.1)
    return ours
