"""Control of a running sweep from outside its runner (one machine): pause, resume or stop one variant,
or every one, and stop the whole sweep. What the dashboard's keys use, whether it started the sweep or
attached to it later (``tuitrain sweep --attach DIR``).

How each reaches its variant, by signals to the process ids the runner records in the manifest:

- ``pause`` / ``resume``: SIGUSR1 / SIGUSR2 to the variant's ``tuitrain run --no-ui`` child, whose
  :class:`~tuitrain.commands.training.SignalControl` turns them into the engine's "pause" / "resume"
  (the run file says ``paused``, then ``running``). Only a child whose run file exists is signalled:
  before it, the child may not have installed its handlers yet, and SIGUSR1's default action kills.
- ``stop``: SIGINT to a child whose run file exists (it closes the file as ``stopped``, as Ctrl-C
  does). A queued variant, or a child still starting, is stopped through the runner: a request file
  ``DIR/.requests/<time>-<pid>-<n>.json`` (``{"cmd": "stop", "variants": [...]}``) that the runner
  reads on its next poll; it marks a queued variant ``stopped`` without starting it, and SIGINTs a
  starting child itself (which it then records as ``stopped``, not ``failed``). A request file, not a
  signal to the runner, because a signal cannot say which variants.
- :meth:`SweepControl.stop_all`: SIGINT to the runner, which stops every child and the queue (Ctrl-C
  of a foreground sweep does the same).

Process ids get reused, so a pid is signalled only while ``/proc/<pid>/cmdline`` still mentions
``tuitrain`` and, for a variant, its ``--out`` path (for the runner: ``sweep``). Elsewhere than Linux
(no /proc) nothing is signalled. No torch, no textual here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from tuitrain.sweep.manifest import QUEUED, Manifest, ManifestError, Variant, load, variant_path

COMMANDS = ("pause", "resume", "stop")
SIGNALS = {"pause": signal.SIGUSR1, "resume": signal.SIGUSR2, "stop": signal.SIGINT}
REQUESTS = ".requests"
FINAL = ("completed", "stopped", "failed")
_seq = itertools.count()


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments, or None when there is no such process (or a zombie: empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return args or None


def is_process(pid: int | None, *needles: str) -> bool:
    """Whether ``pid`` is a live process whose command line mentions ``tuitrain`` and every needle (the
    pid-reuse guard: a recorded pid that now belongs to something else is never signalled)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    args = cmdline(pid)
    if args is None:
        return False
    text = " ".join(args)
    return "tuitrain" in text and all(n in args or n in text for n in needles)


def out_arg(variant: Variant) -> str:
    """The ``--out`` path in the variant's command, exactly as the child's command line has it."""
    cmd = variant.command
    if "--out" in cmd and cmd.index("--out") + 1 < len(cmd):
        return cmd[cmd.index("--out") + 1]
    return variant.file


def write_request(folder: Path, cmd: str, names: Sequence[str]) -> Path:
    """A request for the runner (atomically: it never reads half a file)."""
    d = folder / REQUESTS
    d.mkdir(exist_ok=True)
    stem = f"{time.time_ns()}-{os.getpid()}-{next(_seq)}"
    tmp = d / f".{stem}.tmp"
    tmp.write_text(json.dumps({"cmd": cmd, "variants": list(names)}))
    target = d / f"{stem}.json"
    os.replace(tmp, target)
    return target


def read_requests(folder: Path) -> list[tuple[str, list[str]]]:
    """The runner's side: the requests waiting, oldest first, each removed once read."""
    d = folder / REQUESTS
    if not d.is_dir():
        return []
    out: list[tuple[str, list[str]]] = []
    for path in sorted(d.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            cmd, names = data["cmd"], [str(n) for n in data["variants"]]
        except (OSError, ValueError, KeyError, TypeError):
            cmd, names = "", []
        with contextlib.suppress(OSError):
            path.unlink()
        if cmd in COMMANDS:
            out.append((cmd, names))
    return out


class SweepControl:
    """Pause, resume and stop the variants of the sweep in ``folder`` (see the module's docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        load(self.folder)  # a clear ManifestError now for a folder that is not a sweep
        self.stop_sent = False  # stop_all reached the runner: a second SIGINT would interrupt the children

    def manifest(self) -> Manifest:
        return load(self.folder)

    def runner_alive(self) -> bool:
        try:
            m = self.manifest()
        except ManifestError:
            return False
        return is_process(m.runner_pid, "sweep")

    def _child_ready(self, v: Variant) -> bool:
        """The child's run file exists and is this run's (not a file left by an earlier sweep)."""
        path = variant_path(v, self.folder)
        try:
            return path.stat().st_mtime >= (v.started or 0.0) - 1.0
        except OSError:
            return False

    def send(self, cmd: str, variants: Sequence[str] | None = None) -> list[str]:
        """Send ``cmd`` (pause/resume/stop) to the named variants (None: every one); returns the names
        it reached: signalled, or (stop) handed to the runner."""
        if cmd not in COMMANDS:
            raise ValueError(f"{cmd!r}: a sweep control command is one of {', '.join(COMMANDS)}")
        m = self.manifest()
        wanted = None if variants is None else set(variants)
        reached: list[str] = []
        via_runner: list[str] = []
        runner = is_process(m.runner_pid, "sweep")
        for v in m.variants:
            if wanted is not None and v.name not in wanted:
                continue
            if v.pid is not None and v.ended is None and is_process(v.pid, out_arg(v)):
                if self._child_ready(v):
                    with contextlib.suppress(OSError):
                        os.kill(v.pid, SIGNALS[cmd])
                        reached.append(v.name)
                    continue
                if cmd == "stop" and runner:  # still starting: the runner stops it and knows why
                    via_runner.append(v.name)
                continue
            if cmd == "stop" and v.status == QUEUED and runner:
                via_runner.append(v.name)
        if via_runner:
            write_request(self.folder, "stop", via_runner)
            reached += via_runner
        return [v.name for v in m.variants if v.name in reached]

    def stop_all(self) -> None:
        """SIGINT to the runner: it stops every child and the queue. Without a live runner (it died, or
        a scheduler runs the commands), SIGINT to every live child directly. Once only: the runner
        forwards a second SIGINT, which makes the children stop at once instead of closing their files
        as ``stopped`` (the dashboard's "stop all" key, then its quit dialog's "stop", ask twice)."""
        if self.stop_sent:
            return
        m = self.manifest()
        if is_process(m.runner_pid, "sweep"):
            with contextlib.suppress(OSError):
                os.kill(m.runner_pid, signal.SIGINT)  # type: ignore[arg-type]
                self.stop_sent = True
            return
        for v in m.variants:
            if v.pid is not None and is_process(v.pid, out_arg(v)):
                with contextlib.suppress(OSError):
                    os.kill(v.pid, signal.SIGINT)

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> bool:
        """Wait until the runner is gone; False when ``timeout`` passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.runner_alive():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(poll)
        return True
